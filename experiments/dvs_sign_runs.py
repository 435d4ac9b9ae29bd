"""DVS_Sign (converted from video, not a real DVS) runs of issue 7: the 128x128 gesture
network shape, full method against the count-frame LIF baseline, on one fixed split.

    .venv/bin/python experiments/dvs_sign_runs.py train    --variant full --steps 4 --epochs 30
    .venv/bin/python experiments/dvs_sign_runs.py evaluate --variant full --steps 4
    .venv/bin/python experiments/dvs_sign_runs.py stream --variant full --steps 4 --gap-us 2000000
    .venv/bin/python experiments/dvs_sign_runs.py report

These runs use one fixed stratified split (150 of the 600 samples held out,
split seed 0, training seed 0): the default checkpoint's training, the
evaluation on windows and the streaming replays. The k-fold cross-validation
over T in {1, 2, 4, 8} (and the ablation) is ``experiments/kfold_grid.py
--dataset dvs_sign``.

Network size: the gesture shape of docs/method.md (SCB 64-128-128-256, hidden 512) has
2.6 M parameters (10.5 MB of float32 weights), over the 5 MB budget for a
committed default checkpoint, and was 3-5x slower per batch here. These runs
use channels 32-64-64-128 and hidden 256 (0.66 M parameters, 2.6 MB); the
checkpoint carries that config, so the worker and ``stcsnn eval`` rebuild it
without flags. results: docs/results_dvs_sign.md.

Selection: ``best.pt`` is the epoch with the best accuracy on the 150 held-out
samples, so its accuracy is optimistic (the held-out samples chose it); the
last epoch's accuracy is the unbiased figure, and both are reported.

Everything a run produces goes to ``runs/dvs_sign/<variant>-T<T>/`` (not
committed); the summaries go to ``experiments/results/dvs_sign/*.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results" / "dvs_sign"
RUNS = REPO / "runs" / "dvs_sign"
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "dvs_sign"
SPLIT_SEED = 0
VALIDATION_COUNT = 150
CROP_US = (500_000, 1_500_000)
GAP_US = 2_000_000  # event time between replayed samples in the "reset" streaming runs
# Smaller than the config's 64-128-128-256 / 512 (module docstring: size and CPU time).
SIZE_CHANGES: dict[str, Any] = {"channels": [32, 64, 64, 128], "hidden": 256}
VARIANTS = {
    "full": {"baseline": False, "label": "full method (STC + SCB + MT-LIF K=4, learnable tau)"},
    "baseline": {"baseline": True, "label": "baseline (count frames + LIF K=1, fixed tau)"},
}


def run_name(variant: str, steps: int, suffix: str = "") -> str:
    return f"{variant}-T{steps}{suffix}"


def train_config(variant: str, steps: int, epochs: int, root: str, seed: int = 0, suffix: str = ""):
    """The ``TrainConfig`` of one run: the fixed split, the 0.5-1.5 s crops."""
    from models.splits import SplitSpec
    from models.train import TrainConfig

    return TrainConfig(
        dataset="dvs_sign",
        root=root,
        baseline=VARIANTS[variant]["baseline"],
        changes={"steps": steps, **SIZE_CHANGES},
        epochs=epochs,
        seed=seed,
        split=SplitSpec(validation_count=VALIDATION_COUNT, seed=SPLIT_SEED),
        crop_us=CROP_US,
        out=str(RUNS / run_name(variant, steps, suffix)),
        resume=True,
        device="cpu",
        workers=0,
    )


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> None:
    """Train (or resume) one run; the summary JSON records epochs and wall times."""
    import torch

    from models.train import train

    torch.set_num_threads(args.threads)
    tc = train_config(args.variant, args.steps, args.epochs, args.root, suffix=args.suffix)
    load_before = os.getloadavg()
    started = time.perf_counter()
    summary = train(tc, log=lambda message: print(message, flush=True))
    run_dir = Path(tc.out)
    out = RESULTS / f"{run_name(args.variant, args.steps, args.suffix)}-train.json"
    write_json(
        out,
        {
            "variant": args.variant,
            "suffix": args.suffix,
            "label": VARIANTS[args.variant]["label"],
            "T": args.steps,
            "epochs": args.epochs,
            "threads": args.threads,
            "train_config": tc.to_dict(),
            "model_config": tc.model_config().to_dict(),
            "best_val_accuracy": summary.get("best_val_accuracy"),
            "best_epoch": summary.get("best_epoch"),
            "metrics": read_metrics(run_dir),
            "wall_s_this_process": time.perf_counter() - started,
            "loadavg_at_start": list(load_before),
            "loadavg_at_end": list(os.getloadavg()),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), CPU only",
        },
    )
    print(f"wrote {out}", flush=True)


# ---------------------------------------------------------------- evaluate


def heldout_files(root: str | os.PathLike, spec=None) -> list[tuple[Path, int]]:
    """``(file, label)`` of the held-out samples of ``spec`` (default: the 150 of the
    fixed split)."""
    from models.splits import SplitSpec, open_part

    spec = spec or SplitSpec(validation_count=VALIDATION_COUNT, seed=SPLIT_SEED)
    samples = open_part("dvs_sign", root, "val", spec)
    return [(Path(s.path), int(y)) for s, y in zip(samples.sources, samples.labels, strict=True)]


def link_folder(files: list[tuple[Path, int]], folder: Path) -> Path:
    """``folder/<label>/<id>.npz`` symlinks to ``files``: a replayable folder in the
    DVS_Sign layout without copying the data."""
    for path, label in files:
        target = folder / str(label) / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.symlink_to(path.resolve())
        except FileExistsError:  # made by an earlier (or a concurrent) call
            if target.resolve() != path.resolve():
                raise
    return folder


def mirrored_folder(files: list[tuple[Path, int]], folder: Path) -> Path:
    """``folder/<label>/<id>.npz``: each of ``files`` mirrored left to right, as a
    left-handed signer would make the sign (derived files under runs/, rewritten
    on every call)."""
    from replay.formats.dvs_sign import read_dvs_sign
    from replay.formats.dvs_sign_writer import write_dvs_sign

    for path, label in files:
        recording = read_dvs_sign(path)
        events = recording.events.copy()
        events["x"] = recording.sensor.width - 1 - events["x"]
        target = folder / str(label) / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        write_dvs_sign(target, events)
    return folder


def clip_predictions(checkpoint: Path, root: str, clip: str) -> dict[str, list[int]]:
    """Per-clip label and prediction of ``checkpoint`` on the held-out part, in
    the split's order (``windows``: several clips per sample, ``sample`` says whose)."""
    from models.checkpoint import load_checkpoint
    from models.clip_cache import cached_clips
    from models.evaluate import predict_clips, split_for_eval
    from models.loaders import clip_loader
    from models.splits import open_part

    model, config, extra = load_checkpoint(checkpoint, map_location="cpu")
    samples = open_part("dvs_sign", root, "val", split_for_eval(extra, "dvs_sign"))
    clips = cached_clips(samples, config.compression, clip, name="dvs_sign-val")
    return predict_clips(model, clip_loader(clips, batch_size=32, train=False, workers=0))


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Whole-sample and window accuracy of a run's best and last checkpoints."""
    import torch

    torch.set_num_threads(args.threads)
    name = run_name(args.variant, args.steps, args.suffix)
    run_dir = RUNS / name
    result: dict[str, Any] = {
        "variant": args.variant,
        "suffix": args.suffix,
        "T": args.steps,
        "checkpoints": {},
    }
    for which in ("best", "last"):
        checkpoint = run_dir / f"{which}.pt"
        from models.checkpoint import load_checkpoint

        _, config, extra = load_checkpoint(checkpoint)
        entry: dict[str, Any] = {"epoch": extra.get("epoch"), "hop_us": config.compression.step_us}
        for clip in ("whole", "windows"):
            started = time.perf_counter()
            pred = clip_predictions(checkpoint, args.root, clip)
            right = [p == y for p, y in zip(pred["predicted"], pred["label"], strict=True)]
            entry[clip] = {
                "accuracy": sum(right) / len(right),
                "clips": len(right),
                "mean_steps": sum(pred["steps"]) / len(right),
                "eval_time_s": time.perf_counter() - started,
                "predictions": pred,
            }
            print(f"{name} {which} (epoch {entry['epoch']}) {clip}: {entry[clip]['accuracy']:.4f}")
        result["checkpoints"][which] = entry
    write_json(RESULTS / f"{name}-eval.json", result)


