"""The worker's processing side without ZeroMQ: real N-MNIST events through the
``Classifier`` and its per-stream ``StreamPipeline`` into a list, compared with the
network's forward over the same clip; the overload policy; dropped sends."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from core.compress import compress_clip
from core.events import SensorSize, make_events
from core.labels import LabelSegment
from core.source import TimeChunker
from models.checkpoint import load_checkpoint
from models.default_checkpoints import default_checkpoint
from models.runner import choose_device, make_runner
from replay.formats.nmnist import read_nmnist
from streamer import wire
from streamer.classifier import Classifier, ClassifierOptions
from streamer.preview import PREVIEW_EVENTS_PER_IMAGE, PreviewImage
from streamer.stream_pipeline import MERGE_UP_TO_EVENTS, Outbox, StreamModel, stream_compression
from streamer.worker_queue import Pending
from tests.conftest import shared_path

HOP_US = 10_000
SENSOR = SensorSize(34, 34)


def nmnist_model(hop_us: int = HOP_US):
    model, config, _ = load_checkpoint(default_checkpoint("nmnist"))
    runner = make_runner(model, choose_device("cpu"))
    stream_model = StreamModel(
        name=config.name,
        class_names=tuple(config.class_names),
        compression=stream_compression(config.compression, hop_us),
        ema_tau_us=config.stream_ema_tau_us,
        runner=runner,
    )
    return model, config, stream_model


def messages_of(events: np.ndarray, session: str = "p1") -> list[Pending]:
    """1 ms chunks as a producer sends them, each with a send and receive time."""
    chunker = TimeChunker(1000)
    chunks = chunker.push(events) + chunker.flush()
    pending = []
    for seq, chunk in enumerate(chunks):
        message = wire.Events(
            stream="cam", session=session, seq=seq, sent_ns=1000 + seq, events=chunk, sensor=SENSOR
        )
        pending.append(Pending(message, time.time_ns()))
    return pending


def test_real_events_through_the_classifier_equal_the_networks_clip_forward():
    events = read_nmnist(shared_path("recordings/nmnist_single.bin")).events
    model, config, stream_model = nmnist_model()
    sent: list[wire.Message] = []
    lossless = ClassifierOptions(max_steps_per_push=None, preview_hz=1000)
    classifier = Classifier(stream_model, lossless, Outbox(sent.append, "w"))
    labels = wire.Labels(stream="cam", session="p1", seq=0, segments=(LabelSegment(7, 0, 10),))
    items = messages_of(events)
    end = wire.End(stream="cam", session="p1", seq=len(items) + 1)
    # Three cycles, as the worker would take them from its queue.
    classifier.process([Pending(labels, 0), *items[:100]])
    classifier.process(items[100:])
    classifier.process([Pending(end, 0)])
    predictions = [m for m in sent if isinstance(m, wire.Prediction)]
    t0 = int(events["timestamp"][0]) - int(events["timestamp"][0]) % HOP_US
    steps = (int(events["timestamp"][-1]) - t0) // HOP_US + 1  # the last one flushed at end
    compression = dataclasses.replace(config.compression, steps=steps, window_us=steps * HOP_US)
    clip = torch.from_numpy(compress_clip(events, compression, t0_us=t0))
    with torch.no_grad():
        expected = model(clip[:, None])[:, 0].numpy()
    assert expected.std(axis=0).max() > 0.1  # a readout that moves: a real comparison
    assert [p.step for p in predictions] == list(range(steps))
    assert [p.t_end_us for p in predictions] == [t0 + HOP_US * (k + 1) for k in range(steps)]
    np.testing.assert_allclose([p.logits for p in predictions], expected, rtol=1e-4, atol=1e-4)
    assert all(p.top1_name == config.class_names[p.top1] for p in predictions)
    # Each prediction names the newest events message that went into it.
    first_us = np.array([int(i.message.events["timestamp"][0]) for i in items])
    for p in predictions[:-1]:
        newest = int(np.searchsorted(first_us, p.t_end_us)) - 1
        assert p.sent_ns == items[newest].message.sent_ns
    # Everything went out under the worker's session, seq +1 per message, in order.
    assert [m.seq for m in sent] == list(range(1, len(sent) + 1))
    assert sent[0].segments == labels.segments and sent[0].source_session == "p1"
    assert isinstance(sent[-1], wire.End) and sent[-1].source_session == "p1"
    previews = [m for m in sent if isinstance(m, wire.Preview)]
    assert sum(p.events for p in previews) == len(events)
    counters = classifier.counters["cam"]
    assert counters.events == len(events) and counters.predictions == steps
    assert classifier.all_ended() and not classifier.streams


def test_overload_runs_only_the_newest_steps_of_a_push():
    events = read_nmnist(shared_path("recordings/nmnist_single.bin")).events
    _, _, stream_model = nmnist_model()
    sent: list[wire.Message] = []
    options = ClassifierOptions(max_steps_per_push=2, preview_hz=0)
    classifier = Classifier(stream_model, options, Outbox(sent.append, "w"))
    classifier.process(messages_of(events))  # one push over ~30 hops
    predictions = [m for m in sent if isinstance(m, wire.Prediction)]
    counters = classifier.counters["cam"]
    assert len(predictions) == 2 and counters.steps_skipped == counters.steps - 2 > 20
    assert predictions[0].skipped == counters.steps_skipped and predictions[1].skipped == 0
    assert predictions[1].step == counters.steps - 1  # the newest


def test_a_dropped_send_is_counted_and_still_uses_its_seq():
    events = read_nmnist(shared_path("recordings/nmnist_single.bin")).events
    _, _, stream_model = nmnist_model()
    kept: list[wire.Message] = []

    def every_other(message: wire.Message) -> bool:
        if message.seq % 2:
            return False  # a full queue
        kept.append(message)
        return True

    outbox = Outbox(every_other, "w")
    lossless = ClassifierOptions(max_steps_per_push=None, preview_hz=0)
    classifier = Classifier(stream_model, lossless, outbox)
    classifier.process(messages_of(events))
    assert outbox.dropped > 10 and all(m.seq % 2 == 0 for m in kept)
    assert outbox.dropped + len(kept) == classifier.counters["cam"].predictions


def test_a_watermark_closes_the_hop_without_waiting_for_the_next_message():
    _, _, stream_model = nmnist_model()
    rng = np.random.default_rng(0)
    count = 500
    events = make_events(
        np.sort(rng.integers(0, HOP_US, count)),  # all inside the first hop
        rng.integers(0, 34, count),
        rng.integers(0, 34, count),
        rng.integers(0, 2, count),
    )
    answers = {}
    for until_us in (None, HOP_US):
        sent: list[wire.Message] = []
        lossless = ClassifierOptions(max_steps_per_push=None, preview_hz=0)
        classifier = Classifier(stream_model, lossless, Outbox(sent.append, "w"))
        message = wire.Events(
            stream="cam", session="p", seq=0, events=events, sensor=SENSOR, until_us=until_us
        )
        classifier.process([Pending(message, time.time_ns())])
        answers[until_us] = [m.t_end_us for m in sent if isinstance(m, wire.Prediction)]
    assert answers == {None: [], HOP_US: [HOP_US]}


def test_streams_are_bounded_refused_beyond_and_evicted_when_idle():
    """Issue 13: 2,000 one-message streams took a worker from 241 MB to 1.5 GB."""
    _, _, stream_model = nmnist_model()
    events = read_nmnist(shared_path("recordings/nmnist_single.bin")).events[:200]
    sent: list[wire.Message] = []
    options = ClassifierOptions(preview_hz=0, max_streams=8, idle_evict_s=0.2)
    classifier = Classifier(stream_model, options, Outbox(sent.append, "w"))

    def message(stream: str) -> Pending:
        chunk = wire.Events(stream=stream, session="p", seq=0, events=events, sensor=SENSOR)
        return Pending(chunk, time.time_ns())

    classifier.process([message(f"s{k}") for k in range(100)])
    stats = classifier.stats()
    assert len(classifier.streams) == 8 and stats["open_streams"] == 8
    assert stats["streams_refused"] == 92
    time.sleep(0.3)
    classifier.process([message("late")])  # the idle ones make room first
    assert stats["streams_evicted"] == 0 and classifier.streams_evicted == 8
    assert list(classifier.streams) == ["late"]
    for k in range(200):  # many more come and go: what is kept stays bounded
        classifier.process([message(f"t{k}")])
        classifier.process([Pending(wire.End(stream=f"t{k}", session="p", seq=1), 0)])
    stats = classifier.stats()
    assert len(stats["streams"]) <= 64 + 8 and len(stats["ended_streams"]) <= 64
    assert stats["ended_streams_total"] == 200
    kept = sum(c["events"] for c in stats["streams"].values())
    assert kept + stats["streams_not_listed"]["events"] == 8 * 200 + 200 + 200 * 200
    assert len(classifier.outbox.seq) <= Outbox.MAX_STREAMS


def test_a_stream_the_model_does_not_fit_is_refused_unless_allowed():
    model, config, _ = load_checkpoint(default_checkpoint("dvs_sign"))
    runner = make_runner(model, choose_device("cpu"), window_steps=None)
    sign = StreamModel(
        config.name, tuple(config.class_names), config.compression, 1e5, runner
    )  # 128x128 input
    events = read_nmnist(shared_path("recordings/nmnist_single.bin")).events
    for allow in (False, True):
        sent: list[wire.Message] = []
        options = ClassifierOptions(preview_hz=0, allow_model_mismatch=allow)
        classifier = Classifier(sign, options, Outbox(sent.append, "w"))
        classifier.process(messages_of(events))  # a 34x34 stream
        stats = classifier.stats()
        if allow:
            assert stats["streams_mismatched"] == 0 and classifier.streams
        else:
            assert stats["streams_mismatched"] == 1 and not classifier.streams and not sent
            assert stats["streams"]["cam"]["events_rejected"] == len(events)


def test_without_a_preview_subscriber_no_preview_is_made_and_predictions_are_the_same():
    events = read_nmnist(shared_path("recordings/nmnist_single.bin")).events
    _, _, stream_model = nmnist_model()
    runs = {}
    for wanted in (True, False):
        sent: list[wire.Message] = []
        outbox = Outbox(sent.append, "w")
        outbox.previews_wanted = wanted
        options = ClassifierOptions(max_steps_per_push=None, preview_hz=1000)
        classifier = Classifier(stream_model, options, outbox)
        items = messages_of(events)
        for start in range(0, len(items), 37):  # merged pushes of up to 37 messages
            classifier.process(items[start : start + 37])
        end = wire.End(stream="cam", session="p1", seq=len(items) + 1)
        classifier.process([Pending(end, 0)])  # flushes the last step and preview
        runs[wanted] = sent
    previews = [m for m in runs[True] if isinstance(m, wire.Preview)]
    assert previews and sum(p.events for p in previews) == len(events)
    assert not any(isinstance(m, wire.Preview) for m in runs[False])
    logits = {
        wanted: [m.logits for m in sent if isinstance(m, wire.Prediction)]
        for wanted, sent in runs.items()
    }
    np.testing.assert_array_equal(logits[True], logits[False])


def test_a_dense_stream_samples_its_preview_by_the_previous_images_rate():
    image = PreviewImage(128, 128)
    n = np.arange(200_000)
    dense = make_events(n, n % 128, (n // 128) % 128, n % 2)
    image.add(dense[:100_000])
    _, _, events, per_count = image.take(0.0)
    assert events == 100_000 and per_count == 2  # at most PREVIEW_MAX_EVENTS per push
    for start in range(100_000, 200_000, 10_000):  # small pushes, as dense as before
        image.add(dense[start : start + 10_000])
    counts = image.counts.sum()
    picture, _, events, per_count = image.take(1.0)
    assert per_count == 100_000 // PREVIEW_EVENTS_PER_IMAGE
    assert counts * per_count == events == 100_000
    assert picture.shape == (2, 128, 128)


def test_large_messages_are_pushed_alone_small_ones_merged_with_the_same_predictions():
    """Messages merge into pushes of up to MERGE_UP_TO_EVENTS events; a message that large
    goes alone, without a copy. Either way the predictions are those of 1 ms messages."""
    rng = np.random.default_rng(5)
    count = 400_000  # 40 ms: 100,000 events per 10 ms hop
    events = make_events(
        np.sort(rng.integers(0, 40_000, count)),
        rng.integers(0, 34, count),
        rng.integers(0, 34, count),
        rng.integers(0, 2, count),
    )

    def predictions(chunk_us: int) -> tuple[list, list[int]]:
        _, _, stream_model = nmnist_model()
        sent: list[wire.Message] = []
        options = ClassifierOptions(max_steps_per_push=None)
        classifier = Classifier(stream_model, options, Outbox(sent.append, "w"))
        chunker = TimeChunker(chunk_us)
        items = [
            Pending(wire.Events(stream="cam", session="p", seq=k, events=c, sensor=SENSOR), 0)
            for k, c in enumerate(chunker.push(events) + chunker.flush())
        ]
        classifier.process(items[:1])  # opens the stream
        pieces = classifier.streams["cam"]._pieces(items[1:])
        classifier.process(items[1:])
        classifier.process([Pending(wire.End(stream="cam", session="p", seq=len(items)), 0)])
        logits = [m.logits for m in sent if isinstance(m, wire.Prediction)]
        return logits, [sum(len(i.message.events) for i in p) for _, p in pieces]

    small, small_pieces = predictions(1000)  # 10,000 events a message
    large, large_pieces = predictions(16_000)  # cut at the 65,536-event cap
    assert max(small_pieces) <= MERGE_UP_TO_EVENTS and len(small_pieces) < 10
    assert max(large_pieces) == 65_536 and len(large_pieces) >= 6
    assert len(small) == len(large) == 4
    np.testing.assert_allclose(large, small, rtol=1e-5, atol=1e-5)


def test_a_message_with_a_polarity_other_than_0_or_1_is_rejected_whoever_checked_it():
    """The worker's receiving thread checks polarities (``Pending.polarity_ok``); a
    message it did not check is checked by the processing thread. Either way a bad
    message is rejected whole and counted, and the stream goes on."""
    _, _, stream_model = nmnist_model()
    bad = make_events(np.arange(5_000, 5_010), np.zeros(10), np.zeros(10), np.full(10, 2))
    good = make_events(np.arange(0, 50_000, 10), np.ones(5_000), np.ones(5_000), np.ones(5_000))
    for checked in (None, False):
        sent: list[wire.Message] = []
        classifier = Classifier(stream_model, ClassifierOptions(), Outbox(sent.append, "w"))
        parts = [(good[:500], None), (bad, checked), (good[501:], None)]
        items = [
            Pending(wire.Events(stream="cam", session="p", seq=k, events=e, sensor=SENSOR), 0, ok)
            for k, (e, ok) in enumerate(parts)
        ]
        classifier.process(items)
        counters = classifier.counters["cam"]
        assert counters.events_rejected == 10
        assert counters.events == len(good) - 1
