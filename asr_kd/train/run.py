"""Wire a training run from its typed settings (``asr_kd.bin.train`` calls ``run_training(settings)``).

The settings come from ``asr_kd.train.cli.settings_from_args`` (``asr_kd.train.settings.TrainingSettings``).

Order of events (every rank):
 1. process group (torchrun env) and logging (``exp_dir/log/train-rank<r>.log``);
 2. seed python/numpy/torch with ``--seed`` (identical model init on all ranks);
 3. tokenizer, model config from ``--encoder/--model-size/--causal/--chunk-ms/...``;
    stale ``.tmp`` files of killed writers removed; with ``--resume``, the newest
    loadable checkpoint (unreadable ones skipped with a warning), whose model_config,
    bpe_sha256 and settings must match (``asr_kd.train.settings``) and whose run id
    is kept; without it, an exp dir holding another run's files is refused unless
    ``--overwrite`` (``asr_kd.train.expdir``), and a new run id is drawn;
 4. model (``--init-from`` loads weights only; ``--continue-from`` carries the
    full training state, ``asr_kd.train.carry``), loss computer
    (``loss_factory.build_loss_computer``), optimiser (``--optimizer``) + schedule;
 5. re-seed torch/python/numpy with ``seed + rank`` (dropout differs per rank);
 6. cuts: short utterances filtered (``asr_kd.data.filter_short_cuts``,
    count logged), data loaders (sampler state restored on resume);
 7. ``Trainer.fit``; then the main rank averages the last ``--avg`` epoch
    checkpoints into ``exp_dir/pretrained.pt``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from lhotse import CutSet

from asr_kd.data.datamodule import AsrDataModule, filter_short_cuts
from asr_kd.data.features import check_feature_config, feature_config_dict
from asr_kd.data.stats import estimate_feature_stats
from asr_kd.data.tokenizer import Tokenizer, file_sha256
from asr_kd.models import TransducerConfig, build_transducer, preset_config, preset_names
from asr_kd.models.zipformer import zipformer_config
from asr_kd.models.zipformer.config import check_chunk_divisibility, check_left_context
from asr_kd.train.carry import carry_training_state
from asr_kd.models.checkpoint import CheckpointError, load_checkpoint, save_averaged
from asr_kd.train.checkpoint import epoch_checkpoints, latest_checkpoint
from asr_kd.train.distributed import DistInfo, barrier, cleanup_distributed, setup_distributed
from asr_kd.train.expdir import claim_fresh_exp_dir, clean_stale_tmp, new_run_id, run_files
from asr_kd.train.loss_factory import build_loss_computer
from asr_kd.train.optim import WarmupDecaySchedule, build_optimizer
from asr_kd.train.settings import ModelSettings, RunSettings, TrainingSettings, check_resume_settings
from asr_kd.train.tracking import TensorBoardLogger
from asr_kd.train.trainer import Trainer

__all__ = ["build_model_config", "seed_everything", "run_training", "setup_logging", "resolve_amp"]

log = logging.getLogger(__name__)

#: seconds of audio (all ranks) that count as one batch in the adjusted batch count that drives the
#: Zipformer's schedules (``Trainer``: batch_idx_train * max_duration * world_size / REF_DURATION_S),
#: icefall's ``ref_duration``
REF_DURATION_S = 600.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record, not the stream of the
    first run: a later run in the same process (tests capturing stderr, notebooks that swap
    it) must not log into a stream that has since been closed."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property wins
        pass


def setup_logging(exp_dir: Optional[Path], rank: int, level: int = logging.INFO) -> None:
    """One stderr handler per process, and a log file per run: a second run in the same
    process (tests, notebooks) replaces the previous run's file handler with its own."""
    fmt = f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s"
    root = logging.getLogger()
    root.setLevel(level)
    if not any(getattr(h, "_asr_kd", None) == "stream" for h in root.handlers):
        h: logging.Handler = _CurrentStderrHandler()
        h.setFormatter(logging.Formatter(fmt))
        h._asr_kd = "stream"  # type: ignore[attr-defined]
        root.addHandler(h)
    for old in [h for h in root.handlers if getattr(h, "_asr_kd", None) == "file"]:
        root.removeHandler(old)
        old.close()
    if exp_dir is not None:
        (exp_dir / "log").mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(exp_dir / "log" / f"train-rank{rank}.log")
        fh.setFormatter(logging.Formatter(fmt))
        fh._asr_kd = "file"  # type: ignore[attr-defined]
        root.addHandler(fh)


