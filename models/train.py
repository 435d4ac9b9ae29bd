"""Training: one loop on one screen (nanoGPT-style), configured by plain data.

    samples (replay.datasets) --split--> train part  -> random crops (models.clips) -> loader
                                         val part    -> whole samples, cached       -> loader
    SpikingNet(config) -> AdamW, cosine lr -> per epoch: train, validate, log, checkpoint

Seeded and resumable: the model is initialised from ``seed``, each epoch
reseeds torch with ``(seed, epoch)`` and draws its order and crops from
``(seed, epoch, sample)``, so a run resumed from ``last.pt`` continues exactly
as an uninterrupted one. Run with ``torchrun`` for DistributedDataParallel
(``WORLD_SIZE`` > 1: NCCL on CUDA, gloo on CPU; each rank trains on its shard,
validation counts are summed over ranks, rank 0 writes the files).

A run folder holds ``best.pt`` (best validation accuracy), ``last.pt`` (also
the optimiser state, for ``resume``), ``metrics.jsonl`` (one line per epoch),
``curves.png`` (loss and accuracy per epoch, redrawn after each) and ``run.json``
(the training config and the model config).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from models.augment import EventAugment
from models.checkpoint import (
    CheckpointError,
    config_differences,
    load_checkpoint,
    save_checkpoint,
)
from models.clip_cache import cached_clips
from models.clips import RandomCropClips
from models.evaluate import EvalResult, autocast_for, evaluate, mean_readout
from models.loaders import clip_loader, default_workers
from models.networks import ModelConfig, build_network, get_config, plain_lif_baseline
from models.splits import SplitSpec, default_split, open_events, split_parts
from models.stream_clips import StreamClipBatch, StreamCropClips, collate_stream_clips
from replay.datasets.base import EventDataset


@dataclass
class TrainConfig:
    """Everything a run depends on; saved in its checkpoints as a plain dict."""

    dataset: str  # nmnist, dvsgesture, cifar10dvs, dvs_sign
    root: str
    config: str | None = None  # model config name (default: the dataset's)
    baseline: bool = False  # count frames + plain LIF (models.networks.plain_lif_baseline)
    changes: dict[str, Any] = field(default_factory=dict)  # ModelConfig.with_changes
    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    min_lr_ratio: float = 0.05  # cosine decay to lr * this
    warmup_epochs: float = 0.5
    weight_decay: float = 1e-4  # on conv and linear weights only
    grad_clip: float = 0.0  # max gradient norm, 0 = off
    seed: int = 0
    split: SplitSpec | None = None  # default: models.splits.default_split(dataset)
    random_crop: bool = True  # False: train on whole samples (cached)
    crop_us: tuple[int, int] | None = None  # crop length range; default one window
    out: str | None = None  # run folder; default runs/<config>-T<T>-seed<seed>
    resume: bool = False
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    amp: bool = False  # bf16 autocast on CUDA
    workers: int | None = None  # loader processes (default: models.loaders.default_workers)
    eval_batch_size: int = 128
    val_every: int = 1  # validate every N epochs and after the last (cheaper k-fold grids)
    init: str | None = None  # start from this checkpoint's weights (fine-tuning); new optimiser
    cache_dir: str | None = None  # compressed-clip cache (default $STCSNN_CACHE/clips)
    stop_after: int | None = None  # end this process after this many epochs (resume goes on)
    # Stream-aware training (opt-in, off by default; docs/training.md "Streaming
    # accuracy"): this share of the random crops is cut as the streaming worker
    # sees a sample in a replay (models.stream_clips.StreamCropClips).
    stream_context: float = 0.0  # share of crops preceded by other samples, at a random phase
    stream_context_us: tuple[int, int] | None = None  # its length range; default (0, one window)
    stream_gap_us: int = 0  # event-free time between samples (a replay's --gap-us)
    stream_phase: bool = True  # False: the grid starts at the crop's onset
    stream_loss: str = "mean"  # over the target's steps: "mean" readout's CE, or "each" step's CE
    # Event-level augmentation of random crops (opt-in): models.augment.EventAugment
    # settings, {} for its defaults, None for none.
    augment: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.stream_context <= 1.0:
            raise ValueError(f"stream_context must be in [0, 1], found {self.stream_context}")
        if self.stream_loss not in STREAM_LOSSES:
            raise ValueError(
                f"stream_loss must be one of {STREAM_LOSSES}, found {self.stream_loss!r}"
            )
        if self.val_every < 1:
            raise ValueError(f"val_every must be >= 1, found {self.val_every}")
        if self.stream_context > 0 and not self.random_crop:
            raise ValueError("stream_context needs random crops (not --crop-us off)")
        if self.augment is not None:
            if not self.random_crop or self.stream_context > 0:
                raise ValueError(
                    "augment needs plain random crops (no --crop-us off, no stream context)"
                )
            EventAugment.from_dict(self.augment)  # a clear error now, not in a loader

    @property
    def stream_training(self) -> dict[str, Any] | None:
        """The stream-aware training settings, or None when off (the default)."""
        if self.stream_context <= 0:
            return None
        return {
            "context": self.stream_context,
            "context_us": list(self.stream_context_us) if self.stream_context_us else None,
            "gap_us": self.stream_gap_us,
            "phase": self.stream_phase,
            "loss": self.stream_loss,
        }

    def model_config(self) -> ModelConfig:
        config = get_config(self.config or self.dataset)
        if self.baseline:
            config = plain_lif_baseline(config)
        return config.with_changes(**self.changes) if self.changes else config

    @property
    def split_spec(self) -> SplitSpec:
        return self.split if self.split is not None else default_split(self.dataset)

    def run_dir(self, config: ModelConfig) -> Path:
        if self.out:
            return Path(self.out)
        spec = self.split_spec
        fold = f"-fold{spec.fold}of{spec.folds}" if spec.folds else ""
        return Path("runs") / f"{config.name}-T{config.compression.steps}-seed{self.seed}{fold}"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["split"] = self.split_spec.to_dict()
        out["crop_us"] = list(self.crop_us) if self.crop_us else None
        out["stream_context_us"] = list(self.stream_context_us) if self.stream_context_us else None
        # Runs at the defaults of options added later keep the config they had
        # before these options existed (so their checkpoints resume and compare as before).
        for name, default in LATER_DEFAULTS.items():
            if out[name] == default:
                del out[name]
        return out


STREAM_LOSSES = ("mean", "each")
STREAM_DEFAULTS = {
    "stream_context": 0.0,
    "stream_context_us": None,
    "stream_gap_us": 0,
    "stream_phase": True,
    "stream_loss": "mean",
}
LATER_DEFAULTS = {**STREAM_DEFAULTS, "val_every": 1, "init": None, "augment": None}


# Fields that may differ when resuming: they do not change what is learned.
RESUMABLE_CHANGES = {"epochs", "resume", "device", "workers", "eval_batch_size", "stop_after"}
RESUMABLE_CHANGES |= {"cache_dir", "out", "val_every"}

MAX_DEFAULT_THREADS = 4
CURVES_NAME = "curves.png"  # loss and accuracy per epoch, beside the checkpoints


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device_name: str) -> tuple[torch.device, Distributed]:
    """The device, and the process group when run under torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if world == 1:
        return torch.device(device_name), Distributed()
    import torch.distributed as dist

    ranks = Distributed(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), world)
    if device_name.startswith("cuda"):
        torch.cuda.set_device(ranks.local_rank)
        device = torch.device("cuda", ranks.local_rank)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    return device, ranks


