import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.events import EVENT_DTYPE, SensorSize, make_events
from replay.cache_files import (
    ABANDONED_TEMPORARY_S,
    CorruptCache,
    SourceStamp,
    default_cache_dir,
    read_or_build,
    source_stamps,
    written_atomically,
)
from replay.datasets.cache import (
    CACHE_FORMAT_VERSION,
    CacheStats,
    DecodedSegments,
    cache_file_for,
    load_or_build,
    read_segment_cache,
    write_segment_cache,
)

SENSOR = SensorSize(128, 128)


def random_events(rng, n, t0=0):
    return make_events(
        t0 + np.sort(rng.integers(0, 1_000_000, n)),
        rng.integers(0, 128, n),
        rng.integers(0, 128, n),
        rng.integers(0, 2, n),
    )


@pytest.fixture
def source(tmp_path) -> Path:
    path = tmp_path / "recording.bin"
    path.write_bytes(b"pretend recording")
    return path


def decoded(seed=0, counts=(500, 0, 1200)) -> DecodedSegments:
    rng = np.random.default_rng(seed)
    events = [random_events(rng, n, t0=i * 2_000_000) for i, n in enumerate(counts)]
    starts = np.array([i * 2_000_000 for i in range(len(counts))])
    return DecodedSegments(SENSOR, starts, starts + 1_000_000, np.arange(len(counts)), events)


def write(path, source, segments: DecodedSegments, **kw):
    write_segment_cache(
        path,
        [SourceStamp.of(source)],
        segments.sensor,
        segments.starts_us,
        segments.ends_us,
        segments.labels,
        segments.events,
        **kw,
    )


def test_round_trip_is_exact_and_compact(tmp_path, source):
    segments = decoded()
    path = tmp_path / "c.segments"
    write(path, source, segments)
    cached = read_segment_cache(path, [SourceStamp.of(source)])
    assert cached.sensor == SENSOR and len(cached) == 3
    for i, events in enumerate(segments.events):
        got = cached.events(i)
        assert got.dtype == EVENT_DTYPE
        np.testing.assert_array_equal(got, events)
    np.testing.assert_array_equal(cached.segments["start_us"], segments.starts_us)
    np.testing.assert_array_equal(cached.segments["label"], segments.labels)
    # 7 bytes per event plus a header well under 1 KB.
    assert path.stat().st_size < 7 * 1700 + 1024
    assert not list(tmp_path.glob("*.tmp"))


def test_wide_sensor_keeps_coordinates_above_255(tmp_path, source):
    wide = SensorSize(640, 480)
    events = make_events([1, 2, 3], [0, 300, 639], [0, 256, 479], [0, 1, 1])
    path = tmp_path / "w.segments"
    write_segment_cache(path, [SourceStamp.of(source)], wide, [0], [10], [0], [events])
    np.testing.assert_array_equal(
        read_segment_cache(path, [SourceStamp.of(source)]).events(0), events
    )


def test_segment_longer_than_32_bits_of_microseconds_keeps_exact_times(tmp_path, source):
    long = make_events([5, 2**32 + 7, 2**40], [1, 2, 3], [4, 5, 6], [0, 1, 0])
    short = make_events([2**40 + 1, 2**40 + 9], [0, 0], [0, 0], [1, 1])
    path = tmp_path / "long.segments"
    write_segment_cache(
        path, [SourceStamp.of(source)], SENSOR, [0, 0], [1, 1], [0, 1], [long, short]
    )
    cached = read_segment_cache(path, [SourceStamp.of(source)])
    np.testing.assert_array_equal(cached.events(0), long)
    np.testing.assert_array_equal(cached.events(1), short)


def test_stale_source_and_other_version_are_refused(tmp_path, source):
    path = tmp_path / "c.segments"
    write(path, source, decoded())
    before = SourceStamp.of(source)
    source.write_bytes(b"a different recording")
    with pytest.raises(CorruptCache, match="^stale"):
        read_segment_cache(path, [SourceStamp.of(source)])
    write(path, source, decoded(), version=CACHE_FORMAT_VERSION + 1)
    with pytest.raises(CorruptCache, match="^version"):
        read_segment_cache(path, [SourceStamp.of(source)])
    assert before != SourceStamp.of(source)


