"""The training loop: one step, validation, epochs, checkpoints, exact resume.

One training step (``Trainer.train_step``)::

    model.encoder.set_batch_count(n)                      # encoders with schedules (Zipformer), see below
    loss, info = loss_computer(model, batch, step)        # under autocast when AMP is on
    DDP: loss <- loss * frames * W / sum_ranks(frames)     # gradient mean = sum_all / frames_all
    if loss is non-finite on any rank: skip (no backward, no update)
    backward (GradScaler-scaled for fp16); unscale; g = clip_grad_norm_(params, max_norm)
    if g is non-finite: skip (fp16: the scaler's own overflow handling, not counted as bad)
    else: optimizer step
    zero grads; batch counters += 1; schedule.step_batch()

Scheduled quantities.  An encoder with ``set_batch_count`` (the Zipformer:
its bypass-scale minimum falls from 0.9 to 0.2 over 20k "batches") gets,
before every training step, icefall's duration-adjusted batch count
``n = batch_idx_train * batch_count_scale`` with ``batch_count_scale =
max_duration * world_size / 600`` (set by ``asr_kd.train.run``; 1.0 = the raw
count): batches of 600 s of audio in total count as one, so the schedule
follows the audio seen, not the batch size.  ``batch_idx_train`` is
restored on resume, so the schedule resumes exactly.

A skipped ("bad") batch is logged with its cut ids; ``max_bad_batches``
bad batches in a row stop training with a RuntimeError.  Bad-batch decisions
are identical on all ranks (the loss flag is all-reduced; gradients are
already synchronised when their norm is taken), so no rank steps alone.

Exact resume.  A checkpoint stores the model, optimiser, schedule, grad
scaler, loss-computer state, the sampler position (lhotse sampler state via
``asr_kd.data``) and the RNG states of every rank, taken right after the
step it follows.  A ``torch.utils.data.DataLoader`` draws one number from
the global torch RNG whenever an iteration starts, which would shift the
model's random stream on resume; the loop therefore gives loaders without
a ``generator`` their own (seeded from ``TrainerConfig.seed``), so the
global RNG is consumed only by the model (dropout, dynamic chunk draws) and
states can be restored right when the checkpoint is loaded.  Conditions for
bit-identical parameters: same hardware and thread count, same
cuts/config/world size, deterministic
kernels (CPU; on CUDA set ``CUBLAS_WORKSPACE_CONFIG`` and
``torch.use_deterministic_algorithms``), and data loading that does not
depend on worker timing (``asr_kd.data`` seeds augmentation per batch).
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from asr_kd.metrics.train_stats import update_train_stats
from asr_kd.atomic import atomic_torch_save
from asr_kd.models.checkpoint import CHECKPOINT_FORMAT
from asr_kd.train.checkpoint import get_rng_state, prune_checkpoints, set_rng_state
from asr_kd.train.distributed import DistInfo, all_gather_objects, all_reduce_sum, is_distributed
from asr_kd.train.eta import EtaMeter, format_duration
from asr_kd.train.loss_computer import LossComputer, optimizer_param_names
from asr_kd.train.optim import WarmupDecaySchedule
from asr_kd.train.tracking import MetricsTracker, TensorBoardLogger

__all__ = ["TrainerConfig", "StepModule", "StepResult", "Trainer", "BadBatchError"]

log = logging.getLogger(__name__)


class BadBatchError(RuntimeError):
    """Too many consecutive batches with a non-finite loss or gradient."""


@dataclass(frozen=True)
class TrainerConfig:
    """Loop options (the CLI flags of the same names).

    Attributes:
      exp_dir: where checkpoints and tensorboard logs go.
      num_epochs: last epoch to train (epochs are 1-based).
      max_grad_norm: clip the global gradient L2 norm (<= 0: no clipping).
      amp: "none" | "bf16" | "fp16"; ignored (with a warning) off CUDA. (The command line's "auto" is
        resolved for the device by ``asr_kd.train.run`` before the Trainer is built.)
      save_every_n: write checkpoint-<b>.pt every n batches (0: only epoch checkpoints).
      keep_last_k: batch checkpoints to keep (0: all).
      log_interval: batches between tensorboard/log lines.
      max_bad_batches: abort after this many consecutive skipped batches.
      find_unused_parameters: passed to DistributedDataParallel.
      progress: tqdm progress bar on the main rank.
      seed: seed of the data loaders' own generators (see module docstring).
      epoch_audio_s: seconds of training audio one epoch gives this rank (0: unknown); with
        it the log lines carry an ETA of the epoch and of the run (``asr_kd.train.eta``).
      batch_count_scale: adjusted batch count per batch trained, fed to ``model.encoder.set_batch_count``
        when the encoder has it (module docstring); 1.0 = the raw count.
    """

    exp_dir: Path
    num_epochs: int
    max_grad_norm: float = 5.0
    amp: str = "none"
    save_every_n: int = 0
    keep_last_k: int = 5
    log_interval: int = 50
    max_bad_batches: int = 10
    find_unused_parameters: bool = False
    progress: bool = True
    seed: int = 0
    epoch_audio_s: float = 0.0
    batch_count_scale: float = 1.0


@dataclass
class StepResult:
    """Outcome of one batch: info (loss computer floats), grad_norm, lr, skipped, overflow."""

    info: dict[str, float]
    grad_norm: float
    lr: float
    skipped: bool
    overflow: bool = False


class StepModule(nn.Module):
    """model + the loss computer's extra trainable parameters, as one module for DDP.

    ``forward(batch, step)`` returns ``loss_computer(model, batch, step)``.
    The loss computer itself is not registered as a submodule (a frozen
    teacher inside it must stay out of DDP and out of checkpoints).
    """

    def __init__(self, model: nn.Module, loss_computer: LossComputer) -> None:
        super().__init__()
        self.model = model
        own = {id(p) for p in model.parameters()}
        extra = [p for p in loss_computer.parameters() if p.requires_grad and id(p) not in own]
        self.extra = nn.ParameterList(extra)
        object.__setattr__(self, "loss_computer", loss_computer)

    def forward(self, batch: dict[str, Any], step: int) -> tuple[Tensor, dict[str, float]]:
        return self.loss_computer(self.model, batch, step)


def _trainable(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    seen, out = set(), []
    for p in params:
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


class Trainer:
    """Runs epochs of ``train_step`` with validation, logging and checkpoints.

    Args:
      model: the (unwrapped) model, already on ``dist.device``.
      loss_computer: a ``asr_kd.train.loss_computer.LossComputer``.
      optimizer: built over ``model`` + the loss computer's ``parameters()``.
      scheduler: WarmupDecaySchedule of ``optimizer``.
      cfg: TrainerConfig.
      dist: DistInfo of this process.
      sampler: the training sampler (``set_epoch``, ``state_dict``), or None.
      checkpoint_meta: stored in every checkpoint (model_config, feature_config,
        bpe_model, bpe_sha256, args).
      tb: tensorboard logger (main rank), or None.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_computer: LossComputer,
        optimizer: torch.optim.Optimizer,
        scheduler: WarmupDecaySchedule,
        cfg: TrainerConfig,
        dist: DistInfo,
        sampler: Any = None,
        checkpoint_meta: Optional[dict[str, Any]] = None,
        tb: Optional[TensorBoardLogger] = None,
    ) -> None:
        self.model = model
        self.loss_computer = loss_computer
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.cfg = cfg
        self.eta = EtaMeter(cfg.epoch_audio_s)
        self.dist = dist
        self.sampler = sampler
        self.meta = dict(checkpoint_meta or {})
        self.tb = tb or TensorBoardLogger(None)
        self.device = dist.device
        self.step_module = StepModule(model, loss_computer)
        self.params = _trainable(self.step_module.parameters())
        self._check_optimizer_covers_params()
        if is_distributed():
            self.ddp: nn.Module = DistributedDataParallel(
                self.step_module,
                device_ids=[self.device] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.find_unused_parameters,
            )
        else:
            self.ddp = self.step_module
        amp = cfg.amp
        if amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"--amp must be none, bf16 or fp16, got {amp!r}")
        if amp != "none" and self.device.type != "cuda":
            log.warning("AMP (%s) is only used on CUDA; training in float32 on %s", amp, self.device)
            amp = "none"
        self.amp = amp
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=(amp == "fp16"))
        self.epoch = 1
        self.batch_idx = 0  # batches trained in the current epoch
        self.batch_idx_train = 0  # batches trained in total
        self.bad_in_row = 0
        self.epoch_tracker = MetricsTracker()  # this rank's train-loss sums of the current epoch

    # ------------------------------------------------------------------ one step

    def _check_optimizer_covers_params(self) -> None:
        in_opt = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        missing = [n for n, p in self.step_module.named_parameters() if p.requires_grad and id(p) not in in_opt]
        if missing:
            raise ValueError(f"trainable parameters missing from the optimiser: {missing[:5]}")

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _set_train_mode(self, mode: bool) -> None:
        self.model.train(mode)
        self.loss_computer.train(mode)

    def _set_batch_count(self) -> None:
        """Feed the adjusted batch count (module docstring) to an encoder with schedules."""
        fn = getattr(getattr(self.model, "encoder", None), "set_batch_count", None)
        if callable(fn):
            # n = batches trained so far (all epochs) x (max_duration * world_size / 600 s)
            fn(self.batch_idx_train * self.cfg.batch_count_scale)

    def train_step(self, batch: dict[str, Any]) -> StepResult:
        """One batch (see module docstring); the model must be in train mode."""
        step = self.batch_idx_train
        lr = self.scheduler.get_lr()
        self._set_batch_count()
        with self._autocast():
            loss, info = self.ddp(batch, step)
        frames = float(info["frames"])
        finite = local_finite = bool(torch.isfinite(loss.detach()).all())
        scale = 1.0
        if is_distributed():
            t = torch.tensor([frames, 0.0 if finite else 1.0], dtype=torch.float64, device=self.device)
            all_reduce_sum(t)
            total_frames, n_bad = t.tolist()
            scale = frames * self.dist.world_size / max(total_frames, 1.0)
            finite = n_bad == 0
        grad_norm = math.nan
        overflow = False
        stepped = False
        if finite:
            self.scaler.scale(loss * scale).backward()
            self.scaler.unscale_(self.optimizer)
            max_norm = self.cfg.max_grad_norm if self.cfg.max_grad_norm > 0 else math.inf
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
            if math.isfinite(grad_norm):
                self.scaler.step(self.optimizer)
                self.scaler.update()
                stepped = True
            elif self.scaler.is_enabled():
                self.scaler.step(self.optimizer)  # skips the update: inf/nan found by unscale_
                self.scaler.update()  # and lowers the loss scale
                overflow = True
        self.optimizer.zero_grad(set_to_none=True)
        skipped = not stepped and not overflow
        if skipped:
            self.bad_in_row += 1
            what = "gradient" if finite else ("loss" if not local_finite else "loss on another rank")
            log.warning(
                "rank %d: skipping batch %d (epoch %d): non-finite %s (loss=%s, grad_norm=%s), "
                "%d in a row; cuts: %s",
                self.dist.rank, step, self.epoch, what,
                info.get("loss"), grad_norm, self.bad_in_row, list(batch.get("cut_ids", []))[:20],
            )
            if self.bad_in_row >= self.cfg.max_bad_batches:
                raise BadBatchError(
                    f"{self.bad_in_row} consecutive batches had a non-finite loss or gradient "
                    f"(last: batch {step} of epoch {self.epoch}, cuts {list(batch.get('cut_ids', []))[:20]}). "
                    "Training diverged or the data is broken: lower --lr, check --amp, inspect these cuts, "
                    "or raise --max-bad-batches."
                )
        else:
            self.bad_in_row = 0
        self.batch_idx_train += 1
        self.scheduler.step_batch()
        return StepResult(info=dict(info), grad_norm=grad_norm, lr=lr, skipped=skipped, overflow=overflow)

    # ------------------------------------------------------------------ validation

    @torch.no_grad()
    def validate(self, loader: Iterable[dict[str, Any]]) -> dict[str, float]:
        """Frame-weighted averages of the loss computer's info over ``loader``, summed over ranks."""
        self._set_train_mode(False)
        _own_generator(loader, self.cfg.seed + 1)
        tracker = MetricsTracker()
        try:
            for batch in loader:
                with self._autocast():
                    loss, info = self.loss_computer(self.model, batch, self.batch_idx_train)
                if torch.isfinite(loss).all():
                    tracker.update(info)
                else:
                    log.warning("rank %d: non-finite validation loss on cuts %s", self.dist.rank,
                                list(batch.get("cut_ids", []))[:20])
        finally:
            self._set_train_mode(True)
        return tracker.reduce(self.device).averages()

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self, epoch_done: bool = False, valid_loss: Optional[float] = None,
                   rng: Optional[list[Any]] = None, metrics: Optional[list[Any]] = None) -> dict[str, Any]:
        """Everything an exact resume needs (``asr_kd.train.checkpoint`` lists the keys).

        ``rng``/``metrics``: per-rank RNG states and epoch train-loss sums (default: this rank's only).
        """
        return {
            "format_version": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            **{k: self.meta.get(k) for k in ("model_config", "feature_config", "bpe_model", "bpe_sha256")},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "grad_scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "loss_computer": self.loss_computer.state_dict(),
            "sampler": self.sampler.state_dict() if self.sampler is not None else None,
            "rng": rng if rng is not None else [get_rng_state()],
            "epoch": self.epoch,
            "batch_idx": self.batch_idx,
            "batch_idx_train": self.batch_idx_train,
            "epoch_done": epoch_done,
            "bad_batches": self.bad_in_row,
            "valid_loss": valid_loss,
            "args": self.meta.get("args", {}),
            "run_id": self.meta.get("run_id"),
            "epoch_offset": int(self.meta.get("epoch_offset", 0) or 0),
            "epoch_metrics": metrics if metrics is not None else [self.epoch_tracker.state_dict()],
            "param_names": optimizer_param_names(self.optimizer, self.model, self.loss_computer),
        }

    def save(self, name: str, epoch_done: bool = False, valid_loss: Optional[float] = None,
             train_metrics: Optional[dict[str, float]] = None) -> Optional[Path]:
        """Collective: gathers every rank's RNG state and loss sums; the main rank writes ``exp_dir/name``.

        ``train_metrics`` (epoch checkpoints): the epoch's frame-weighted train averages, over all ranks.
        """
        rng = all_gather_objects(get_rng_state())
        metrics = all_gather_objects(self.epoch_tracker.state_dict())
        if not self.dist.is_main:
            return None
        sd = self.state_dict(epoch_done, valid_loss, rng, metrics)
        if train_metrics is not None:
            sd["train_metrics"] = dict(train_metrics)
        path = atomic_torch_save(sd, Path(self.cfg.exp_dir) / name)
        log.info("saved %s", path)
        return path

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Restore everything but the sampler (pass ``ckpt["sampler"]`` to the data module)."""
        if ckpt.get("format_version") != CHECKPOINT_FORMAT:
            raise RuntimeError(
                f"checkpoint format {ckpt.get('format_version')} != {CHECKPOINT_FORMAT} (the format this version reads)"
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler.is_enabled() and ckpt.get("grad_scaler"):
            self.scaler.load_state_dict(ckpt["grad_scaler"])
        if ckpt.get("loss_computer") is not None:
            self.loss_computer.load_state_dict(ckpt["loss_computer"])
        self.batch_idx_train = int(ckpt["batch_idx_train"])
        self.bad_in_row = int(ckpt.get("bad_batches", 0))
        rngs = ckpt["rng"]
        rng = rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0]
        if len(rngs) != self.dist.world_size:
            log.warning("checkpoint has RNG states of %d ranks, running %d: resume is not exact",
                        len(rngs), self.dist.world_size)
        if ckpt.get("epoch_done"):
            self.epoch, self.batch_idx = int(ckpt["epoch"]) + 1, 0
            self.epoch_tracker = MetricsTracker()
        else:
            self.epoch, self.batch_idx = int(ckpt["epoch"]), int(ckpt["batch_idx"])
            per_rank = ckpt.get("epoch_metrics") or []
            if per_rank:
                state = per_rank[self.dist.rank] if self.dist.rank < len(per_rank) else per_rank[0]
                self.epoch_tracker = MetricsTracker.from_state_dict(state)
            else:
                log.warning("checkpoint has no running train-loss sums (older version): the loss of "
                            "epoch %d covers only the batches after the resume", self.epoch)
        set_rng_state(rng)

    # ------------------------------------------------------------------ epochs

    def _log_interval(self, tracker: MetricsTracker, res: StepResult) -> None:
        avg = tracker.averages()
        step = self.batch_idx_train
        self.tb.scalars("train", avg, step)
        self.tb.scalars("train", {"lr": res.lr, "grad_norm": res.grad_norm}, step)
        if self.scaler.is_enabled():
            self.tb.scalars("train", {"grad_scale": float(self.scaler.get_scale())}, step)
        if self.dist.is_main:
            eta = self.eta.estimate(self.cfg.num_epochs - self.epoch)
            log.info("epoch %d batch %d (total %d): %s, lr=%.3g, grad_norm=%.3g%s",
                     self.epoch, self.batch_idx, step, tracker, res.lr, res.grad_norm,
                     "" if eta is None else f"; ETA epoch {format_duration(eta[0])}, run {format_duration(eta[1])}")

    def train_one_epoch(self, loader: Iterable[dict[str, Any]]) -> MetricsTracker:
        """Train over the rest of the current epoch of ``loader``; returns the epoch's local tracker."""
        self._set_train_mode(True)
        _own_generator(loader, self.cfg.seed)
        it = iter(loader)
        epoch_tracker, interval = self.epoch_tracker, MetricsTracker()
        bar = tqdm(desc=f"epoch {self.epoch}", initial=self.batch_idx, unit="batch", dynamic_ncols=True,
                   disable=not (self.cfg.progress and self.dist.is_main))
        self.eta.start_epoch(self.batch_idx)
        try:
            for batch in it:
                res = self.train_step(batch)
                lens = batch.get("feature_lens") if isinstance(batch, dict) else None
                if lens is not None:
                    self.eta.update(float(torch.as_tensor(lens).sum()) / 100.0)  # 10 ms feature frames
                self.batch_idx += 1
                bar.update(1)
                if not res.skipped:
                    epoch_tracker.update(res.info)
                    interval.update(res.info)
                    bar.set_postfix(loss=f"{res.info.get('loss', math.nan):.4g}", lr=f"{res.lr:.2e}")
                if self.cfg.log_interval > 0 and self.batch_idx_train % self.cfg.log_interval == 0:
                    self._log_interval(interval, res)
                    interval = MetricsTracker()
                if self.cfg.save_every_n > 0 and self.batch_idx_train % self.cfg.save_every_n == 0:
                    self.save(f"checkpoint-{self.batch_idx_train}.pt")
                    if self.dist.is_main:
                        prune_checkpoints(self.cfg.exp_dir, self.cfg.keep_last_k, run_id=self.meta.get("run_id"))
        finally:
            bar.close()
        return epoch_tracker

    def _write_train_stats(self, train_avg: dict[str, float], valid_avg: dict[str, float], frames: float) -> None:
        """Main rank: this epoch's means into ``exp_dir/train_stats.json`` (``asr_kd.metrics.train_stats``).

        A failed write is logged, never fatal: the checkpoint already holds the same ``train_metrics``.
        """
        try:
            update_train_stats(self.cfg.exp_dir, self.epoch, train_avg, valid_avg, run_id=self.meta.get("run_id"),
                               args=self.meta.get("args") or {}, frames=frames,
                               batch_idx_train=self.batch_idx_train)
        except OSError as e:
            log.warning("could not write %s/train_stats.json: %s", self.cfg.exp_dir, e)

    def fit(self, train_loader: Iterable[dict[str, Any]], valid_loader: Optional[Iterable[dict[str, Any]]] = None,
            ) -> list[Path]:
        """Epochs ``self.epoch .. cfg.num_epochs``; returns the epoch checkpoint paths written (main rank).

        After each epoch checkpoint the main rank also rewrites ``exp_dir/train_stats.json``
        (the epoch's train/valid means; format in ``asr_kd.metrics.train_stats``).
        """
        written: list[Path] = []
        while self.epoch <= self.cfg.num_epochs:
            if self.sampler is not None:
                self.sampler.set_epoch(self.epoch)
            train_tracker = self.train_one_epoch(train_loader)
            reduced = train_tracker.reduce(self.device)
            train_avg = reduced.averages()
            valid_avg = self.validate(valid_loader) if valid_loader is not None else {}
            self.tb.scalars("epoch_train", train_avg, self.epoch)
            self.tb.scalars("valid", valid_avg, self.epoch)
            self.tb.flush()
            if self.dist.is_main:
                log.info("epoch %d done: train %s; valid %s", self.epoch,
                         _fmt(train_avg), _fmt(valid_avg) if valid_avg else "(no validation set)")
            self.scheduler.step_epoch()
            self.epoch_tracker = MetricsTracker()
            path = self.save(f"epoch-{self.epoch}.pt", epoch_done=True, valid_loss=valid_avg.get("loss"),
                             train_metrics=train_avg)
            if path is not None:
                written.append(path)
                self._write_train_stats(train_avg, valid_avg, reduced.frames)
            self.epoch += 1
            self.batch_idx = 0
        return written


def _own_generator(loader: Any, seed: int) -> None:
    """Give a DataLoader without a generator its own, so iterating it leaves the global RNG alone."""
    if isinstance(loader, torch.utils.data.DataLoader) and loader.generator is None:
        loader.generator = torch.Generator().manual_seed(seed)


def _fmt(d: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in d.items())
