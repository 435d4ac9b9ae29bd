"""Draw docs/architecture.png from the code: the five layers with their modules, the
imports between layers (counted from the source), and one event's path from the
camera to the prediction.

    .venv/bin/python docs/architecture_diagram.py [--out docs/architecture.png]

The layers and the event's path are read from the tree (``ast`` over every module
of the five packages); the script stops if an import points up a layer, so the
picture cannot show a structure the code does not have.
"""

from __future__ import annotations

import argparse
import ast
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LAYERS = [  # top to bottom, as the import-linter contract in pyproject.toml
    ("stcsnn", "CLI: stcsnn COMMAND"),
    ("streamer", "processes: producer, worker, dashboard, pipeline"),
    ("models", "network, training, step runner"),
    ("replay", "file formats, datasets, file replay"),
    ("core", "ground: numpy only"),
]
# One event from a camera to a prediction on the screen: (module, what happens there),
# numbered in this order, and the calls or messages between them.
EVENT_PATH = [
    ("streamer.sources", "CameraSource reads a batch (dv-processing)"),
    ("streamer.producer", "paces it and publishes a wire.Events"),
    ("streamer.wire", "encode -> ZeroMQ -> decode (typed messages)"),
    ("streamer.worker", "Receiver thread: SUB socket -> bounded queue"),
    ("streamer.classifier", "routes the message to its stream's pipeline"),
    ("streamer.stream_pipeline", "one stream: adapter, compressor, step, EMA"),
    ("core.adapt", "crop / scale to the model's input sensor"),
    ("core.compress", "synaptic current [2, H', W'] per hop"),
    ("models.runner", "runner.step(x, slot) -> logits [C] (handed over, not imported)"),
    ("models.networks", "SCB blocks + MT-LIF neurons, the stream's own state"),
    ("streamer.dashboard_feed", "wire.Prediction -> the dashboard's SUB socket"),
    ("streamer.dashboard_state", "bars, top-1 timeline, latency for the window"),
]
EVENT_EDGES = [
    ("streamer.sources", "streamer.producer"),
    ("streamer.producer", "streamer.wire"),
    ("streamer.wire", "streamer.worker"),
    ("streamer.worker", "streamer.classifier"),
    ("streamer.classifier", "streamer.stream_pipeline"),
    ("streamer.stream_pipeline", "core.adapt"),
    ("streamer.stream_pipeline", "core.compress"),
    ("streamer.stream_pipeline", "models.runner"),
    ("models.runner", "models.networks"),
    ("streamer.stream_pipeline", "streamer.dashboard_feed"),
    ("streamer.dashboard_feed", "streamer.dashboard_state"),
]
COLOURS = {
    "stcsnn": "#e8e0f5",
    "streamer": "#dcebf7",
    "models": "#e2f2df",
    "replay": "#fbeedd",
    "core": "#eeeeee",
}


def modules_of(package: str) -> list[str]:
    """Dotted names of the package's modules (no ``__init__``/``__main__``)."""
    names = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] not in ("__init__", "__main__"):
            names.append(".".join(parts))
    return names


def imports_of(module: str) -> set[str]:
    """Top-level packages of ours that ``module`` imports (anywhere in the file)."""
    path = ROOT / Path(*module.split(".")).with_suffix(".py")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & {name for name, _ in LAYERS}


def layer_imports() -> Counter:
    """(importing layer, imported layer) -> modules with such an import; refuses upward ones."""
    rank = {name: i for i, (name, _) in enumerate(LAYERS)}
    counts: Counter = Counter()
    for package, _ in LAYERS:
        for module in modules_of(package):
            for imported in imports_of(module) - {package}:
                if rank[imported] < rank[package]:
                    raise SystemExit(f"{module} imports {imported}, a layer above it")
                counts[package, imported] += 1
    return counts


def draw(out: Path) -> None:
    figure, axes = plt.subplots(figsize=(17, 13))
    axes.set_xlim(0, 17)
    axes.set_ylim(-2.6, 11)
    axes.axis("off")
    band_height, top, columns, column_width = 1.9, 10.4, 6, 2.15
    centres: dict[str, tuple[float, float]] = {}
    on_path = {module: k for k, (module, _) in enumerate(EVENT_PATH, start=1)}
    for i, (package, title) in enumerate(LAYERS):
        y0 = top - (i + 1) * band_height
        band = FancyBboxPatch(
            (0.2, y0 + 0.05), 13.1, band_height - 0.1, boxstyle="round,pad=0.02",
            facecolor=COLOURS[package], edgecolor="#888888",
        )  # fmt: skip
        axes.add_patch(band)
        axes.text(0.35, y0 + band_height - 0.3, f"{package}/  {title}", fontsize=11, weight="bold")
        for j, module in enumerate(modules_of(package)):
            row, column = divmod(j, columns)
            x = 0.45 + column * column_width
            y = y0 + band_height - 0.72 - row * 0.3
            highlighted = module in on_path
            label = module.split(".", 1)[1]
            axes.text(
                x, y, (f"{on_path[module]}  " if highlighted else "") + label, fontsize=7.5,
                color="#b00000" if highlighted else "#333333",
                weight="bold" if highlighted else "normal",
            )  # fmt: skip
            centres[module] = (x + 0.5, y + 0.06)
    counts = layer_imports()
    for i, (package, _) in enumerate(LAYERS):  # imports into lower layers, at the right
        y = top - (i + 0.5) * band_height
        below = [
            f"{n:3d} -> {imported}/" for (p, imported), n in sorted(counts.items()) if p == package
        ]
        text = "modules that import:\n" + "\n".join(below) if below else "imports nothing of ours"
        axes.text(13.55, y, text, fontsize=8.5, va="center", family="monospace")
    for a, b in EVENT_EDGES:
        arrow = FancyArrowPatch(
            centres[a], centres[b], arrowstyle="-|>", mutation_scale=11,
            color="#b00000", alpha=0.5, connectionstyle="arc3,rad=0.12",
        )  # fmt: skip
        axes.add_patch(arrow)
    half = (len(EVENT_PATH) + 1) // 2
    for part, x in ((EVENT_PATH[:half], 0.3), (EVENT_PATH[half:], 8.3)):
        first = 1 if x < 1 else half + 1
        lines = [f"{k:2d}  {m}: {what}" for k, (m, what) in enumerate(part, start=first)]
        axes.text(x, -0.1, "\n".join(lines), fontsize=8.5, va="top")
    axes.text(0.3, 0.35, "One event's path (red), camera to screen:", fontsize=10, weight="bold")
    axes.set_title(
        "stcsnn: five layers, imports only downwards (counted from the code by "
        "docs/architecture_diagram.py)",
        fontsize=13,
    )
    figure.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "architecture.png")
    args = parser.parse_args()
    known = {n for p, _ in LAYERS for n in modules_of(p)}
    missing = [m for edge in EVENT_EDGES for m in edge if m not in known]
    if missing:
        raise SystemExit(f"the event's path names modules that do not exist: {missing}")
    draw(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