@pytest.mark.parametrize(
    "damage",
    ["empty", "truncate_header", "truncate_events", "garbage", "extra_bytes", "npy_of_other"],
)
def test_damaged_files_are_refused_not_crashed_on(tmp_path, source, damage):
    path = tmp_path / "c.segments"
    write(path, source, decoded())
    data = path.read_bytes()
    damaged = {
        "empty": b"",
        "truncate_header": data[:40],
        "truncate_events": data[:-5],
        "garbage": np.random.default_rng(1).bytes(len(data)),
        "extra_bytes": data + b"\0" * 11,
        "npy_of_other": data[:10] + b"x" + data[11:],
    }[damage]
    path.write_bytes(damaged)
    with pytest.raises(CorruptCache, match="^corrupt"):
        read_segment_cache(path, [SourceStamp.of(source)])


def test_flipped_event_byte_is_caught_by_the_segment_crc(tmp_path, source):
    path = tmp_path / "c.segments"
    write(path, source, decoded())
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the last segment's events
    path.write_bytes(bytes(data))
    cached = read_segment_cache(path, [SourceStamp.of(source)])
    cached.events(0)
    with pytest.raises(CorruptCache, match="CRC"):
        cached.events(2)


def test_load_or_build_decodes_once_then_rebuilds_on_change_and_corruption(tmp_path, source):
    calls = []

    def build():
        calls.append(1)
        return decoded(seed=len(calls))

    stats = CacheStats()
    path = cache_file_for(tmp_path / "cache", "test", source)
    first = load_or_build(path, [source], build, stats)
    mtime = path.stat().st_mtime_ns
    second = load_or_build(path, [source], build, stats)
    assert len(calls) == 1 and stats.hits == 1 and stats.builds == 1
    assert stats.reasons[0].startswith("missing")
    assert path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(first.events(2), second.events(2))

    source.write_bytes(b"the recording was re-recorded")
    load_or_build(path, [source], build, stats)
    assert len(calls) == 2 and stats.reasons[-1].startswith("stale")

    path.write_bytes(b"\x93NUMPY garbage")
    rebuilt = load_or_build(path, [source], build, stats)
    assert len(calls) == 3 and stats.reasons[-1].startswith("corrupt")
    np.testing.assert_array_equal(rebuilt.events(2), decoded(seed=3).events[2])

    load_or_build(path, [source], build, stats, rebuild_reason="told to")
    assert len(calls) == 4 and stats.reasons[-1] == "told to"


def test_unwritable_cache_folder_warns_and_keeps_segments_in_memory(tmp_path, source):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    path = cache_file_for(blocker, "test", source)
    stats = CacheStats()
    with pytest.warns(UserWarning, match="cannot write the segment cache"):
        segments = load_or_build(path, [source], decoded, stats)
    assert stats.builds == 1 and not path.exists()
    np.testing.assert_array_equal(segments.events(2), decoded().events[2])


