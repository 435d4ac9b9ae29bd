"""`stcsnn demo`: the JSON interface on a real N-MNIST replay, clean shutdown on Ctrl-C
(and when the demo itself is killed), stopping everything when one process fails, and
the summary's accuracy definitions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from core.labels import LabelSegment
from streamer import wire
from streamer.prediction_log import PredictionLog, summarise
from tests.conftest import shared_path
from tests.pipeline_helpers import (
    ROOT,
    descendants,
    nmnist_playlist,
    save_test_checkpoint,
    wait_gone,
)

DEMO = [sys.executable, "-m", "stcsnn", "demo"]


def _demo(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [*DEMO, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def test_demo_replay_json_prints_one_summary_object(tmp_path):
    playlist = nmnist_playlist(tmp_path, digits=range(4), per_digit=2)
    checkpoint = save_test_checkpoint(tmp_path / "model.pt")
    demo = _demo(
        "--replay", str(playlist), "--no-dashboard", "--speed", "max", "--json",
        "--model", str(checkpoint), "--hop-us", "25000",
    )  # fmt: skip
    out, err = demo.communicate(timeout=60)
    assert demo.returncode == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    summary = json.loads(lines[0])
    for key in ("predictions", "hops", "dropped", "latency_ms_p50", "latency_ms_p99"):
        assert key in summary, key
    assert summary["predictions"] == summary["hops"] > 8 * 10  # ~300 ms samples, 25 ms hops
    assert summary["dropped"] == 0 and summary["steps_skipped"] == 0 and summary["lossless"]
    assert summary["segments"] == 8 and summary["segments_without_prediction"] == 0
    assert 0.0 <= summary["streaming_accuracy"] <= 1.0
    assert summary["decision_latency_ms_p50"] is None or summary["decision_latency_ms_p50"] > 0
    assert 0.0 <= summary["hop_accuracy"] <= 1.0
    assert 0 < summary["latency_ms_p50"] <= summary["latency_ms_p99"]
    assert summary["hop_us"] == 25_000 and summary["outcome"] == "done"
    assert "source: replay of" in err


def _wait_for_prediction_line(demo: subprocess.Popen, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = demo.stdout.readline()
        if "top-1" in line:
            return line
        if demo.poll() is not None:
            break
    demo.kill()
    raise AssertionError(f"no prediction line from the demo: {demo.stderr.read()}")


@pytest.fixture
def synthetic_demo(tmp_path):
    checkpoint = save_test_checkpoint(tmp_path / "model.pt")
    demo = _demo(
        "--synthetic", "100k", "--no-dashboard", "--model", str(checkpoint), "--hop-us", "20000"
    )
    yield demo
    if demo.poll() is None:
        demo.kill()
        demo.wait()


def test_ema_tau_us_reaches_the_worker(tmp_path):
    """The default N-MNIST checkpoint's 75 ms readout EMA smooths its answers; with
    ``--ema-tau-us 1`` the smoothed and the raw per-hop answers are the same."""
    from models.default_checkpoints import default_checkpoint

    playlist = nmnist_playlist(tmp_path, digits=range(4), per_digit=2)
    hop_accuracy = {}
    for ema in ([], ["--ema-tau-us", "1"]):
        demo = _demo(
            "--replay", str(playlist), "--no-dashboard", "--speed", "max", "--json",
            "--model", str(default_checkpoint("nmnist")), *ema,
        )  # fmt: skip
        out, err = demo.communicate(timeout=60)
        assert demo.returncode == 0, err
        summary = json.loads(out.strip().splitlines()[-1])
        hop_accuracy[bool(ema)] = (summary["hop_accuracy"], summary["hop_accuracy_unsmoothed"])
    smoothed, raw = hop_accuracy[False]
    assert smoothed != raw
    assert hop_accuracy[True] == (raw, raw)


def test_ctrl_c_stops_every_process_and_prints_the_summary(synthetic_demo):
    demo = synthetic_demo
    _wait_for_prediction_line(demo)
    children = descendants(demo.pid)
    assert len(children) >= 2  # producer and worker
    demo.send_signal(signal.SIGINT)
    out, err = demo.communicate(timeout=30)
    assert demo.returncode == 0, err
    assert "predictions over" in out
    assert wait_gone(children, 5) == set()


def test_a_killed_demo_takes_its_processes_with_it(synthetic_demo):
    demo = synthetic_demo
    _wait_for_prediction_line(demo)
    children = descendants(demo.pid)
    assert len(children) >= 2
    demo.kill()  # SIGKILL: no cleanup code runs in the demo
    demo.wait()
    assert wait_gone(children, 10) == set()


def test_one_failing_process_stops_the_others(tmp_path):
    playlist = nmnist_playlist(tmp_path, digits=[1])
    demo = _demo("--replay", str(playlist), "--json", "--model", str(tmp_path / "missing.pt"))
    pid = demo.pid
    seen: set[int] = set()
    deadline = time.monotonic() + 30
    while demo.poll() is None and time.monotonic() < deadline:
        seen |= descendants(pid)
        time.sleep(0.05)
    out, err = demo.communicate(timeout=30)
    assert demo.returncode == 1
    assert "worker exited with code 1" in err and "missing.pt" in err
    assert json.loads(out)["outcome"] == "failed"
    assert seen and wait_gone(seen, 5) == set()


def test_a_failing_process_says_why_once_and_prints_no_empty_summary(tmp_path):
    playlist = nmnist_playlist(tmp_path, digits=[1])
    garbage = tmp_path / "x.pt"
    garbage.write_text("not a checkpoint\n")
    demo = _demo("--replay", str(playlist), "--no-dashboard", "--model", str(garbage))
    out, err = demo.communicate(timeout=60)
    assert demo.returncode == 1
    assert err.count("not a PyTorch checkpoint") == 1, err
    assert err.rstrip().endswith("stcsnn demo: worker exited with code 1"), err
    assert "predictions over" not in out and "n/a" not in out, out


def test_bad_options_are_refused_before_anything_starts():
    demo = _demo("--speed", "fast")
    out, err = demo.communicate(timeout=30)
    assert demo.returncode == 2 and "speed" in err and not out
    # The producer's options too, in one line (not its usage text, once from it and
    # once again from the demo reporting its failure).
    for option, value in (("--synthetic", "lots"), ("--dv-stream", "nohost")):
        demo = _demo(option, value, "--no-dashboard")
        out, err = demo.communicate(timeout=30)
        assert demo.returncode == 2 and not out
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"stcsnn demo: {option}: "), err
        assert repr(value) in lines[0] and "usage" not in err


# --- the summary, on hand-made messages ---------------------------------------------------


ENVELOPE = {"stream": "s", "session": "w", "seq": 0}


def _prediction(t_end_us: int, top1: int, logits: list[float], **fields) -> wire.Prediction:
    probs = np.full(len(logits), 1.0 / len(logits))
    fields = {"hop_us": 100, **fields}
    return wire.Prediction(
        **ENVELOPE, t_end_us=t_end_us, top1=top1, probs=probs, logits=np.array(logits), **fields
    )


def test_streaming_accuracy_takes_the_last_hop_ending_within_each_segment():
    log = PredictionLog()
    segments = (
        LabelSegment(1, 0, 300),
        LabelSegment(2, 300, 550),
        LabelSegment(3, 550, 560),  # shorter than a hop: no prediction
    )
    log.add(wire.Labels(**ENVELOPE, segments=segments), 0)
    # hops of 100 µs: (t_end, smoothed top-1, raw readout argmax)
    for t_end, top1, raw in [
        (100, 0, 1),
        (200, 1, 1),
        (300, 1, 1),  # the answer for segment 1: right
        (400, 1, 2),
        (500, 1, 2),  # the answer for segment 2: wrong (smoothing lags)
        (600, 2, 2),  # ends after segment 3 and in no segment: not scored per hop
    ]:
        logits = [0.0] * 4
        logits[raw] = 1.0
        prediction = _prediction(
            t_end, top1, logits, sent_ns=1_000_000, closed_by_sent_ns=2_000_000,
            timings_ms={"worker": 0.5},
        )  # fmt: skip
        log.add(prediction, 3_000_000)
    log.add(wire.End(**ENVELOPE), 0)
    accuracy = log.accuracy()
    assert accuracy == {
        "segments": 3,
        "streaming_accuracy": 1 / 3,
        "segments_without_prediction": 1,
        "labelled_hops": 5,
        "hop_accuracy": 2 / 5,
        "hop_accuracy_unsmoothed": 5 / 5,
        # segment 1 is right from the hop ending at 200 µs on; 2 and 3 never settle
        "decision_latency_ms_p50": pytest.approx(0.2),
        "decision_latency_ms_p90": pytest.approx(0.2),
        "undecided_segments": 2,
    }
    summary = summarise(
        log,
        {"streams": {"s": {"steps": 7}}, "dropped_events": 3, "steps_skipped": 1},
        {"dropped_events": 2, "events": 100},
    )
    assert summary["predictions"] == 6 and summary["hops"] == 7
    assert summary["dropped"] == 5 and summary["steps_skipped"] == 1
    assert summary["latency_ms_p50"] == pytest.approx(2.0)
    assert summary["closing_latency_ms_p50"] == pytest.approx(1.0)


def test_an_unlabelled_stream_has_no_streaming_accuracy():
    log = PredictionLog()
    log.add(_prediction(1, 0, [1.0], sent_ns=1), 1)
    assert summarise(log, None, None)["streaming_accuracy"] is None


def test_closing_the_dashboard_ends_the_demo(tmp_path):
    pytest.importorskip("pyqtgraph")
    checkpoint = save_test_checkpoint(tmp_path / "model.pt")
    demo = _demo(
        "--synthetic", "100k", "--model", str(checkpoint), "--hop-us", "20000",
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
    )  # fmt: skip
    try:
        _wait_for_prediction_line(demo)
        children = descendants(demo.pid)
        dashboards = [pid for pid in children if "stcsnn dashboard" in _cmdline(pid)]
        assert len(dashboards) == 1, [_cmdline(pid) for pid in children]
        time.sleep(3)  # let the window come up (a SIGINT during its imports is a traceback)
        os.kill(dashboards[0], signal.SIGINT)  # the dashboard's own clean quit, as a closed window
        out, err = demo.communicate(timeout=30)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, err
    assert "predictions over" in out
    assert wait_gone(children, 5) == set()


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_screenshot_and_exit_after_run_the_whole_pipeline_with_the_dashboard(tmp_path):
    """Issue 6's interface: `demo --replay DIR --screenshot PNG --exit-after S`."""
    pytest.importorskip("pyqtgraph")
    from PySide6.QtGui import QImage

    playlist = nmnist_playlist(tmp_path, digits=range(3), per_digit=1)
    png = tmp_path / "dashboard.png"
    demo = _demo(
        "--replay", str(playlist), "--loop", "--screenshot", str(png), "--exit-after", "6",
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
    )  # fmt: skip
    try:
        out, err = demo.communicate(timeout=90)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, err
    assert "predictions over" in out
    image = QImage(str(png))
    assert image.width() > 400 and image.height() > 300
    # Not blank: the pixels differ (panels, bars, event image).
    pixels = {
        image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)
    }
    assert len(pixels) > 20


