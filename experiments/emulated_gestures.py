"""Issue 17: accuracy of a model trained on emulated recordings of rendered gestures.

    nice -n 10 .venv/bin/python experiments/emulated_gestures.py --epochs 20

Synthetic, end to end through the documented path (docs/your-gestures.md):

1. OpenCV renders phone-like videos (320x240, 30 fps, 1.5 s, MJPG .avi) of four
   "gestures": a bright hand-sized blob moving left-to-right, right-to-left,
   top-to-bottom, or in a circle. Each video's start position, speed, size,
   brightness, background texture and pixel noise come from its own seed;
   the held-out videos use seeds the training videos never use.
2. ``stcsnn convert --labels-from-folders`` turns them into DVS_Sign samples
   (training videos into ``ROOT``, held-out videos into another folder whose
   ``train/`` is then moved to ``ROOT/test/``, as the docs say).
3. ``stcsnn train --dataset dvs_sign --root ROOT`` with the recipe of
   docs/camera.md (small network, ``class_names``, a 1 s window for short
   gestures), CPU, a few epochs.
4. ``stcsnn eval --split test`` (held-out videos) and ``--split train`` (the
   training part of the split) on the last epoch's checkpoint.

What this is not: the shapes are synthetic and the events come from our own
emulator (core/emulator.py), not real hands and not a real DVS; the held-out
videos are new seeds of the same four motions. Everything generated goes to
``runs/emulated_gestures/`` (not committed); the figures go to
``experiments/results/emulated_gestures.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STCSNN = str(Path(sys.executable).parent / "stcsnn")
RESULT = REPO / "experiments" / "results" / "emulated_gestures.json"
WORK = REPO / "runs" / "emulated_gestures"
CLASSES = ("circle", "down", "left", "right")  # the order convert numbers folder names in
SIZE = (320, 240)  # width, height: a phone-like 4:3 frame, centre-cropped to 128x128
FPS = 30
FRAMES = 45  # 1.5 s
HELDOUT_SEED_OFFSET = 1_000_000  # held-out seeds never meet training seeds


def background(rng: np.random.Generator) -> np.ndarray:
    """A static grey texture: blurred noise around a random level."""
    import cv2

    width, height = SIZE
    level = rng.uniform(20, 90)
    noise = rng.normal(0, rng.uniform(5, 25), (height // 8, width // 8))
    texture = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(level + texture, 0, 255).astype(np.float32)


def trajectory(motion: str, rng: np.random.Generator) -> np.ndarray:
    """(FRAMES, 2) blob centres in pixels for one motion, with seeded start and speed."""
    width, height = SIZE
    t = np.arange(FRAMES) / FPS
    # The crop keeps the central height x height square: move inside it.
    left, right = (width - height) / 2 + 20, (width + height) / 2 - 20
    speed = rng.uniform(90, 180)  # pixels per second
    if motion in ("left", "right"):
        y = np.full(FRAMES, rng.uniform(0.3, 0.7) * height) + rng.normal(0, 1.5, FRAMES)
        start = rng.uniform(left, left + 40)
        x = start + speed * t
        x = x if motion == "right" else (left + right) - x
        return np.stack([x, y], axis=1)
    if motion == "down":
        x = np.full(FRAMES, rng.uniform(0.4, 0.6) * width) + rng.normal(0, 1.5, FRAMES)
        y = rng.uniform(20, 60) + speed * t
        return np.stack([x, y], axis=1)
    if motion == "circle":
        radius = rng.uniform(35, 70)
        centre = (width / 2 + rng.uniform(-15, 15), height / 2 + rng.uniform(-15, 15))
        omega = rng.uniform(0.8, 1.3) * 2 * np.pi * rng.choice([-1, 1])
        phase = rng.uniform(0, 2 * np.pi) + omega * t
        return np.stack([centre[0] + radius * np.cos(phase), centre[1] + radius * np.sin(phase)], 1)
    raise ValueError(f"unknown motion {motion!r}")


def render_video(path: Path, motion: str, seed: int) -> None:
    """One MJPG .avi of a bright blob following ``motion``; everything varies with ``seed``."""
    import cv2

    rng = np.random.default_rng(seed)
    base = background(rng)
    centres = trajectory(motion, rng)
    axes = (int(rng.uniform(18, 32)), int(rng.uniform(22, 40)))  # hand-sized ellipse
    brightness = rng.uniform(170, 250)
    noise_sigma = rng.uniform(0.5, 3.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    for x, y in centres:
        frame = base.copy()
        cv2.ellipse(frame, (int(x), int(y)), axes, 0, 0, 360, float(brightness), -1)
        frame += rng.normal(0, noise_sigma, frame.shape).astype(np.float32)
        grey = np.clip(frame, 0, 255).astype(np.uint8)
        writer.write(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    writer.release()


def render_set(folder: Path, per_class: int, seed_offset: int) -> list[Path]:
    """``folder/<class>/v<seed>.avi`` for every class; seeds differ per class and video."""
    paths = []
    for c, motion in enumerate(CLASSES):
        for i in range(per_class):
            seed = seed_offset + 1000 * c + i
            path = folder / motion / f"v{seed}.avi"
            render_video(path, motion, seed)
            paths.append(path)
    return paths


def stcsnn(*args: str) -> str:
    """Run the real CLI, echo its stderr tail on failure, return its stdout."""
    command = [STCSNN, *args]
    print("$ " + " ".join(command), flush=True)
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}")
    return done.stdout


def convert(videos: list[Path], out: Path) -> dict[str, Any]:
    """``stcsnn convert`` into ``out``; the printed class_names setting and event counts."""
    shutil.rmtree(out, ignore_errors=True)
    text = stcsnn("convert", *map(str, videos), "--labels-from-folders", "--out", str(out))
    setting = next(line for line in text.splitlines() if line.startswith("train with:"))
    events = [
        int(line.split(": ")[1].split()[0]) for line in text.splitlines() if " -> class " in line
    ]
    print(text.splitlines()[0], flush=True)
    return {
        "class_names_setting": setting.split("--set ", 1)[1].strip('"'),
        "videos": len(videos),
        "events_per_video_mean": float(np.mean(events)),
        "events_per_video_min": int(min(events)),
        "events_per_video_max": int(max(events)),
    }


def train(root: Path, run: Path, args: argparse.Namespace, class_names: str) -> dict[str, Any]:
    """The docs' recipe, smaller for a 2-core CPU; the summary printed by ``--json``."""
    shutil.rmtree(run, ignore_errors=True)
    text = stcsnn(
        "train", "--dataset", "dvs_sign", "--root", str(root), "--epochs", str(args.epochs),
        "--set", f"channels={args.channels}", "--set", f"hidden={args.hidden}",
        "--set", class_names, "--set", f"window_us={args.window_us}",
        "--set", "stream_window_steps=4", "--set", "stream_ema_tau_us=500000",
        "--val-count", str(args.val_count), "--device", "cpu", "--workers", "0",
        "--threads", str(args.threads), "--seed", "0",
        "--cache-dir", str(WORK / "cache"), "--out", str(run), "--json",
    )  # fmt: skip
    return json.loads(text.strip().splitlines()[-1])