def default_threads(local_world: int = 1) -> int:
    """torch CPU threads per training process (``stcsnn train`` sets them; a caller of
    ``train`` sets its own): half the CPUs this process may run on, shared by the
    ranks on this machine, at least 1 and at most ``MAX_DEFAULT_THREADS``.

    Not torch's default (every CPU): with other load on the machine its threads wait
    for each other and training collapses (on 2 shared CPUs at a load average of 4,
    2 threads ran 14x slower than 1: ``benchmarks/bench_train_threads.py``,
    results/train_threads.json). Half leaves room for such load (and on SMT
    machines is about the physical cores); ``--threads`` sets any other count."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_DEFAULT_THREADS, (cpus or 1) // 2 // max(1, local_world)))


def cosine_lr(tc: TrainConfig, iteration: int, iterations: int, warmup: int) -> float:
    """Linear warmup, then cosine from ``lr`` down to ``lr * min_lr_ratio``."""
    if iteration < warmup:
        return tc.lr * (iteration + 1) / warmup
    progress = min(1.0, (iteration - warmup) / max(1, iterations - warmup))
    floor = tc.lr * tc.min_lr_ratio
    return floor + 0.5 * (tc.lr - floor) * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, tc: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on conv/linear weights only (not BN, tau, lambda, biases)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": tc.weight_decay},
        {"params": other, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=tc.lr, betas=(0.9, 0.999))


class Progress:
    """One progress line on stderr: rewritten in place on a terminal, else a
    line every ``every_s`` seconds (logs stay short)."""

    def __init__(self, total: int, label: str, enabled: bool = True, every_s: float = 10.0):
        self.total, self.label, self.enabled, self.every_s = total, label, enabled, every_s
        self.tty = sys.stderr.isatty()
        self.started = self.last = time.perf_counter()
        self.done = 0

    def update(self, done: int, **stats: float) -> None:
        self.done = done
        now = time.perf_counter()
        final = done >= self.total
        if not self.enabled or (
            not final and now - self.last < (0.2 if self.tty else self.every_s)
        ):
            return
        self.last = now
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        width = 20
        filled = int(width * done / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        shown = " ".join(f"{k} {v:.4g}" for k, v in stats.items())
        line = f"{self.label} [{bar}] {done}/{self.total} {elapsed:.0f}s {rate:.1f} it/s {shown}"
        end = "\n" if final or not self.tty else ""
        print(("\r" if self.tty else "") + line, end=end, file=sys.stderr, flush=True)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train(tc: TrainConfig, log: Callable[[str], None] = _log) -> dict[str, Any]:
    """Run ``tc``; returns a summary (run folder, best and last validation
    accuracy, epoch times). Raises ValueError/CheckpointError on a bad setup."""
    device, ranks = setup(tc.device)
    say = log if ranks.main else (lambda message: None)
    if ranks.world == 1:
        return _train(tc, device, ranks, say)
    import torch.distributed as dist

    try:
        summary = _train(tc, device, ranks, say)
        # Leave together: a rank that tears gloo down while rank 0 still
        # writes checkpoints can abort ("terminate called without an active exception").
        dist.barrier()
        return summary
    finally:
        dist.destroy_process_group()


def _train(
    tc: TrainConfig, device: torch.device, ranks: Distributed, log: Callable[[str], None]
) -> dict[str, Any]:
    """The loop: per epoch, train, validate, log and checkpoint."""
    run, start_epoch, best = _set_up(tc, device, ranks, log)
    stop_at = tc.epochs if tc.stop_after is None else min(tc.epochs, start_epoch + tc.stop_after)
    epoch_times: list[float] = []
    metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, stop_at):
        started = time.perf_counter()
        sums, lr = train_one_epoch(run, epoch)  # summed over ranks: loss, correct, samples
        train_time = time.perf_counter() - started
        val = validate(run, epoch)  # None: no validation set, or not due (val_every)
        epoch_time = time.perf_counter() - started
        epoch_times.append(epoch_time)
        improved = best.update(val, epoch + 1, validating=run.data.val_loader is not None)
        metrics = epoch_metrics(epoch + 1, sums, val, lr, improved, epoch_time, train_time)
        shown = f"val acc {val.accuracy:.4f} " if val is not None else ""
        log(
            f"epoch {epoch + 1}/{tc.epochs}: train loss {metrics['train_loss']:.4f}"
            f" acc {metrics['train_accuracy']:.4f}, {shown}({epoch_time:.1f} s)"
            + (" *best*" if improved and val is not None else "")
        )
        if ranks.main:
            save_epoch(run, metrics, best, improved)
            write_curves(run, log, first=len(epoch_times) == 1)
    curves = run.run_dir / CURVES_NAME
    return {
        "run_dir": str(run.run_dir),
        "best_checkpoint": str(run.run_dir / "best.pt"),
        "last_checkpoint": str(run.run_dir / "last.pt"),
        "curves": str(curves) if curves.is_file() else None,
        "best_val_accuracy": best.accuracy if best.accuracy >= 0 else None,
        "best_epoch": best.epoch,
        "epochs_done": stop_at if stop_at > start_epoch else start_epoch,
        "epochs_this_run": len(epoch_times),
        "epoch_time_s": epoch_times,
        "last": metrics,
    }


class Data(NamedTuple):
    """The samples of a run and their loaders (``val_*`` None without validation)."""

    train_part: EventDataset
    val_part: EventDataset | None
    train_loader: DataLoader
    val_loader: DataLoader | None


@dataclass
class Run:
    """What the epoch loop works with, set up once by ``_set_up``."""

    tc: TrainConfig
    config: ModelConfig
    device: torch.device
    ranks: Distributed
    run_dir: Path
    data: Data
    model: nn.Module
    net: nn.Module  # the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    lr_at: Callable[[int], float]  # iteration of the whole run -> learning rate


@dataclass
class Best:
    """The best epoch so far: the higher validation accuracy; at equal accuracy
    (common on 100 samples) the lower validation loss, i.e. the more settled model."""

    accuracy: float = -1.0
    loss: float = math.inf
    epoch: int = 0

    def update(self, val: EvalResult | None, epoch: int, *, validating: bool) -> bool:
        """Whether ``epoch`` (counted from 1) is the new best, and if so record it.
        Without a validation set every epoch is the best; an epoch that skipped
        validation (``val_every``) never is."""
        if not validating:
            improved = True
        elif val is None:
            improved = False
        else:
            improved = val.accuracy > self.accuracy or (
                val.accuracy == self.accuracy and val.loss < self.loss
            )
        if improved and val is not None:
            self.accuracy, self.loss = val.accuracy, val.loss
        if improved:
            self.epoch = epoch
        return improved


def _set_up(
    tc: TrainConfig, device: torch.device, ranks: Distributed, log: Callable[[str], None]
) -> tuple[Run, int, Best]:
    """Data, model, optimiser and schedule of a run, resumed or initialised as
    ``tc`` says; returns ``(run, epochs already done, best so far)``."""
    config = tc.model_config()
    run_dir = tc.run_dir(config)
    data = _data(tc, config, device, ranks, run_dir, log)
    if tc.amp and device.type != "cuda":
        log("--amp: bf16 autocast is used on CUDA only (slower on these CPUs); training in float32")

    torch.manual_seed(tc.seed)
    model = build_network(config).to(device)
    optimizer = make_optimizer(model, tc)
    start_epoch, best = 0, Best()
    last_path = run_dir / "last.pt"
    if tc.resume and last_path.is_file():
        start_epoch, best = _resume(last_path, tc, config, model, optimizer)
        log(f"resumed from {last_path}: {start_epoch} epochs done, best val {best.accuracy:.4f}")
    elif tc.resume:
        log(f"nothing to resume in {run_dir}: starting afresh")
    if tc.init and start_epoch == 0:
        model.load_state_dict(initial_weights(tc.init, config))
        log(f"initialised from {tc.init}")
    net = model
    if ranks.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=device_ids)
    if ranks.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        run_info = {"train": tc.to_dict(), "model": config.to_dict()}
        (run_dir / "run.json").write_text(json.dumps(run_info, indent=1))

    per_epoch = len(data.train_loader)
    lr_at = functools.partial(
        cosine_lr,
        tc,
        iterations=tc.epochs * per_epoch,
        warmup=max(1, int(tc.warmup_epochs * per_epoch)),
    )
    run = Run(tc, config, device, ranks, run_dir, data, model, net, optimizer, lr_at)
    return run, start_epoch, best


def _data(
    tc: TrainConfig,
    config: ModelConfig,
    device: torch.device,
    ranks: Distributed,
    run_dir: Path,
    log: Callable[[str], None],
) -> Data:
    """Random crops of the train part (or its whole samples, cached), whole val
    samples from the clip cache, and their loaders; logs what the run trains on."""
    workers = default_workers(int(os.environ.get("LOCAL_WORLD_SIZE", ranks.world)))
    workers = tc.workers if tc.workers is not None else workers
    dataset = open_events(tc.dataset, tc.root, "train")
    if len(dataset.class_names) != config.num_classes:
        raise ValueError(
            f"config {config.name!r} has {config.num_classes} classes, "
            f"{tc.dataset} has {len(dataset.class_names)}"
        )
    train_part, val_part = split_parts(dataset, tc.split_spec)
    cache_kw = dict(cache_dir=tc.cache_dir, workers=workers, log=log)
    train_set = _training_clips(tc, config, train_part, ranks, cache_kw)
    val_set = None
    if val_part is not None:
        val_set = _cached_by_rank0(val_part, config, f"{tc.dataset}-val", ranks, cache_kw)
    shard = dict(pin_memory=device.type == "cuda", rank=ranks.rank, world=ranks.world)
    collate = {"collate_fn": collate_stream_clips} if tc.stream_training else {}
    train_loader = clip_loader(
        train_set,
        batch_size=tc.batch_size,
        train=True,
        seed=tc.seed,
        workers=workers,
        **shard,
        **collate,
    )
    val_loader = None
    if val_set is not None:
        val_loader = clip_loader(
            val_set, batch_size=tc.eval_batch_size, train=False, workers=0, **shard
        )
    log(
        f"{tc.dataset}: {len(train_part)} train / {len(val_part) if val_part else 0} val samples;"
        f" config {config.name} T={config.compression.steps} hop {config.compression.step_us} µs"
        f" mode {config.compression.mode} K={config.levels}; {device}, world {ranks.world},"
        f" workers {workers}; run folder {run_dir}"
    )
    return Data(train_part, val_part, train_loader, val_loader)


def _training_clips(
    tc: TrainConfig,
    config: ModelConfig,
    train_part: EventDataset,
    ranks: Distributed,
    cache_kw: dict[str, Any],
) -> Dataset:
    """Stream-aware crops (``stream_context`` > 0), random crops, or (``random_crop``
    off) the whole samples from the clip cache."""
    if tc.random_crop and tc.stream_context > 0:
        return StreamCropClips(
            train_part,
            config.compression,
            tc.crop_us,
            probability=tc.stream_context,
            context_us=tc.stream_context_us,
            gap_us=tc.stream_gap_us,
            random_phase=tc.stream_phase,
            seed=tc.seed,
        )
    if tc.random_crop:
        augment = None if tc.augment is None else EventAugment.from_dict(tc.augment)
        return RandomCropClips(
            train_part, config.compression, tc.crop_us, seed=tc.seed, augment=augment
        )
    return _cached_by_rank0(train_part, config, f"{tc.dataset}-train", ranks, cache_kw)


def train_one_epoch(run: Run, epoch: int) -> tuple[torch.Tensor, float]:
    """One pass over the training loader (``epoch`` counted from 0); returns the
    ``[loss sum, correct, samples]`` of its clips, summed over ranks, and the last lr."""
    tc, device, loader, optimizer = run.tc, run.device, run.data.train_loader, run.optimizer
    per_epoch = len(loader)
    loader.sampler.set_epoch(epoch)
    torch.manual_seed(tc.seed * 1_000_003 + epoch * 7_919 + run.ranks.rank)  # dropout
    run.net.train()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct, samples
    progress = Progress(per_epoch, f"epoch {epoch + 1}/{tc.epochs}", run.ranks.main)
    for i, batch in enumerate(loader):
        lr = run.lr_at(epoch * per_epoch + i)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = batch.to(device, non_blocking=True)
        with autocast_for(device, tc.amp):
            logits = run.net(batch.clips)
        if isinstance(batch, StreamClipBatch):
            clip_logits, loss = stream_loss(logits, batch, tc.stream_loss)
        else:
            clip_logits = mean_readout(logits, batch.steps)
            loss = F.cross_entropy(clip_logits, batch.labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), tc.grad_clip)
        optimizer.step()
        n = len(batch.labels)
        correct = (clip_logits.argmax(1) == batch.labels).sum()
        sums += torch.stack([loss.detach().double() * n, correct.double(), torch.tensor(n)])
        if run.ranks.main and (i % 10 == 0 or i + 1 == per_epoch):
            progress.update(i + 1, loss=float(sums[0] / sums[2]), lr=lr)
    if run.ranks.world > 1:
        import torch.distributed as dist

        dist.all_reduce(sums)
    return sums, lr


def validate(run: Run, epoch: int) -> EvalResult | None:
    """The validation counts after ``epoch`` (counted from 0); None without a
    validation set or when ``val_every`` skips this epoch (the last one never is)."""
    tc = run.tc
    due = (epoch + 1) % tc.val_every == 0 or epoch + 1 == tc.epochs
    if run.data.val_loader is None or not due:
        return None
    return evaluate(
        run.model,
        run.data.val_loader,
        run.config.num_classes,
        device=run.device,
        amp=tc.amp,
        distributed=run.ranks.world > 1,
    )


def epoch_metrics(
    epoch: int,
    sums: torch.Tensor,
    val: EvalResult | None,
    lr: float,
    improved: bool,
    epoch_time: float,
    train_time: float,
) -> dict[str, Any]:
    """One line of ``metrics.jsonl`` (``epoch`` counted from 1)."""
    loss_sum, correct_sum, seen = (float(v) for v in sums)
    return {
        "epoch": epoch,
        "train_loss": loss_sum / max(seen, 1),
        "train_accuracy": correct_sum / max(seen, 1),
        "val_loss": val.loss if val is not None else None,
        "val_accuracy": val.accuracy if val is not None else None,
        "epoch_time_s": epoch_time,
        "train_time_s": train_time,
        "train_samples_per_s": seen / train_time if train_time > 0 else None,
        "lr": lr,
        "best": improved,
    }


def save_epoch(run: Run, metrics: dict[str, Any], best: Best, improved: bool) -> None:
    """``last.pt`` (with the optimiser state), ``best.pt`` when ``improved``, and
    the epoch's line in ``metrics.jsonl``."""
    extra = _extra(run.tc, metrics["epoch"], metrics, best, run.data)
    last_extra = {**extra, "kind": "last", "optimizer": run.optimizer.state_dict()}
    save_checkpoint(run.run_dir / "last.pt", run.model, run.config, extra=last_extra)
    if improved:
        best_extra = {**extra, "kind": "best"}
        save_checkpoint(run.run_dir / "best.pt", run.model, run.config, extra=best_extra)
    with open(run.run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(metrics) + "\n")