# ---------------------------------------------------------------- streaming


MOTION_SHARE = 0.1  # a sign's motion "starts" when this share of its events has come


def motion_starts_us(folder: Path, limit: int | None = None, gap_us: int = 0) -> dict[int, int]:
    """Per segment (by its start in stream time), when ``MOTION_SHARE`` of its events
    have arrived: the replay of ``folder`` made in this process exactly as the
    producer plays it (shuffled, seed 0, back to back), so the segments match the
    stream's. Converted video holds few events until the signer moves."""
    import threading

    import numpy as np

    from core.source import Labels
    from replay.player import open_replay

    source = open_replay(folder, shuffle=True, seed=0, limit=limit, gap_us=gap_us)
    segments, times = [], []
    try:
        for item in source.items(threading.Event()):
            if isinstance(item, Labels):
                segments.extend(item.segments)
            elif isinstance(item, np.ndarray) and len(item):
                times.append(item["timestamp"].copy())
    finally:
        source.close()
    t = np.concatenate(times)
    starts = {}
    for segment in segments:
        inside = t[np.searchsorted(t, segment.start_us) : np.searchsorted(t, segment.end_us)]
        if len(inside):
            starts[segment.start_us] = int(np.quantile(inside, MOTION_SHARE))
    return starts


def score_segments(log, max_hops: int, motion_us: dict[int, int] | None = None) -> dict[str, Any]:
    """Per-hop accuracy by hop since onset, decision latency and the "previous
    sample" check, from a ``streamer.prediction_log.PredictionLog`` of one replay.

    Hop ``k`` of a sample is the ``k``-th hop whose last µs lies in it (k = 0
    also holds the end of the previous sample). The decision latency of a
    sample is onset -> end of the first hop from which the smoothed top-1 is
    correct and stays correct to the sample's last hop (none if its last hop
    is wrong): the definitions of experiments/streaming_nmnist.py. With
    ``motion_us`` (``motion_starts_us``) the same decisions are also timed from
    each sign's motion."""
    import numpy as np

    by_hop = [[0, 0, 0] for _ in range(max_hops)]
    latencies_ms: list[float] = []
    from_motion_ms: list[float] = []
    undecided = answered = previous_label = 0
    for stream in log.streams.values():
        order = np.argsort(stream.t_end_us, kind="stable")
        t_end = np.asarray(stream.t_end_us, dtype=np.int64)[order]
        top1 = np.asarray(stream.top1, dtype=np.int64)[order]
        top1_raw = np.asarray(stream.top1_raw, dtype=np.int64)[order]
        before = None
        for label, start, end in sorted(stream.segments, key=lambda s: (s.start_us, s.end_us)):
            first = int(np.searchsorted(t_end, start, side="right"))
            last = int(np.searchsorted(t_end, end, side="right"))
            right = top1[first:last] == label
            for k in range(min(last - first, max_hops)):
                by_hop[k][0] += 1
                by_hop[k][1] += int(right[k])
                by_hop[k][2] += int(top1_raw[first + k] == label)
            if last > first:
                answered += 1
                if before is not None and before != label and top1[last - 1] == before:
                    previous_label += 1
            if not len(right) or not right[-1]:
                undecided += 1
            else:
                wrong = np.flatnonzero(~right)
                settled = int(wrong[-1]) + 1 if len(wrong) else 0
                latencies_ms.append((int(t_end[first + settled]) - start) / 1e3)
                if motion_us and start in motion_us:
                    from_motion_ms.append((int(t_end[first + settled]) - motion_us[start]) / 1e3)
            before = label
    return {
        "hop_accuracy_by_hop_since_onset": [
            {
                "hop": k,
                "hops": n,
                "accuracy": c / n if n else None,
                "accuracy_unsmoothed": r / n if n else None,
            }
            for k, (n, c, r) in enumerate(by_hop)
        ],
        "decision_latency_ms": {
            "median": float(np.median(latencies_ms)) if latencies_ms else None,
            "mean": float(np.mean(latencies_ms)) if latencies_ms else None,
            "p90": float(np.percentile(latencies_ms, 90)) if latencies_ms else None,
            "decided": len(latencies_ms),
            "undecided": undecided,
        },
        "answered_with_previous_samples_label": previous_label,
        "answered_segments": answered,
        **(
            {
                "decision_latency_from_motion_ms": {
                    "motion": f"{MOTION_SHARE:.0%} of the sign's events",
                    "median": float(np.median(from_motion_ms)) if from_motion_ms else None,
                    "p10": float(np.percentile(from_motion_ms, 10)) if from_motion_ms else None,
                    "p90": float(np.percentile(from_motion_ms, 90)) if from_motion_ms else None,
                    "decided": len(from_motion_ms),
                }
            }
            if motion_us is not None
            else {}
        ),
    }


