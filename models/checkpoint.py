"""Checkpoints that carry everything the streaming worker needs, loadable with weights_only.

One file holds the weights, the full ``ModelConfig`` as a plain dict (so
``torch.load(..., weights_only=True)`` accepts it and no pickled class is ever
executed), the class names and compressor settings (also inside the config,
repeated at the top level for readers that only want those), a format version,
and an ``extra`` dict of plain data (epoch, metrics, optimiser state, ...).

A checkpoint is refused, with the file named, when its format is unknown or its
weights do not fit the network its own config describes.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.networks import ModelConfig, SpikingNet, build_network
from replay.cache_files import written_atomically

FORMAT = "stcsnn-checkpoint"
FORMAT_VERSION = 1

_PLAIN_SCALARS = (str, int, float, bool, type(None))


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _check_plain(value: Any, where: str) -> None:
    """Raise TypeError unless ``value`` is something weights_only loading accepts."""
    # Exact types: a str subclass (e.g. torch.__version__) saves but does not
    # load with weights_only=True.
    if type(value) in _PLAIN_SCALARS or isinstance(value, torch.Tensor):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if type(key) not in (str, int):
                raise TypeError(f"{where}: key {key!r} is not str or int")
            _check_plain(item, f"{where}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where}: {type(value).__name__} cannot be loaded with weights_only=True; "
        "store plain data (str, int, float, bool, None, tensors, lists, dicts)"
    )


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    config: ModelConfig,
    *,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights with ``config`` atomically: a temporary file of this
    writer's own, fsynced, renamed into place, the folder fsynced (two saves to one
    path cannot mix; a crash leaves the old checkpoint or the new one).

    ``model`` may be wrapped (DistributedDataParallel, torch.compile): the
    underlying module's state dict is stored.
    """
    path = Path(path)
    module = getattr(model, "module", model)  # DDP
    module = getattr(module, "_orig_mod", module)  # torch.compile
    extra = dict(extra or {})
    _check_plain(extra, "extra")
    with torch.device("meta"):  # shapes only, no memory
        described = build_network(config)
    diffs = _state_dict_differences(described, module.state_dict())
    if diffs:
        raise CheckpointError(
            path, f"model does not match config {config.name!r}: " + "; ".join(diffs)
        )
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "class_names": list(config.class_names),
        "compression": config.to_dict()["compression"],
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "extra": extra,
    }
    with written_atomically(path, durable=True) as temporary:
        torch.save(payload, temporary)
    return path


def config_differences(found: ModelConfig, expected: ModelConfig) -> list[str]:
    """Each field where ``found`` differs from ``expected``, as ``"name: found != expected"``."""
    a, b = found.to_dict(), expected.to_dict()
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key == "compression":
            for ck in sorted(set(a[key]) | set(b[key])):
                if a[key].get(ck) != b[key].get(ck):
                    diffs.append(f"compression.{ck}: {a[key].get(ck)!r} != {b[key].get(ck)!r}")
        elif a.get(key) != b.get(key):
            diffs.append(f"{key}: {a.get(key)!r} != {b.get(key)!r}")
    return diffs


def _state_dict_differences(model: nn.Module, state_dict: dict[str, Any]) -> list[str]:
    own = model.state_dict()
    diffs = []
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing:
        diffs.append(f"missing weights {missing}")
    if unexpected:
        diffs.append(f"unexpected weights {unexpected}")
    for key in sorted(set(own) & set(state_dict)):
        value = state_dict[key]
        if not isinstance(value, torch.Tensor):
            diffs.append(f"{key} is a {type(value).__name__}, not a tensor")
        elif value.shape != own[key].shape:
            diffs.append(
                f"{key} has shape {list(value.shape)}, config needs {list(own[key].shape)}"
            )
    return diffs


def load_checkpoint(
    path: str | os.PathLike,
    *,
    map_location: str | torch.device | None = "cpu",
    expected_config: ModelConfig | None = None,
) -> tuple[SpikingNet, ModelConfig, dict[str, Any]]:
    """Rebuild the network from a checkpoint; returns ``(model in eval mode, config, extra)``.

    Raises ``CheckpointError`` naming the file when it is not a checkpoint of
    this format/version, its config is invalid, its weights do not fit that
    config, or (with ``expected_config``) its config differs from the expected
    one (each differing field listed).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": a refused file's noise
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(path, "no such file") from None
    except Exception as exc:  # unpickling refused, corrupt archive, not a torch file
        raise CheckpointError(path, _unloadable(path, exc)) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(path, f"not an {FORMAT} file (format marker: {found!r})")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            path, f"unknown format version {version!r} (this code reads {FORMAT_VERSION})"
        )
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(path, f"has no {key!r} dict")
    try:
        config = ModelConfig.from_dict(payload["config"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(path, f"invalid config: {exc}") from None
    if expected_config is not None:
        diffs = config_differences(config, expected_config)
        if diffs:
            raise CheckpointError(path, "config differs from the expected one: " + "; ".join(diffs))
    model = build_network(config)
    diffs = _state_dict_differences(model, payload["state_dict"])
    if diffs:
        raise CheckpointError(
            path, f"weights do not match config {config.name!r}: " + "; ".join(diffs)
        )
    model.load_state_dict(payload["state_dict"])
    if map_location is not None:
        model.to(map_location)
    model.eval()
    return model, config, dict(payload.get("extra") or {})


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
PICKLE_MAGIC = b"\x80"  # a pickle's PROTO opcode: the legacy torch.save format


def _unloadable(path: Path, error: Exception) -> str:
    """What is wrong with a file that ``torch.load(weights_only=True)`` refused, in one
    line (PyTorch's own text is long and advises loading the file unsafely)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        return f"cannot read it ({exc.strerror or type(exc).__name__})"
    if not head:
        return "empty file, not a PyTorch checkpoint"
    if not head.startswith((ZIP_MAGIC, PICKLE_MAGIC)):
        kind = "a text file" if _is_text(head) else f"unknown content: {head[:12]!r}..."
        return f"not a PyTorch checkpoint ({kind})"
    if isinstance(error, pickle.UnpicklingError):
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f"holds a pickled {found.group(1)}" if found else "is a pickle"
        return f"refused: it {what}, not plain data (loading it could run code from the file)"
    return "damaged PyTorch file (truncated or corrupt): cannot be read"


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:  # may be a character cut at the end of ``head``
        text = head[:-3].decode("utf-8", errors="replace")
        if "\ufffd" in text:
            return False
    return all(c.isprintable() or c in "\t\r\n" for c in text)