def write_curves(run: Run, log: Callable[[str], None], *, first: bool) -> None:
    """The run's loss and accuracy curves so far as ``curves.png`` beside its
    checkpoints (said where at the ``first`` epoch); a failure is logged, not fatal."""
    from models.training_curves import plot_curves, read_metrics

    path = run.run_dir / CURVES_NAME
    title = f"{run.run_dir.name}: {run.tc.dataset}, config {run.config.name}"
    try:
        plot_curves(read_metrics(run.run_dir / "metrics.jsonl"), path, title)
    except (ImportError, OSError, ValueError) as error:
        log(f"warning: no training curves ({type(error).__name__}: {error})")
        return
    if first:
        log(f"loss and accuracy curves: {path} (redrawn after every epoch)")


def scored_readout(logits: torch.Tensor, first: torch.Tensor, steps: torch.Tensor):
    """``[T, B, C]`` readout -> ``([B, C]`` mean over steps ``first[b] .. steps[b] - 1``,
    ``[T, B]`` float mask of those steps)."""
    t = torch.arange(logits.shape[0], device=logits.device)
    mask = ((t[:, None] >= first[None, :]) & (t[:, None] < steps[None, :])).to(torch.float32)
    total = (logits.float() * mask[..., None]).sum(0)
    return total / mask.sum(0).clamp(min=1)[:, None], mask


