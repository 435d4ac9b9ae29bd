"""Clip accuracy of a network: per T, with a confusion matrix, a JSON result and plots.

A clip's prediction is the argmax of the readout averaged over its real steps
(docs/method.md section 6; padding steps after a clip are ignored, see ``mean_readout``).
``evaluate`` runs a model over a loader of ``ClipBatch``es (and sums the counts
over DDP ranks); ``evaluate_checkpoint`` is what ``stcsnn eval`` does: load a
checkpoint, cut the chosen samples into clips at each requested T (the
checkpoint's hop ``window_us / T``), and report.

Evaluating a checkpoint at a T other than its own changes the hop, so the
network sees its inputs on another time scale than it learned: that is what
"accuracy versus T of one checkpoint" measures, not a network trained at each T.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.checkpoint import load_checkpoint
from models.clip_cache import cached_clips
from models.loaders import clip_loader
from models.splits import SplitSpec, default_split, open_part, stratified_subset
from replay.datasets.base import EventDataset, Subset


def mean_readout(logits: Tensor, steps: Tensor) -> Tensor:
    """``[T, B, C]`` readout and ``[B]`` real steps -> ``[B, C]`` mean over each clip's
    real steps (float32). The network is causal, so the steps after a clip's end
    (batch padding) never influence the ones averaged here."""
    t = torch.arange(logits.shape[0], device=logits.device)
    mask = (t[:, None] < steps[None, :]).to(torch.float32)  # [T, B]
    total = (logits.float() * mask[..., None]).sum(0)
    return total / steps.clamp(min=1).to(torch.float32)[:, None]


def autocast_for(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when asked; nothing elsewhere (bf16 is slower on these CPUs)."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@dataclass
class EvalResult:
    """Counts over a set of clips."""

    correct: int
    samples: int
    loss_sum: float
    confusion: np.ndarray  # [true class, predicted class] counts
    steps_sum: int  # real steps over all clips

    @property
    def accuracy(self) -> float:
        return self.correct / self.samples if self.samples else float("nan")

    @property
    def loss(self) -> float:
        return self.loss_sum / self.samples if self.samples else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "samples": self.samples,
            "correct": self.correct,
            "loss": self.loss,
            "mean_steps": self.steps_sum / self.samples if self.samples else 0.0,
            "confusion": self.confusion.tolist(),
        }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Sequence | torch.utils.data.DataLoader,
    num_classes: int,
    *,
    device: torch.device | str = "cpu",
    amp: bool = False,
    distributed: bool = False,
) -> EvalResult:
    """Accuracy, mean loss and confusion of ``model`` (put in eval mode, restored
    after) over ``loader``'s ``ClipBatch``es; under DDP each rank sees its
    shard and the counts are summed over ranks."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    steps_sum = torch.zeros((), dtype=torch.int64, device=device)
    try:
        for batch in loader:
            batch = batch.to(device, non_blocking=True)
            with autocast_for(device, amp):
                logits = model(batch.clips)
            clip_logits = mean_readout(logits, batch.steps)
            loss_sum += F.cross_entropy(clip_logits, batch.labels, reduction="sum").double()
            predicted = clip_logits.argmax(1)
            confusion += torch.bincount(
                batch.labels * num_classes + predicted, minlength=num_classes**2
            ).view(num_classes, num_classes)
            steps_sum += batch.steps.sum()
    finally:
        model.train(was_training)
    if distributed:
        import torch.distributed as dist

        for tensor in (confusion, loss_sum, steps_sum):
            dist.all_reduce(tensor)
    confusion_np = confusion.cpu().numpy()
    return EvalResult(
        correct=int(np.trace(confusion_np)),
        samples=int(confusion_np.sum()),
        loss_sum=float(loss_sum),
        confusion=confusion_np,
        steps_sum=int(steps_sum),
    )


def predict_clips(model: nn.Module, loader) -> dict[str, list[int]]:
    """Per clip, in ``loader``'s order: ``label``, ``predicted`` (the argmax of the mean
    readout) and ``steps``; ``model`` in eval mode, on the CPU, without gradients."""
    model.eval()
    predicted, labels, steps = [], [], []
    with torch.no_grad():
        for batch in loader:
            readout = mean_readout(model(batch.clips), batch.steps)
            predicted += readout.argmax(1).tolist()
            labels += batch.labels.tolist()
            steps += batch.steps.tolist()
    return {"label": labels, "predicted": predicted, "steps": steps}


