"""A bounded fuzz run for CI: benchmarks/fuzz.py's harness on every decoder.

Every decoder gets a few hundred damaged real inputs (fixed seeds, a few seconds
in all; ``benchmarks/fuzz.py`` runs 100,000 per decoder). A decoder may decode a
case into a result that keeps its promises or raise the project's error class
(``WireError``; ``FormatError`` / ``EventValidationError``); anything else, a
hang or a broken promise fails here, with the command that replays the case.

Decoder bugs the harness finds go into ``KNOWN_BUGS`` until they are fixed (a fuzz
run that meets only those is an xfail, not a pass). Its first full run found four
(docs/reliability.md); they are fixed, and the tests at the end reproduce each.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from conftest import shared_path

from benchmarks import fuzz
from replay.formats.gesture_labels import read_gesture_labels
from replay.paths import data_root
from streamer import wire

SEED = 0
CASES = {
    "wire": 1000,
    "aedat2": 400,
    "aedat3": 400,
    "nmnist": 600,
    "dvs_sign": 120,
    "gesture_labels": 600,
    "aedat4": 3,  # a child process each, and a 1 s stall timeout on corrupt packets
}
# The formats read since issue 15 (the DVXplorer's events written as each camera's files).
CASES |= {
    "aedat2_davis": 400,
    "prophesee_evt2": 300,
    "prophesee_evt3": 300,
    "prophesee_dat": 300,
    "event_stream": 300,
}
HYPOTHESIS_CASES = 100

# (targets, exception type, text in its message): bugs reported, not yet fixed.
KNOWN_BUGS: dict = {}  # the four found by its first run are fixed (docs/reliability.md)


def known_bug(target: str, error: BaseException | None) -> str | None:
    """The KNOWN_BUGS entry ``error`` (or the error under a broken promise) is, if any."""
    for cause in (error, getattr(error, "__cause__", None)):
        for name, (targets, kind, text) in KNOWN_BUGS.items():
            if target.split("_hypothesis")[0] in targets and type(cause) is kind:
                if text in str(cause):
                    return name
    return None


def build(name: str) -> fuzz.Target:
    for relative in fuzz.SEED_FILES[name]:
        shared_path(relative)  # skips, naming the file, without the real data
    return fuzz.build_target(name, data_root())


class Findings:
    """Unexpected outcomes of a run, split into known bugs and new ones."""

    def __init__(self, target: str):
        self.target = target
        self.known: Counter = Counter()
        self.new: list[str] = []

    def __call__(self, index: int, case: fuzz.Case, outcome: str, error) -> None:
        bug = known_bug(self.target, error)
        if bug is not None:
            self.known[bug] += 1
            return
        self.new.append(f"case {index} [{case.variant}] {case.what[:200]}: {outcome}: {error!r}")

    def check(self) -> None:
        replay = f"python benchmarks/fuzz.py --replay {self.target} CASE --seed {SEED}"
        assert not self.new, f"{len(self.new)} unexpected; replay with {replay}:\n" + "\n".join(
            line[:600] for line in self.new[:5]
        )
        if self.known:
            pytest.xfail(f"only known decoder bugs (KNOWN_BUGS): {dict(self.known)}")


@pytest.mark.parametrize("name", list(CASES))
def test_damaged_real_inputs_give_results_or_project_errors(name):
    target = build(name)
    findings = Findings(name)
    try:
        tally = fuzz.run_target(target, CASES[name], SEED, on_unexpected=findings)
    finally:
        target.cleanup()
    assert tally.cases == CASES[name]
    findings.check()
    if name != "aedat4":  # both paths exercised, or the run proves nothing
        errors = sum(n for kind, n in tally.outcomes.items() if kind != "ok")
        assert tally.outcomes["ok"] > 0 and errors > 0, tally.outcomes


def test_hypothesis_headers_give_messages_or_wire_errors():
    from hypothesis import HealthCheck, given, settings

    target = build("wire")
    findings = Findings("wire_hypothesis")

    @settings(
        max_examples=HYPOTHESIS_CASES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(frames=fuzz.wire_frames_strategy(target.seeds))
    def one_case(frames):
        case = fuzz.Case(frames, "hypothesis", f"header {frames[1][:300]!r}")
        with fuzz.case_time_limits():
            outcome, error = fuzz.run_case(target, case)
        if fuzz.is_unexpected(outcome):
            findings(0, case, outcome, error)

    one_case()
    findings.check()


def test_a_case_is_rebuilt_from_target_seed_and_number():
    target = build("aedat3")
    try:
        first = target.make_case(fuzz.case_rng(SEED, "aedat3", 17))
        again = target.make_case(fuzz.case_rng(SEED, "aedat3", 17))
        other = target.make_case(fuzz.case_rng(SEED, "aedat3", 18))
    finally:
        target.cleanup()
    assert (first.value, first.variant, first.what) == (again.value, again.variant, again.what)
    assert first.value != other.value


def test_the_harness_counts_a_hang_and_a_foreign_exception():
    def run(case):
        if case.value == "hang":
            time.sleep(5)
        raise KeyError(case.value)

    target = fuzz.Target("probe", "probe", [], None, run, None, time_limit_s=0.2)
    with fuzz.case_time_limits():
        started = time.monotonic()
        hang, _ = fuzz.run_case(target, fuzz.Case("hang", "", ""))
        assert time.monotonic() - started < 2
        foreign, _ = fuzz.run_case(target, fuzz.Case("x", "", ""))
    assert (hang, foreign) == ("hang", "unexpected:KeyError")
    assert fuzz.is_unexpected(hang) and fuzz.is_unexpected(foreign)


# --- the decoder bugs the fuzzer found (reproducers; docs/reliability.md) ----------------


def prediction_frames(**changes) -> list[bytes]:
    header = {
        "v": 1, "type": "prediction", "stream": "a", "session": "s", "seq": 0, "sent_ns": 1,
        "t_end_us": 10, "hop_us": 10, "probs": [0.5, 0.5], "top1": 0, **changes,
    }  # fmt: skip
    return [b"prediction/a/", json.dumps(header).encode()]


def test_a_header_with_a_5000_digit_integer_is_a_wire_error():
    frames = [b"end/a/", b'{"v": 1, "type": "end", "seq": ' + b"9" * 5000 + b"}"]
    with pytest.raises(wire.WireError):
        wire.decode(frames)


@pytest.mark.parametrize(
    "changes",
    [{"top1_prob": 10**400}, {"probs": [10**400, 0]}, {"timings_ms": {"step": 10**400}}],
)
def test_a_prediction_number_too_large_for_a_float_is_a_wire_error(changes):
    with pytest.raises(wire.WireError):
        wire.decode(prediction_frames(**changes))


@pytest.mark.parametrize("message_type", [[], {}])
def test_a_message_type_that_is_not_a_string_is_a_wire_error(message_type):
    header = {"v": 1, "type": message_type, "stream": "a", "session": "s", "seq": 0, "sent_ns": 1}
    with pytest.raises(wire.WireError):
        wire.decode([b"end/a/", json.dumps(header).encode()])


def test_a_label_file_with_a_5000_digit_time_is_a_format_error(tmp_path):
    path = tmp_path / "user01_natural_labels.csv"
    path.write_bytes(b"class,startTime_usec,endTime_usec\n1," + b"9" * 5000 + b",5\n")
    with pytest.raises(fuzz.EventError):
        read_gesture_labels(path)