def stream_loss(
    logits: torch.Tensor, batch: StreamClipBatch, kind: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(clip logits [B, C], loss)`` of stream-aware clips: only the steps from the
    target's onset count (the context before it is another sample's). ``mean``: the
    cross-entropy of their mean readout (the clip objective); ``each``: the mean
    cross-entropy of every such step's own readout (every hop's prediction)."""
    clip_logits, mask = scored_readout(logits, batch.first, batch.steps)
    if kind == "mean":
        return clip_logits, F.cross_entropy(clip_logits, batch.labels)
    steps, size, classes = logits.shape
    labels = batch.labels[None, :].expand(steps, size).reshape(-1)
    per_step = F.cross_entropy(logits.float().reshape(-1, classes), labels, reduction="none")
    per_clip = (per_step.view(steps, size) * mask).sum(0) / mask.sum(0).clamp(min=1)
    return clip_logits, per_clip.mean()


def initial_weights(path: str | os.PathLike, config: ModelConfig) -> dict[str, torch.Tensor]:
    """The weights of checkpoint ``path`` for a run of ``config`` (``--init``): the
    network must be the same; the readout EMA, which no weight depends on, may differ."""
    model, found, _ = load_checkpoint(path)
    diffs = config_differences(
        found.with_changes(stream_ema_tau_us=config.stream_ema_tau_us), config
    )
    if diffs:
        raise CheckpointError(path, "--init: not this run's network: " + "; ".join(diffs))
    return model.state_dict()


def _cached_by_rank0(samples, config: ModelConfig, name: str, ranks: Distributed, cache_kw):
    """Rank 0 builds the clip cache entry while the others wait, then all open it."""
    if ranks.world > 1 and not ranks.main:
        import torch.distributed as dist

        dist.barrier()
        return cached_clips(samples, config.compression, "whole", name=name, **cache_kw)
    clips = cached_clips(samples, config.compression, "whole", name=name, **cache_kw)
    if ranks.world > 1:
        import torch.distributed as dist

        dist.barrier()
    return clips


def _extra(
    tc: TrainConfig, epochs_done: int, metrics: dict[str, Any], best: Best, data: Data
) -> dict[str, Any]:
    """Training metadata kept in every checkpoint (plain data only)."""
    return {
        "dataset": tc.dataset,
        "root": str(tc.root),
        "epoch": epochs_done,
        "epochs": tc.epochs,
        "seed": tc.seed,
        "split": tc.split_spec.to_dict(),
        "crop_us": list(tc.crop_us) if tc.crop_us else None,
        "random_crop": tc.random_crop,
        "train_samples": len(data.train_part),
        "val_samples": len(data.val_part) if data.val_part is not None else 0,
        "val_accuracy": metrics["val_accuracy"],
        "val_loss": metrics["val_loss"],
        "train_accuracy": metrics["train_accuracy"],
        "train_loss": metrics["train_loss"],
        "best_val_accuracy": best.accuracy if best.accuracy >= 0 else None,
        "best_val_loss": best.loss if math.isfinite(best.loss) else None,
        "best_epoch": best.epoch,
        "val_clips": "whole",
        **({"stream_training": tc.stream_training} if tc.stream_training else {}),
        **({"init_sha256": _sha256(tc.init)} if tc.init else {}),
        "train_config": tc.to_dict(),
        "torch": str(torch.__version__),
    }


@functools.cache
def _sha256(path: str | os.PathLike) -> str:
    """Of the ``--init`` checkpoint: read once, not at every epoch's checkpoint."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _resume(
    path: Path, tc: TrainConfig, config: ModelConfig, model: nn.Module, optimizer
) -> tuple[int, Best]:
    """Load ``last.pt`` into ``model`` and ``optimizer``; refuse a different setup.
    Returns ``(epochs done, best so far)``."""
    saved, _, extra = load_checkpoint(path, map_location="cpu", expected_config=config)
    before = dict(extra.get("train_config") or {})
    now = tc.to_dict()
    diffs = [
        f"{k}: {before.get(k)!r} -> {now.get(k)!r}"
        for k in sorted(set(before) | set(now))
        if k not in RESUMABLE_CHANGES and before.get(k) != now.get(k)
    ]
    if diffs:
        raise CheckpointError(path, "cannot resume with a different setup: " + "; ".join(diffs))
    model.load_state_dict(saved.state_dict())
    if "optimizer" in extra:
        optimizer.load_state_dict(extra["optimizer"])
    accuracy, loss = extra.get("best_val_accuracy"), extra.get("best_val_loss")
    best = Best(
        -1.0 if accuracy is None else float(accuracy),
        math.inf if loss is None else float(loss),
        int(extra.get("best_epoch", 0)),
    )
    return int(extra["epoch"]), best