def build_model_config(model: ModelSettings, vocab_size: int) -> TransducerConfig:
    """TransducerConfig for --encoder/--model-size/--causal/--chunk-ms/--left-context-ms/--dynamic-chunk/--dropout/
    --num-layers/--frontend-scale (``settings.model``) and the tokenizer's ``vocab_size``.

    One-line ValueErrors name the flag: a --model-size of the other encoder, --num-layers or
    --frontend-scale with --encoder zipformer (Conformer knobs), Zipformer chunk sizes or
    left contexts its downsampling factors do not allow.
    """
    encoder = model.encoder
    if model.preset not in preset_names(encoder):
        raise ValueError(f"--model-size {model.preset} is not a {encoder} size; --encoder {encoder} takes "
                         f"{'|'.join(preset_names(encoder))}")
    overrides: dict[str, Any] = {}
    if model.dropout is not None:
        overrides["dropout"] = float(model.dropout)
    if encoder == "zipformer":
        for flag, value in (("--num-layers", model.num_layers), ("--frontend-scale", model.frontend_scale)):
            if value is not None:
                raise ValueError(f"{flag} is a Conformer option; --encoder zipformer takes its depths and widths "
                                 f"from --model-size ({'|'.join(preset_names('zipformer'))})")
    if model.num_layers is not None:
        if model.num_layers < 1:
            raise ValueError(f"--num-layers must be >= 1, got {model.num_layers}")
        overrides["num_layers"] = int(model.num_layers)
    if model.frontend_scale not in (None, "sqrt-d"):
        overrides["frontend_scale"] = float(model.frontend_scale)
    if model.causal:
        if model.chunk_size is not None:
            overrides["chunk_sizes"] = tuple(model.chunk_size)
        if model.left_context is not None:
            overrides["left_contexts"] = tuple(model.left_context)
        dynamic = model.dynamic_chunk
        if dynamic is None:
            dynamic = len(model.chunk_size or ()) > 1 or len(model.left_context or ()) > 1
        overrides["dynamic_chunk"] = bool(dynamic)
        if encoder == "zipformer":
            _check_zipformer_chunks(model.preset, model.chunk_size or (), model.left_context or ())
    elif model.chunk_size is not None or model.left_context is not None or model.dynamic_chunk:
        log.warning("--chunk-ms/--left-context-ms/--dynamic-chunk are ignored for a full-context model "
                    "(--causal false)")
    role = "student" if model.causal else "teacher"
    cfg = preset_config(model.preset, role, vocab_size, encoder_type=encoder, **overrides)
    if model.frontend_scale == "sqrt-d":  # from the model's own width
        cfg.encoder.frontend_scale = math.sqrt(cfg.encoder.d_model)
    return cfg


def _check_zipformer_chunks(size: str, chunks: Sequence[int], lefts: Sequence[int]) -> None:
    """One-line ValueError naming --chunk-ms / --left-context-ms (in ms) when a stack's factor does not divide 2K / 2L."""
    factors = zipformer_config(size).downsampling_factors
    step = math.lcm(*factors) // math.gcd(math.lcm(*factors), 2)  # smallest K with every factor dividing 2K
    for k in chunks:
        try:
            check_chunk_divisibility(factors, k, -1, "")
        except ValueError:
            raise ValueError(f"--chunk-ms {k * 40}: --encoder zipformer needs chunk sizes that are multiples of "
                             f"{step * 40} ms ({step} encoder frames; -1: full context), so that every stack's "
                             f"downsampling factor {list(factors)} divides 2K") from None
    for lc in lefts:
        try:
            check_left_context(factors, lc, "")
        except ValueError:
            raise ValueError(f"--left-context-ms {lc * 40}: --encoder zipformer needs left contexts that are "
                             f"multiples of {step * 40} ms ({step} encoder frames; -1: unlimited), so that every "
                             f"stack's downsampling factor {list(factors)} divides 2L") from None


def resolve_amp(amp: str, device: torch.device) -> str:
    """--amp auto -> bf16 on CUDA with bf16 support, fp16 on other CUDA, none on CPU."""
    if amp != "auto":
        return amp
    if device.type != "cuda":
        return "none"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def _resume_checkpoint(run: RunSettings, exp_dir: Path) -> Optional[tuple[Path, dict[str, Any]]]:
    """(path, checkpoint) to resume from, or None for a fresh run.

    ``--resume`` without a file takes the newest loadable checkpoint (unreadable
    ones are skipped with a warning naming them); when the directory holds run
    files but none is loadable, it stops instead of starting from scratch over them.
    """
    if run.resume is None:
        return None
    if run.resume == "latest":
        path = latest_checkpoint(exp_dir)
        if path is None:
            if run_files(exp_dir):
                raise CheckpointError(f"--resume: no loadable checkpoint in {exp_dir} (see the warnings above "
                                      f"for each file); nothing was changed")
            log.warning("--resume: no checkpoint in %s; starting from scratch", exp_dir)
            return None
    else:
        path = Path(run.resume)
    log.info("resuming from %s", path)
    return path, load_checkpoint(path)