def evaluate(root: Path, checkpoint: Path, split: str) -> dict[str, Any]:
    """``stcsnn eval`` of one split: accuracy, clips, confusion matrix."""
    text = stcsnn(
        "eval", "--dataset", "dvs_sign", "--root", str(root), "--split", split,
        "--checkpoint", str(checkpoint), "--device", "cpu", "--workers", "0",
        "--cache-dir", str(WORK / "cache"), "--out", str(WORK / f"eval-{split}"), "--json",
    )  # fmt: skip
    result = json.loads(text.strip().splitlines()[-1])
    entry = result["by_T"][-1]
    return {
        "accuracy": entry["accuracy"],
        "correct": entry["correct"],
        "samples": entry["samples"],
        "T": entry["T"],
        "confusion": result.get("confusion") or entry.get("confusion"),
    }


def write_report(result: dict[str, Any]) -> None:
    """The JSON results file (the markdown write-up is docs/results_emulated_gestures.md)."""
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {RESULT.relative_to(REPO)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-per-class", type=int, default=40)
    parser.add_argument("--heldout-per-class", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--val-count", type=int, default=20)
    parser.add_argument("--channels", default="[32,64,64,128]")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--window-us", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    walls: dict[str, float] = {}
    shutil.rmtree(WORK / "cache", ignore_errors=True)  # clips of an earlier run's samples

    clock = time.perf_counter()
    train_videos = render_set(WORK / "videos" / "train", args.train_per_class, 0)
    held_videos = render_set(
        WORK / "videos" / "heldout", args.heldout_per_class, HELDOUT_SEED_OFFSET
    )
    walls["render_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    root, held = WORK / "data", WORK / "heldout-converted"
    train_conv = convert(train_videos, root)
    held_conv = convert(held_videos, held)
    shutil.move(str(held / "train"), str(root / "test"))  # docs: held-out clips in ROOT/test/
    walls["convert_s"] = time.perf_counter() - clock
    assert train_conv["class_names_setting"] == held_conv["class_names_setting"]

    clock = time.perf_counter()
    run = WORK / "run"
    summary = train(root, run, args, train_conv["class_names_setting"])
    walls["train_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    checkpoint = run / "last.pt"
    heldout = evaluate(root, checkpoint, "test")
    train_part = evaluate(root, checkpoint, "train")
    walls["eval_s"] = time.perf_counter() - clock
    walls["total_s"] = time.perf_counter() - started

    result = {
        "what": "synthetic OpenCV-rendered blob motions -> stcsnn convert (our emulator) -> "
        "stcsnn train -> stcsnn eval; not real gestures, not a real DVS",
        "command": " ".join(["experiments/emulated_gestures.py", *sys.argv[1:]]),
        "classes": list(CLASSES),
        "chance_accuracy": 1 / len(CLASSES),
        "video": {"size": list(SIZE), "fps": FPS, "frames": FRAMES, "codec": "MJPG"},
        "samples": {
            "train_videos": train_conv["videos"],
            "validation_of_those": args.val_count,
            "heldout_videos": held_conv["videos"],
        },
        "events": {"train": train_conv, "heldout": held_conv},
        "model": {"channels": args.channels, "hidden": args.hidden, "window_us": args.window_us},
        "epochs": args.epochs,
        "checkpoint": "last.pt (last epoch; not chosen by any held-out score)",
        "heldout_accuracy": heldout,
        "train_accuracy": train_part,
        "val_accuracy_last_epoch": summary["last"].get("val_accuracy"),
        "best_val_accuracy": summary["best_val_accuracy"],
        "epoch_time_s": summary["epoch_time_s"],
        "wall_s": walls,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with CI), CPU only",
        "loadavg_at_end": list(os.getloadavg()),
    }
    write_report(result)
    print(
        f"held-out accuracy {heldout['accuracy']:.3f} ({heldout['correct']}/{heldout['samples']}),"
        f" train {train_part['accuracy']:.3f} ({train_part['correct']}/{train_part['samples']}),"
        f" chance {1 / len(CLASSES):.2f}, {args.epochs} epochs, {walls['total_s']:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
