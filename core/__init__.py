"""The ground layer: the event type, the spatio-temporal compressor, the sensor
adapter, class names, labels and the source protocol. numpy only; imports
nothing else of stcsnn, and everything else may import it (docs/architecture.md)."""