def split_for_eval(extra: dict[str, Any], dataset: str) -> SplitSpec:
    """The held-out split a checkpoint was trained with (recorded in its extra),
    or the dataset's default for checkpoints that do not say."""
    recorded = extra.get("split")
    return SplitSpec.from_dict(recorded) if isinstance(recorded, dict) else default_split(dataset)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    dataset: str,
    root: str | os.PathLike,
    split: str,
    *,
    steps: Sequence[int] | None = None,
    clip: str = "whole",
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    amp: bool = False,
    limit: int | None = None,
    workers: int = 0,
    cache_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on ``split`` (train / val / test) at each T in ``steps``
    (default: its own). Returns the result dict ``stcsnn eval`` prints: top-level
    ``accuracy``, ``samples``, ``T``, ``confusion`` for the first T listed, and
    ``by_T`` with one entry per T."""
    device = torch.device(device)
    model, config, extra = load_checkpoint(checkpoint, map_location=device)
    trained_on = extra.get("dataset")
    if trained_on is not None and trained_on != dataset and log is not None:
        log(f"note: {checkpoint} was trained on {trained_on!r}, evaluating on {dataset!r}")
    spec = split_for_eval(extra, dataset)
    samples = _samples_for_eval(checkpoint, config.num_classes, dataset, root, split, spec, limit)
    steps_list = list(steps) if steps else [config.compression.steps]
    by_t = []
    for t in steps_list:
        compression = config.with_changes(steps=int(t)).compression
        clips = cached_clips(
            samples,
            compression,
            clip,
            name=f"{dataset}-{split}",
            cache_dir=cache_dir,
            workers=workers,
            log=log,
        )
        loader = clip_loader(clips, batch_size=batch_size, train=False, workers=workers)
        started = time.perf_counter()
        result = evaluate(model, loader, config.num_classes, device=device, amp=amp)
        entry = {"T": int(t), "hop_us": compression.step_us, **result.to_dict()}
        entry["eval_time_s"] = time.perf_counter() - started
        by_t.append(entry)
        if log is not None:
            log(f"T={t}: accuracy {result.accuracy:.4f} on {result.samples} clips")
    first = by_t[0]
    return {
        "accuracy": first["accuracy"],
        "samples": first["samples"],
        "T": first["T"],
        "loss": first["loss"],
        "confusion": first["confusion"],
        "dataset": dataset,
        "root": str(root),
        "split": split,
        "split_spec": spec.to_dict() if split != "test" else None,
        "clip": clip,
        "checkpoint": str(checkpoint),
        "checkpoint_T": config.compression.steps,
        "config": config.name,
        "class_names": list(config.class_names),
        "trained_val_accuracy": extra.get("val_accuracy"),
        "by_T": by_t,
    }


def _samples_for_eval(
    checkpoint: str | os.PathLike,
    num_classes: int,
    dataset: str,
    root: str | os.PathLike,
    split: str,
    spec: SplitSpec,
    limit: int | None,
) -> EventDataset:
    """The samples of ``split`` (a stratified subset of ``limit`` of them), refused
    when the dataset's classes are not the network's."""
    samples = open_part(dataset, root, split, spec)
    if len(samples.class_names) != num_classes:
        raise ValueError(
            f"{checkpoint}: the network has {num_classes} classes, "
            f"{dataset} has {len(samples.class_names)}"
        )
    if limit is not None:
        samples = Subset(samples, stratified_subset(samples.labels, limit, spec.seed))
    return samples


def write_result(result: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, str]:
    """``result.json``, ``accuracy_vs_T.png`` and ``confusion.png`` in ``out_dir``;
    returns the paths written by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out / "result.json"), **plot_result(result, out)}
    result = {**result, "files": files}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return files


def plot_result(result: dict[str, Any], out: Path) -> dict[str, str]:
    """Accuracy versus T (one point per evaluated T) and the confusion matrix of
    the first T, as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = f"{result['dataset']} {result['split']} ({result['clip']} samples)"
    entries = sorted(result["by_T"], key=lambda e: e["T"])
    ts = [e["T"] for e in entries]
    acc = [100 * e["accuracy"] for e in entries]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot(ts, acc, "o-")
    own = result["checkpoint_T"]
    if own in ts:
        ax.plot([own], [acc[ts.index(own)]], "s", color="C3", label=f"trained at T={own}")
        ax.legend(fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ts, [str(t) for t in ts])
    ax.set_xlabel("T (steps per window)")
    ax.set_ylabel("clip accuracy (%)")
    ax.set_title(f"{Path(result['checkpoint']).name}: {name}", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    curve = out / "accuracy_vs_T.png"
    fig.savefig(curve)
    plt.close(fig)

    confusion = np.asarray(result["confusion"])
    classes = result["class_names"]
    fig, ax = plt.subplots(figsize=(1.5 + 0.45 * len(classes), 1.2 + 0.45 * len(classes)), dpi=120)
    ax.imshow(confusion, cmap="Blues")
    for (i, j), count in np.ndenumerate(confusion):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"T={result['T']}: accuracy {100 * result['accuracy']:.1f}%", fontsize=9)
    fig.tight_layout()
    matrix = out / "confusion.png"
    fig.savefig(matrix)
    plt.close(fig)
    return {"accuracy_vs_T": str(curve), "confusion": str(matrix)}
