"""When does a DVS_Sign sample's motion happen? The floor under its decision latency.

    .venv/bin/python experiments/dvs_sign_onset.py [--root ../shared/data/dvs_sign]

The streaming decision latency is measured from a sample's first event (its
segment onset in a back-to-back replay). If the signer only starts moving a
second or more later, no model can be right sooner without guessing: this
script measures, per sample, the time from the first event to the moment 10 %,
25 % and 50 % of its events have arrived, and the share of all events in each
0.25 s since the onset. The JSON goes to
``experiments/results/dvs_sign_onset.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "dvs_sign"
RESULT = REPO / "experiments" / "results" / "dvs_sign_onset.json"
SHARES = (0.1, 0.25, 0.5)
BIN_S = 0.25


def main(argv: list[str] | None = None) -> int:
    from replay.datasets.dvs_sign import DVSSign

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args(argv)
    reached, shares, durations = [], [], []
    for sample in DVSSign(args.root):
        seconds = (sample.events["timestamp"] - sample.start_us) / 1e6
        reached.append(np.quantile(seconds, SHARES))
        counts = np.histogram(seconds, bins=np.arange(0, 8 + BIN_S, BIN_S))[0]
        shares.append(counts / len(seconds))
        durations.append(seconds[-1])
    reached = np.array(reached)
    result = {
        "samples": len(durations),
        "duration_s_median": float(np.median(durations)),
        "seconds_to_share_of_events": {
            f"{int(share * 100)}%": {
                "median": float(np.median(reached[:, i])),
                "p10": float(np.percentile(reached[:, i], 10)),
                "p90": float(np.percentile(reached[:, i], 90)),
            }
            for i, share in enumerate(SHARES)
        },
        "share_of_events_by_quarter_second": [round(float(v), 4) for v in np.mean(shares, 0)],
        "share_of_events_in_first_second": float(np.mean(shares, 0)[: int(1 / BIN_S)].sum()),
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