def stream_with_log(
    folder: Path, producer_args: list[str], worker_args: list[str]
) -> tuple[int, dict[str, Any], Any]:
    """The replay of ``folder`` through producer and worker processes, lossless, as
    ``stcsnn demo --no-dashboard`` runs it (streamer.pipeline); returns the exit code
    (0, or 1 if a process failed), the demo's JSON summary and the
    ``PredictionLog`` (every prediction, for the per-hop figures the summary does
    not hold). ``--gap-us`` among ``producer_args`` puts event time between samples;
    above the worker's ``--reset-after-us`` (1 s) it resets the network state at
    every sample."""
    from streamer.pipeline import Pipeline
    from streamer.prediction_log import PredictionLog, summarise
    from streamer.processes import ChildFailed

    log = PredictionLog()
    pipeline = Pipeline(
        ["--replay", str(folder)],
        producer_args=[*producer_args, "--lossless", "--quiet"],
        worker_args=[*worker_args, "--lossless", "--quiet"],
        cwd=REPO,
    )
    started = time.monotonic()
    code, outcome = 0, "done"
    try:
        with pipeline:
            for message, received_ns in pipeline.messages():
                log.add(message, received_ns)
    except ChildFailed as error:
        print(error, file=sys.stderr)
        code, outcome = 1, "failed"
    summary = summarise(
        log,
        pipeline.worker_stats,
        pipeline.producer_stats,
        source=f"replay of {folder}",
        outcome=outcome,
        end_received=outcome == "done",
        lossless=True,
        wall_s=round(time.monotonic() - started, 3),
    )
    return code, summary, log