# --- the default source -------------------------------------------------------------------


def test_without_data_the_demo_replays_the_embedded_held_out_samples(tmp_path):
    """Issue 14: without the data folder the default demo ran a model on noise."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    demo = _demo(
        "--no-dashboard", "--json", "--speed", "max", env={**os.environ, "STCSNN_DATA": str(empty)}
    )
    out, err = demo.communicate(timeout=120)
    assert demo.returncode == 0, err
    summary = json.loads(out)
    assert "30 real N-MNIST samples embedded" in summary["source"]
    assert summary["segments"] == 30 and summary["streaming_accuracy"] >= 0.8


def test_the_embedded_samples_are_real_and_held_out_from_the_default_checkpoint():
    from models.checkpoint import load_checkpoint
    from models.default_checkpoints import default_checkpoint
    from models.splits import checkpoint_part_files
    from stcsnn.commands.demo import EMBEDDED_NMNIST

    embedded = sorted(EMBEDDED_NMNIST.glob("*/*.bin"))
    assert len(embedded) == 30 and sum(p.stat().st_size for p in embedded) < 1_000_000
    assert (
        (EMBEDDED_NMNIST.parent / "LICENSE.txt")
        .read_text()
        .startswith("Attribution-ShareAlike 4.0 International")
    )
    root = shared_path("nmnist/Train")
    _, _, extra = load_checkpoint(default_checkpoint("nmnist"))
    trained = {p.relative_to(root.resolve()) for p in checkpoint_part_files(extra, "train")}
    held_out = {p.relative_to(root.resolve()) for p in checkpoint_part_files(extra, "val")}
    names = {p.relative_to(EMBEDDED_NMNIST) for p in embedded}
    assert names <= held_out and not names & trained
    for path in embedded:  # unchanged copies of the real recordings
        assert path.read_bytes() == (root / path.relative_to(EMBEDDED_NMNIST)).read_bytes()


def test_a_replay_of_training_samples_is_said_to_be_one():
    from models.default_checkpoints import default_checkpoint
    from stcsnn.commands.demo import trained_on_note

    train = shared_path("nmnist/Train")
    note = trained_on_note(str(default_checkpoint("nmnist")), ["--replay", str(train)])
    assert note is not None and "900 of the 1000 recordings" in note
    assert trained_on_note(str(default_checkpoint("nmnist")), ["--synthetic", "1M"]) is None


def test_a_checkpoint_that_does_not_fit_the_replay_is_refused_unless_allowed(tmp_path):
    """Issue 14: the 15-class 128x128 sign model on N-MNIST gave 0.000 without a word."""
    from models.default_checkpoints import default_checkpoint

    playlist = nmnist_playlist(tmp_path, digits=range(2))
    sign = str(default_checkpoint("dvs_sign"))
    base = ("--replay", str(playlist), "--model", sign, "--no-dashboard", "--json")
    demo = _demo(*base, "--speed", "max")
    out, err = demo.communicate(timeout=60)
    assert demo.returncode == 2 and not out
    assert "expects 128x128 input" in err and "--allow-model-mismatch" in err
    demo = _demo(*base, "--speed", "max", "--allow-model-mismatch")
    out, err = demo.communicate(timeout=120)
    assert demo.returncode == 0, err
    assert "warning:" in err and json.loads(out)["predictions"] > 0


def test_the_model_checks_tell_datasets_apart():
    from models.default_checkpoints import default_checkpoint
    from stcsnn.commands.demo import model_mismatch

    nmnist, sign = str(default_checkpoint("nmnist")), str(default_checkpoint("dvs_sign"))
    digit = next(shared_path("nmnist/Train/3").glob("*.bin"))
    gesture = next(shared_path("dvs_sign/train/3").glob("*.npz"))
    assert model_mismatch(nmnist, ["--replay", str(digit)]) is None
    assert model_mismatch(sign, ["--replay", str(gesture)]) is None
    assert "trained on nmnist" in model_mismatch(nmnist, ["--replay", str(gesture)])
    assert "expects 128x128" in model_mismatch(sign, ["--replay", str(digit)])
