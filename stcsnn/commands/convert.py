"""`stcsnn convert`: videos -> emulated DVS recordings, laid out for `stcsnn train`.

    stcsnn convert wave1.mp4 wave2.mp4 --label 0 --out mygestures
    stcsnn convert videos/*/*.mp4 --labels-from-folders --out mygestures

Each video goes through the emulated DVS (``streamer/video.py``, sensor ``--sensor``,
default 128x128) once, and is written twice:

* ``OUT/aedat4/<class>/<name>.aedat4``: the recording at the chosen sensor, through
  dv-processing (``replay/formats/aedat4_writer.py``), for ``stcsnn inspect``,
  ``stcsnn demo --replay`` and the DV software;
* ``OUT/train/<class>/<name>.npz``: the same events fitted to 128x128 by the worker's
  own ``SensorAdapter``, as a DVS_Sign sample, because no training loader reads
  AEDAT4 files in class folders and the DVS_Sign loader (15 classes, 128x128) reads
  this layout: ``stcsnn train --dataset dvs_sign --root OUT``.

Classes are 0-14 (the DVS_Sign loader's). ``--labels-from-folders`` takes each video's
folder name: folders named 0-14 keep their number, other names are numbered in sorted
order and the mapping is printed, with the ``class_names`` setting to train with.
See docs/your-gestures.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stcsnn.commands.produce import parse_sensor

NUM_CLASSES = 15  # the DVS_Sign loader's (replay/datasets/dvs_sign.py)
TRAIN_SENSOR = (128, 128)  # the DVS_Sign loader's


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (OpenCV reads)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    labels = parser.add_mutually_exclusive_group(required=True)
    labels.add_argument("--label", type=int, metavar="L", help="the class (0-14) of every video")
    labels.add_argument(
        "--labels-from-folders",
        action="store_true",
        help="each video's class is its folder's name (0-14, or names numbered in order)",
    )
    parser.add_argument(
        "--sensor",
        type=parse_sensor,
        default=TRAIN_SENSOR,
        help="the emulated sensor WIDTHxHEIGHT of the AEDAT4 recordings (default 128x128)",
    )
    parser.add_argument("--seed", type=int, default=0, help="emulator seed (pixel mismatch)")


def class_labels(args: argparse.Namespace, videos: list[Path]) -> dict[Path, int]:
    """Each video's class; raises ValueError on a class out of 0-14."""
    if args.label is not None:
        if not 0 <= args.label < NUM_CLASSES:
            raise ValueError(f"--label must be 0-{NUM_CLASSES - 1}, got {args.label}")
        return {video: args.label for video in videos}
    names = sorted({video.resolve().parent.name for video in videos})
    numbered = all(name in {str(c) for c in range(NUM_CLASSES)} for name in names)
    if not numbered and len(names) > NUM_CLASSES:
        raise ValueError(f"{len(names)} class folders; the training loader takes at most 15")
    index = {name: int(name) if numbered else i for i, name in enumerate(names)}
    if not numbered:
        mapping = ", ".join(f"{name} -> {index[name]}" for name in names)
        print(f"classes by folder name: {mapping}")
        class_names = names + [str(c) for c in range(len(names), NUM_CLASSES)]
        print(f'train with: --set "class_names={class_names}"')
    return {video: index[video.resolve().parent.name] for video in videos}


def unique_name(folder: Path, stem: str, taken: set[Path]) -> Path:
    """``folder/stem``, or ``folder/stem-2``... when another video of this run has it."""
    candidate, n = folder / stem, 1
    while candidate in taken:
        n += 1
        candidate = folder / f"{stem}-{n}"
    taken.add(candidate)
    return candidate


def write_sample(events, sensor, label: int, name: str, out: Path, taken: set[Path]) -> tuple:
    """The AEDAT4 recording and the DVS_Sign sample of one video: (aedat4, npz) paths."""
    from core.adapt import SensorAdapter
    from core.events import SensorSize
    from replay.formats.aedat4_writer import write_aedat4
    from replay.formats.dvs_sign_writer import write_dvs_sign

    aedat4_dir, train_dir = out / "aedat4" / str(label), out / "train" / str(label)
    aedat4_dir.mkdir(parents=True, exist_ok=True)
    train_dir.mkdir(parents=True, exist_ok=True)
    base = unique_name(train_dir, name, taken).name
    aedat4 = aedat4_dir / f"{base}.aedat4"
    write_aedat4(aedat4, events, sensor)
    adapted = SensorAdapter(sensor, SensorSize(*TRAIN_SENSOR)).adapt(events)
    npz = train_dir / f"{base}.npz"
    write_dvs_sign(npz, adapted)
    return aedat4, npz, len(adapted)


def run(args: argparse.Namespace) -> int:
    from core.events import EventError, SensorSize
    from core.source import SourceError
    from streamer.video import emulate_video

    videos = [Path(video) for video in args.videos]
    out = Path(args.out)
    sensor = SensorSize(*args.sensor)
    try:
        labels = class_labels(args, videos)
    except ValueError as error:
        print(f"stcsnn convert: {error}", file=sys.stderr)
        return 2
    taken: set[Path] = set()
    for video in videos:
        try:
            events = emulate_video(video, sensor=sensor, seed=args.seed)
            aedat4, npz, kept = write_sample(events, sensor, labels[video], video.stem, out, taken)
        except (SourceError, EventError) as error:  # a video too long for DVS_Sign's uint32 µs
            print(f"stcsnn convert: {error}", file=sys.stderr)
            return 1
        duration_s = float(events["timestamp"][-1]) / 1e6 if len(events) else 0.0
        print(
            f"{video} -> class {labels[video]}: {len(events)} events over {duration_s:.2f} s "
            f"in {aedat4} ({sensor}), {kept} in {npz} (128x128)"
        )
    print(f"{len(videos)} video(s) converted; train: stcsnn train --dataset dvs_sign --root {out}")
    return 0
