"""`stcsnn info`: what this installation has and what data it can find."""

from __future__ import annotations

import argparse
import json
import platform


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def collect() -> dict:
    import dv_processing as dv
    import numpy as np
    import pyqtgraph
    import torch
    import zmq

    from replay.paths import data_root, where_data_was_looked_for
    from stcsnn import __version__

    root = data_root()
    datasets = {
        "nmnist": root / "nmnist",
        "dvs_sign": root / "dvs_sign",
        "dvsgesture_labels": root / "dvsgesture",
        "recordings": root / "recordings",
    }
    return {
        "stcsnn": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "dv_processing": getattr(dv, "__version__", "unknown"),
        "pyqtgraph": pyqtgraph.__version__,
        "cuda": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpu_threads": torch.get_num_threads(),
        "cameras": [str(c) for c in dv.io.camera.discover()],
        "data_root": str(root),
        "data_looked_in": where_data_was_looked_for(),
        "data": {name: path.is_dir() for name, path in datasets.items()},
    }


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    if not info["cameras"]:
        print("\nNo iniVation camera attached (dv.io.camera.discover() found none).")
    missing = [name for name, found in info["data"].items() if not found]
    if missing:
        print(
            f"Not found under {info['data_root']}: {', '.join(missing)}. "
            f"Data is looked for in: {info['data_looked_in']}."
        )
    return 0
