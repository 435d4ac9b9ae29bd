"""Command-line entry point of stcsnn; the work lives in streamer/, models/ and replay/."""

__version__ = "0.1.0"