def test_cache_file_names_differ_for_equal_names_in_different_folders(tmp_path):
    a = cache_file_for(tmp_path, "ns", tmp_path / "a" / "user01_led.aedat")
    b = cache_file_for(tmp_path, "ns", tmp_path / "b" / "user01_led.aedat")
    assert a != b and a.name.startswith("user01_led-") and a.parent == tmp_path / "ns"


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STCSNN_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("STCSNN_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "stcsnn"


WRITER = """
import sys
import numpy as np
from replay.cache_files import SourceStamp
from replay.datasets.cache import write_segment_cache
from core.events import SensorSize, make_events
n = 2_000_000
events = make_events(np.arange(n), np.arange(n) % 128, np.arange(n) % 128, np.arange(n) % 2)
stamps = [SourceStamp("/recording", 1, 2)]
print("ready", flush=True)
while True:
    write_segment_cache(sys.argv[1], stamps, SensorSize(128, 128), [0], [n], [0], [events])
"""


def test_a_killed_writer_leaves_a_valid_file_or_none(tmp_path):
    path = tmp_path / "c.segments"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # now most likely in the middle of the next write
    finally:
        writer.kill()
        writer.wait()
    cached = read_segment_cache(path, [SourceStamp("/recording", 1, 2)])
    assert len(cached.events(0)) == 2_000_000
    # The killed writer's temporary file is removed by a later write once old.
    leftovers = list(tmp_path.glob(".c.segments.*.tmp"))
    old = time.time() - ABANDONED_TEMPORARY_S - 60
    for leftover in leftovers:
        os.utime(leftover, (old, old))
    write_segment_cache(path, [SourceStamp("/recording", 1, 2)], SENSOR, [], [], [], [])
    assert not list(tmp_path.glob(".c.segments.*.tmp"))


def test_source_stamps_name_each_file_once(tmp_path, source):
    other = tmp_path / "labels.csv"
    other.write_text("class,start,end")
    stamps = source_stamps([source, other, source])
    assert stamps == [SourceStamp.of(source), SourceStamp.of(other)]
    assert stamps[0].path == str(source.resolve()) and stamps[0].size == source.stat().st_size


def test_an_entry_written_atomically_appears_whole_or_not_at_all(tmp_path):
    path = tmp_path / "entry"
    with pytest.raises(RuntimeError), written_atomically(path, folder=True) as temporary:
        (temporary / "half.bin").write_bytes(b"x")
        raise RuntimeError("the writer dies")
    assert not path.exists() and not list(tmp_path.glob(".*.tmp"))
    with written_atomically(path, folder=True) as temporary:
        (temporary / "data.bin").write_bytes(b"first")
    # A second writer of the same folder loses to the first (same name, as good).
    with written_atomically(path, folder=True) as temporary:
        (temporary / "data.bin").write_bytes(b"second")
    assert (path / "data.bin").read_bytes() == b"first"
    # A file is replaced.
    with written_atomically(tmp_path / "file") as temporary:
        temporary.write_bytes(b"old")
    with written_atomically(tmp_path / "file") as temporary:
        temporary.write_bytes(b"new")
    assert (tmp_path / "file").read_bytes() == b"new"
    assert not list(tmp_path.glob(".*.tmp"))


def test_an_abandoned_temporary_folder_is_removed_only_once_old(tmp_path):
    path = tmp_path / "entry"
    abandoned = tmp_path / ".entry.123.abcd.tmp"
    abandoned.mkdir()
    (abandoned / "clips.f32").write_bytes(b"being written")
    with written_atomically(path, folder=True):
        pass
    assert abandoned.exists()  # its file was touched just now: a live writer's
    old = time.time() - ABANDONED_TEMPORARY_S - 60
    for stale in (abandoned / "clips.f32", abandoned):
        os.utime(stale, (old, old))
    with written_atomically(tmp_path / "entry2", folder=True):
        pass
    assert abandoned.exists()  # another entry's writes leave it alone
    with written_atomically(path, folder=True):
        pass
    assert not abandoned.exists()


def test_read_or_build_reads_a_fresh_entry_and_says_why_it_built(tmp_path):
    built = []

    def read(path):
        text = path.read_text()
        if text != "fresh":
            raise CorruptCache(f"stale: {path}: {text}")
        return text

    def build(path):
        built.append(path)
        path.write_text("fresh")
        return "fresh"

    path = tmp_path / "entry"
    assert read_or_build(path, read, build) == ("fresh", f"missing: {path}")
    assert read_or_build(path, read, build) == ("fresh", None)
    path.write_text("old")
    assert read_or_build(path, read, build) == ("fresh", f"stale: {path}: old")
    assert read_or_build(path, read, build, rebuild_reason="told to") == ("fresh", "told to")
    assert len(built) == 3