def cmd_stream(args: argparse.Namespace) -> None:
    """Replay the held-out samples (shuffled, seed 0) back to back through
    ``stcsnn demo`` with a run's checkpoint."""
    from models.checkpoint import load_checkpoint
    from models.splits import SplitSpec

    name = run_name(args.variant, args.steps, args.suffix)
    checkpoint = Path(args.checkpoint) if args.checkpoint else RUNS / name / f"{args.which}.pt"
    # The checkpoint's own held-out samples (a grouped fold's, say), else the fixed split's.
    recorded = load_checkpoint(checkpoint, map_location="cpu")[2].get("split")
    spec = SplitSpec.from_dict(recorded) if isinstance(recorded, dict) else None
    where = "test" if spec is None or spec.folds is None else f"fold{spec.fold}of{spec.folds}"
    where += "-grouped" if spec is not None and spec.grouped else ""
    files = heldout_files(args.root, spec)
    if args.mirror:
        folder = mirrored_folder(files, RUNS / "heldout" / f"{where}-mirrored")
    else:
        folder = link_folder(files, RUNS / "heldout" / where)
    producer = ["--shuffle", "--speed", str(args.speed)]
    producer += ["--limit", str(args.limit)] if args.limit else []
    producer += ["--gap-us", str(args.gap_us)] if args.gap_us else []
    worker = ["--model", str(checkpoint)]
    worker += ["--ema-tau-us", str(args.ema_tau_us)] if args.ema_tau_us else []
    worker += ["--window", str(args.window)] if args.window else []
    started = time.perf_counter()
    code, summary, log = stream_with_log(folder, producer, worker)
    result = {
        "variant": args.variant,
        "suffix": args.suffix,
        "T": args.steps,
        "checkpoint": args.checkpoint or f"{args.which}.pt",
        "producer_args": ["--replay", str(folder), *producer],
        "worker_args": worker,
        "gap_us": args.gap_us,
        "window": args.window,
        "ema_tau_us": args.ema_tau_us,
        "mirrored": args.mirror,
        "exit_code": code,
        "wall_s": time.perf_counter() - started,
        "demo": summary,
        **score_segments(
            log, args.max_hops, motion_starts_us(folder, args.limit, args.gap_us or 0)
        ),
    }
    kind = f"stream-gap{args.gap_us}" if args.gap_us else "stream"
    kind += f"-ema{args.ema_tau_us}" if args.ema_tau_us else ""
    kind += f"-window{args.window}" if args.window else ""
    kind += "-mirrored" if args.mirror else ""
    write_json(RESULTS / f"{name}-{kind}.json", result)
    print(
        f"{name}: streaming accuracy {summary.get('streaming_accuracy')}, hop accuracy "
        f"{summary.get('hop_accuracy')}, latency {result['decision_latency_ms']}"
    )


