"""The typed settings of a training run, the record of them kept in checkpoints, and the checks of ``--resume``.

:class:`TrainingSettings` is everything ``asr_kd.train.run.run_training``
needs: the typed configurations of each part (model flags, optimiser, data,
loop, loss) and the run control (resume, overwrite, init-from, continue-from,
...).  ``asr_kd.train.cli.settings_from_args`` builds it from the command
line; the argparse namespace goes no further.

Every checkpoint (and ``train_stats.json``) stores the command-line arguments
as a flat dictionary (``args``, :attr:`TrainingSettings.record`: one entry per
flag, ``vars(args)`` made checkpoint-safe).  A resume compares them with the
new command line:

* settings in :data:`SAFE_TO_CHANGE` may differ (they do not change what is
  learned: paths of the run itself, logging, workers, checkpoint cadence,
  device choice, the number of epochs when raised); differences are logged;
* any other difference (learning rate, loss weights, distillation settings,
  data, seed, ...) stops the resume with one line listing every difference,
  unless ``--allow-changed-settings`` is given (then each is logged as a warning);
* a ``--num-epochs`` below the epoch the checkpoint was written in is refused:
  training would stop at once and ``pretrained.pt`` would be rebuilt from
  epochs older than the ones already trained.

Settings present on only one side (flags added by a newer version) are not compared.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Optional, Union

from asr_kd.data.datamodule import DataConfig
from asr_kd.train.loss_factory import LossSettings
from asr_kd.train.optim import OptimConfig
from asr_kd.train.trainer import TrainerConfig

__all__ = ["ModelSettings", "RunSettings", "TrainingSettings", "SAFE_TO_CHANGE", "settings_differences",
           "check_resume_settings"]

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ModelSettings:
    """The model flags (``asr_kd.train.run.build_model_config`` turns them into a ``TransducerConfig``).

    Attributes (None: the model size's value):
      encoder: --encoder, conformer | zipformer.
      preset: --model-size, a model size of that encoder (stored under the key "preset").
      causal: --causal; False: full-context teacher, True: chunk-wise streaming student.
      chunk_size / left_context: --chunk-ms / --left-context-ms, in encoder frames (40 ms).
      dynamic_chunk: --dynamic-chunk (None: True when a list has several entries).
      dropout / num_layers: --dropout / --num-layers (the latter Conformer only).
      frontend_scale: --frontend-scale, a number > 0 or "sqrt-d" (Conformer only).
    """

    encoder: str = "conformer"
    preset: str = "small"
    causal: bool = False
    chunk_size: Optional[tuple[int, ...]] = None
    left_context: Optional[tuple[int, ...]] = None
    dynamic_chunk: Optional[bool] = None
    dropout: Optional[float] = None
    num_layers: Optional[int] = None
    frontend_scale: Optional[Union[float, str]] = None


@dataclass(frozen=True)
class RunSettings:
    """Run control and inputs: what to train on, where to start from, what to keep.

    Attributes:
      bpe_model / cuts_train / cuts_valid: --bpe-model, --cuts-train, --cuts-valid.
      min_cut_duration / max_cut_duration: --min-cut-duration / --max-cut-duration (seconds).
      resume: --resume: None (fresh run), "latest" (newest loadable checkpoint) or a file.
      overwrite: --overwrite (move another run's files aside).
      allow_changed_settings: --allow-changed-settings (resume although training settings differ).
      init_from: --init-from CKPT (weights only), or None.
      continue_from: --continue-from CKPT (full training state of an epoch checkpoint), or None.
      seed: --seed (model init, sampler, augmentation, loaders).
      device: --device, auto | cpu | cuda.
      avg: --avg, epochs averaged into pretrained.pt (0: none).
      tensorboard: --tensorboard.
    """

    bpe_model: str
    cuts_train: str
    cuts_valid: Optional[str] = None
    min_cut_duration: float = 0.0
    max_cut_duration: float = float("inf")
    resume: Optional[str] = None
    overwrite: bool = False
    allow_changed_settings: bool = False
    init_from: Optional[str] = None
    continue_from: Optional[str] = None
    seed: int = 42
    device: str = "auto"
    avg: int = 1
    tensorboard: bool = True


@dataclass(frozen=True)
class TrainingSettings:
    """One training run, typed (module docstring).

    Attributes:
      run: RunSettings.
      model: ModelSettings.
      optim: OptimConfig (optimiser and LR schedule).
      data: DataConfig (``return_clean`` is set by ``run_training`` from the loss computer).
      trainer: TrainerConfig with the command line's values: ``num_epochs`` is --num-epochs (the run adds
        the --continue-from epoch offset), ``amp`` may be "auto" (resolved for the device by the run);
        ``epoch_audio_s`` and ``batch_count_scale`` are filled in by the run.
      loss: LossSettings (transducer loss, CTC, distillation).
      record: the flat dictionary of every flag (``asr_kd.train.cli.sanitize_args``) stored in checkpoints and
        ``train_stats.json`` and compared by ``--resume``; read-only.
    """

    run: RunSettings
    model: ModelSettings
    optim: OptimConfig
    data: DataConfig
    trainer: TrainerConfig
    loss: LossSettings
    record: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "record", MappingProxyType(dict(self.record)))

    def record_dict(self) -> dict[str, Any]:
        """A plain copy of :attr:`record` (what checkpoints store under ``args``)."""
        return dict(self.record)


SAFE_TO_CHANGE = frozenset({
    "exp_dir", "resume", "overwrite", "allow_changed_settings", "continue_from", "init_from",
    "num_workers", "log_interval", "progress", "tensorboard", "save_every_n", "keep_last_k", "avg",
    "device", "find_unused_parameters", "max_bad_batches", "num_epochs",
})


#: ``args`` keys in 40 ms encoder frames whose flags take milliseconds (asr_kd.train.cli.ms_list)
_MS_FLAGS = {"chunk_size": "--chunk-ms", "left_context": "--left-context-ms"}


def _flag(key: str) -> str:
    return _MS_FLAGS.get(key) or "--" + key.replace("_", "-")


def _shown(key: str, value: Any) -> Any:
    """``value`` as its flag spells it: encoder frames of chunk_size / left_context in ms (-1 kept)."""
    if key in _MS_FLAGS and isinstance(value, list):
        return [v * 40 if isinstance(v, int) and v != -1 else v for v in value]
    return value


def settings_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(unsafe, safe) differences between two ``args`` dicts, each as "--flag OLD -> NEW" strings."""
    unsafe, safe = [], []
    for k in sorted(set(old) & set(new)):
        a, b = old[k], new[k]
        if isinstance(a, tuple):
            a = list(a)
        if isinstance(b, tuple):
            b = list(b)
        if a == b:
            continue
        (safe if k in SAFE_TO_CHANGE else unsafe).append(f"{_flag(k)} {_shown(k, a)!r} -> {_shown(k, b)!r}")
    return unsafe, safe


def check_resume_settings(ckpt: Mapping[str, Any], new_args: Mapping[str, Any], path: str,
                          allow_changed: bool = False) -> None:
    """Raise ValueError (one line) if resuming ``ckpt`` (read from ``path``) under ``new_args`` is unsafe.

    ``new_args`` is ``sanitize_args(args)`` of the new command line.
    """
    done = int(ckpt.get("epoch", 0)) - (0 if ckpt.get("epoch_done") else 1)
    in_epoch = int(ckpt.get("epoch", 0))
    last = int(new_args.get("num_epochs", 0)) + int(ckpt.get("epoch_offset", 0) or 0)
    if last < in_epoch:
        raise ValueError(
            f"--resume: {path} was written in epoch {in_epoch} ({done} epoch(s) complete) but --num-epochs asks "
            f"to stop at epoch {last}; pass --num-epochs >= {in_epoch} (nothing was changed in the exp dir)"
        )
    old_args = ckpt.get("args") or {}
    if not old_args:
        log.warning("--resume: %s records no training settings; they cannot be checked", path)
        return
    unsafe, safe = settings_differences(old_args, new_args)
    if safe:
        log.info("--resume: settings changed since %s (allowed): %s", path, "; ".join(safe))
    if unsafe and not allow_changed:
        raise ValueError(
            f"--resume: {path} was trained with other settings: {'; '.join(unsafe)}; rerun with the original "
            f"flags, start a new run in another --exp-dir, or pass --allow-changed-settings to continue anyway"
        )
    if unsafe:
        log.warning("--resume with changed settings (--allow-changed-settings): %s", "; ".join(unsafe))