def _load_continue(run: RunSettings, model_cfg: TransducerConfig, bpe_sha: str) -> Optional[dict[str, Any]]:
    """The --continue-from checkpoint, checked against this run's model config and BPE model."""
    path = run.continue_from
    if not path:
        return None
    ck = load_checkpoint(path)
    if ck.get("model_config") != model_cfg.to_dict():
        raise ValueError(f"--continue-from {path}: its model_config differs from the one built from the flags; "
                         f"use the same --encoder/--model-size/--causal/--chunk-ms/--left-context-ms/--dropout/--num-layers "
                         f"as that run")
    if ck.get("bpe_sha256") != bpe_sha:
        raise ValueError(f"--continue-from {path} was trained with another BPE model than {run.bpe_model}")
    if not ck.get("epoch_done"):
        raise ValueError(f"--continue-from {path}: not an end-of-epoch checkpoint (use an epoch-<e>.pt)")
    return ck


def _load_cuts(path: str, what: str) -> CutSet:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what}: no such manifest {path}")
    return CutSet.from_file(path)


def run_training(settings: TrainingSettings) -> Optional[Path]:
    """Train as configured by ``settings``; returns exp_dir/pretrained.pt on the main rank (or None)."""
    run, record = settings.run, settings.record_dict()
    num_epochs = settings.trainer.num_epochs
    dist: DistInfo = setup_distributed(run.device)
    exp_dir = Path(settings.trainer.exp_dir)
    if dist.is_main:
        exp_dir.mkdir(parents=True, exist_ok=True)
    barrier()
    setup_logging(exp_dir, dist.rank)
    tb: Optional[TensorBoardLogger] = None
    try:
        log.info("rank %d/%d on %s; args: %s", dist.rank, dist.world_size, dist.device, record)
        seed_everything(run.seed)
        tokenizer = Tokenizer(run.bpe_model)
        bpe_sha = file_sha256(run.bpe_model)
        model_cfg = build_model_config(settings.model, tokenizer.vocab_size)
        if dist.is_main:
            clean_stale_tmp(exp_dir)
        resumed = _resume_checkpoint(run, exp_dir)
        ckpt = resumed[1] if resumed is not None else None
        epoch_offset = 0
        if resumed is None:
            if dist.is_main:
                claim_fresh_exp_dir(exp_dir, run.overwrite)
            run_id = new_run_id()
        else:
            run_id = str(ckpt.get("run_id") or new_run_id())
            epoch_offset = int(ckpt.get("epoch_offset", 0) or 0)
        cont = _load_continue(run, model_cfg, bpe_sha) if ckpt is None else None
        if cont is not None:
            epoch_offset = int(cont["epoch"])
        log.info("run id %s%s", run_id, f", epochs {epoch_offset + 1}..{epoch_offset + num_epochs}"
                 if epoch_offset else "")
        if ckpt is not None:
            if ckpt.get("model_config") != model_cfg.to_dict():
                raise ValueError(
                    f"--resume: the checkpoint's model_config {ckpt.get('model_config')} differs from the one "
                    f"built from the flags {model_cfg.to_dict()}; resume with the original flags"
                )
            if ckpt.get("bpe_sha256") != bpe_sha:
                raise ValueError(f"--resume: {run.bpe_model} is not the BPE model the checkpoint was trained with")
            check_resume_settings(ckpt, record, str(resumed[0]), allow_changed=run.allow_changed_settings)

        model = build_transducer(model_cfg)
        if run.init_from and ckpt is None:
            init = load_checkpoint(run.init_from)
            if init.get("bpe_sha256") not in (None, bpe_sha):
                raise ValueError(f"--init-from {run.init_from} was trained with another BPE model")
            if init.get("feature_config") is not None:
                check_feature_config(init["feature_config"], feature_config_dict(), f"--init-from {run.init_from}")
            model.load_state_dict(init["model"])
            log.info("initialised the model from %s", run.init_from)
        model.to(dist.device)
        n_params = sum(p.numel() for p in model.parameters())
        log.info("model: %s preset %s, causal=%s, %.2f M parameters, encoder %s", model_cfg.encoder_type,
                 settings.model.preset, settings.model.causal, n_params / 1e6, model_cfg.encoder)

        loss_computer = build_loss_computer(settings.loss, model, tokenizer, bpe_model=run.bpe_model,
                                            on_the_fly_feats=settings.data.on_the_fly_feats)
        optimizer = build_optimizer(list(model.parameters()) + list(loss_computer.parameters()), settings.optim)
        scheduler = WarmupDecaySchedule(optimizer, settings.optim)
        seed_everything(run.seed + dist.rank)

        data_cfg = dataclasses.replace(settings.data, return_clean=loss_computer.needs_clean_features)
        dm = AsrDataModule(data_cfg)
        enc = model.encoder

        def encoder_frames(t: int) -> int:
            return int(enc.output_lengths(torch.tensor([t]))[0])

        max_speed = max(data_cfg.speed_factors) if data_cfg.speed_perturb else 1.0
        kept: dict[str, Any] = {}
        train_cuts = filter_short_cuts(_load_cuts(run.cuts_train, "--cuts-train"), tokenizer,
                                       encoder_frames=encoder_frames, max_speed=max_speed,
                                       manifest=f"training manifest --cuts-train {run.cuts_train}",
                                       min_seconds=run.min_cut_duration, max_seconds=run.max_cut_duration,
                                       stats=kept)
        # audio of one epoch on this rank (speed perturbation adds copies of 1/f the length), for the ETA
        copies = 1.0 + (sum(1.0 / f for f in data_cfg.speed_factors) if data_cfg.speed_perturb else 0.0)
        epoch_audio_s = kept.get("kept_seconds", 0.0) * copies / dist.world_size
        if next(iter(train_cuts), None) is None:  # (a lazy set has no len())
            raise ValueError(f"--cuts-train {run.cuts_train}: no cuts left after filtering short utterances")
        if ckpt is None and cont is None and not run.init_from:
            # A fresh model: input normalisation from the training data (resume and
            # --init-from bring theirs in the state_dict).
            mean, std = estimate_feature_stats(train_cuts, on_the_fly=data_cfg.on_the_fly_feats)
            model.encoder.subsampling.set_feature_stats(mean, std)
        train_dl = dm.train_dataloader(train_cuts, sampler_state=ckpt.get("sampler") if ckpt else None)
        valid_dl = None
        if run.cuts_valid:
            valid_cuts = filter_short_cuts(_load_cuts(run.cuts_valid, "--cuts-valid"), tokenizer,
                                           encoder_frames=encoder_frames,
                                           manifest=f"validation manifest --cuts-valid {run.cuts_valid}")
            valid_dl = dm.valid_dataloader(valid_cuts)

        tb = TensorBoardLogger(exp_dir / "tensorboard", enabled=dist.is_main and run.tensorboard)
        meta = {
            "model_config": model_cfg.to_dict(),
            "feature_config": feature_config_dict(),
            "bpe_model": str(Path(run.bpe_model).resolve()),
            "bpe_sha256": bpe_sha,
            "args": record,
            "run_id": run_id,
            "epoch_offset": epoch_offset,
        }
        trainer_cfg = dataclasses.replace(
            settings.trainer, exp_dir=exp_dir, num_epochs=epoch_offset + num_epochs,
            amp=resolve_amp(settings.trainer.amp, dist.device), epoch_audio_s=epoch_audio_s,
            batch_count_scale=data_cfg.max_duration * dist.world_size / REF_DURATION_S,
        )
        trainer = Trainer(model, loss_computer, optimizer, scheduler, trainer_cfg, dist, sampler=dm.sampler,
                          checkpoint_meta=meta, tb=tb)
        if ckpt is not None:
            trainer.load_state_dict(ckpt)
            del ckpt
        elif cont is not None:
            carry_training_state(trainer, cont, str(run.continue_from))
            del cont
        trainer.fit(train_dl, valid_dl)

        out: Optional[Path] = None
        if dist.is_main and run.avg > 0:
            avg = min(run.avg, num_epochs)
            paths = epoch_checkpoints(exp_dir, epoch_offset + num_epochs, avg)
            out = save_averaged(paths, exp_dir / "pretrained.pt")
            log.info("wrote %s (average of %s)", out, [p.name for p in paths])
        barrier()
        return out
    finally:
        if tb is not None:
            tb.close()
        cleanup_distributed()