# ---------------------------------------------------------------- report


def _load(kind: str) -> dict[tuple[str, int], dict]:
    out = {}
    for path in sorted(RESULTS.glob(f"*-{kind}.json")):
        data = json.loads(path.read_text())
        if not data.get("suffix"):  # the main runs; suffixed ones are reported by hand
            out[(data["variant"], int(data["T"]))] = data
    return out


def _pct(value: float | None, se: float | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" ± {se:.3f}" if se is not None else "")


def cmd_report(args: argparse.Namespace) -> None:
    """Markdown tables of docs/results_dvs_sign.md from the result JSONs."""
    import statistics

    from kfold_grid import mcnemar_exact_p, paired_difference_se, standard_error

    trains, evals = _load("train"), _load("eval")
    streams = {(*key, 0): v for key, v in _load("stream").items()}
    streams |= {(*key, GAP_US): v for key, v in _load(f"stream-gap{GAP_US}").items()}
    print(
        "| T | variant | epochs | best epoch: val acc (selected on val) | last epoch: whole"
        " | last epoch: windows | best epoch: windows |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for key in sorted(trains, key=lambda k: (-k[1], k[0])):
        tr, ev = trains[key], evals.get(key, {}).get("checkpoints", {})
        last, best = ev.get("last", {}), ev.get("best", {})
        whole = last.get("whole", {})
        n = whole.get("clips")
        acc = whole.get("accuracy")
        print(
            f"| {key[1]} | {key[0]} | {tr['epochs']} | {tr['best_epoch']}: "
            f"{_pct(tr['best_val_accuracy'])} | "
            f"{_pct(acc, standard_error(acc, n) if acc is not None else None)} | "
            f"{_pct(last.get('windows', {}).get('accuracy'))} | "
            f"{_pct(best.get('windows', {}).get('accuracy'))} |"
        )
    print("\nPaired, last epoch, whole samples (same 150 samples):\n")
    print(
        "| T | full | baseline | only full right | only baseline right"
        " | difference ± SE | exact McNemar p |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for t in sorted({k[1] for k in evals}, reverse=True):
        if ("full", t) not in evals or ("baseline", t) not in evals:
            continue
        a = evals[("full", t)]["checkpoints"]["last"]["whole"]["predictions"]
        b = evals[("baseline", t)]["checkpoints"]["last"]["whole"]["predictions"]
        ra = [p == y for p, y in zip(a["predicted"], a["label"], strict=True)]
        rb = [p == y for p, y in zip(b["predicted"], b["label"], strict=True)]
        if a["label"] != b["label"]:
            raise RuntimeError(f"T={t}: full and baseline were evaluated on other samples")
        only_a = sum(x and not y for x, y in zip(ra, rb, strict=True))
        only_b = sum(y and not x for x, y in zip(ra, rb, strict=True))
        n = len(ra)
        print(
            f"| {t} | {sum(ra) / n:.3f} | {sum(rb) / n:.3f} | {only_a} | {only_b} | "
            f"{(only_a - only_b) / n:+.3f} ± {paired_difference_se(only_a, only_b, n):.3f} | "
            f"{mcnemar_exact_p(only_a, only_b):.3f} |"
        )
    print("\nCost on the shared 2-core CPU (1 torch thread per run, two runs at once):\n")
    print(
        "| T | variant | train part of an epoch, median (min-max) | training samples/s"
        " | validation of 150 whole samples, median | whole run |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for key in sorted(trains, key=lambda k: (-k[1], k[0])):
        m = trains[key]["metrics"]
        train_s = [x["train_time_s"] for x in m]
        val_s = [x["epoch_time_s"] - x["train_time_s"] for x in m]
        rate = [x["train_samples_per_s"] for x in m]
        print(
            f"| {key[1]} | {key[0]} | {statistics.median(train_s):.1f} s "
            f"({min(train_s):.1f}-{max(train_s):.1f}) | {statistics.median(rate):.0f} | "
            f"{statistics.median(val_s):.1f} s | "
            f"{sum(x['epoch_time_s'] for x in m) / 60:.1f} min |"
        )
    print("\nStreaming (held-out samples back to back, shuffled, stcsnn demo --speed max):\n")
    print(
        "| T | variant | between samples | hop | offline whole-sample acc (same ckpt) |"
        " streaming accuracy | hop accuracy (unsmoothed) | wrong answers = previous"
        " sample's label | decision latency median (p90), decided | end received |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    order = sorted(streams, key=lambda k: (-k[1], k[0], k[2]))
    for key in order:
        st = streams[key]
        d = st["demo"]
        between = f"{key[2] / 1e6:g} s gap (state reset)" if key[2] else "none (state carried)"
        offline = evals.get(key[:2], {}).get("checkpoints", {}).get(st["checkpoint"][:-3], {})
        lat = st["decision_latency_ms"]
        wrong = round((1 - d["streaming_accuracy"]) * d["segments"]) if d.get("segments") else 0
        print(
            f"| {key[1]} | {key[0]} | {between} | {d['hop_us'] / 1e6:g} s | "
            f"{_pct(offline.get('whole', {}).get('accuracy'))} | "
            f"{_pct(d['streaming_accuracy'])} ({d['segments']} samples) | "
            f"{_pct(d['hop_accuracy'])} ({_pct(d['hop_accuracy_unsmoothed'])}) | "
            f"{st['answered_with_previous_samples_label']} of {wrong} | "
            f"{_pct(lat['median'] and lat['median'] / 1e3)} s "
            f"({_pct(lat['p90'] and lat['p90'] / 1e3)} s), {lat['decided']} of "
            f"{lat['decided'] + lat['undecided']} | {d.get('end_received')} |"
        )
    print("\nSmoothed top-1 accuracy by hop since the sample's onset:\n")
    hops = max((len(s["hop_accuracy_by_hop_since_onset"]) for s in streams.values()), default=0)
    print("| T | variant | between samples | " + " | ".join(f"hop {k}" for k in range(hops)) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in range(hops)) + " |")
    for key in order:
        cells = [_pct(h["accuracy"]) for h in streams[key]["hop_accuracy_by_hop_since_onset"]]
        between = f"{key[2] / 1e6:g} s gap" if key[2] else "none"
        print(f"| {key[1]} | {key[0]} | {between} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def run_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--variant", choices=sorted(VARIANTS), required=True)
        p.add_argument("--steps", type=int, default=4)
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--root", default=str(DEFAULT_ROOT))
        p.add_argument("--suffix", default="", help="run name suffix (a second run of a setup)")

    p = sub.add_parser("train", help="train or resume one run")
    run_args(p)
    p.add_argument("--epochs", type=int, default=30)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("evaluate", help="whole and window accuracy of best.pt and last.pt")
    run_args(p)
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("stream", help="the held-out samples through stcsnn demo")
    run_args(p)
    p.add_argument("--which", choices=("best", "last"), default="best")
    p.add_argument("--speed", default="max")
    p.add_argument("--limit", type=int)
    p.add_argument("--max-hops", type=int, default=8)
    p.add_argument("--ema-tau-us", type=int, help="the worker's readout EMA (default: ckpt's)")
    p.add_argument("--window", type=int, help="the worker's windowed inference over N steps")
    p.add_argument(
        "--checkpoint", help="this checkpoint instead of the run's (name it by --suffix)"
    )
    p.add_argument(
        "--gap-us", type=int, default=0, help=f"event time between samples (e.g. {GAP_US}: resets)"
    )
    p.add_argument(
        "--mirror", action="store_true", help="replay the samples mirrored (left-handed signers)"
    )
    p.set_defaults(func=cmd_stream)
    p = sub.add_parser("report", help="markdown tables from the result JSONs")
    p.set_defaults(func=cmd_report)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
