"""Model files: read, peek at, average and rebuild the model of an asr_kd checkpoint.

This is the floor every user of a trained model shares (decoding, export,
metrics, tools, and training itself); run bookkeeping -- listing an
experiment directory, pruning, RNG state, resume -- lives above it in
``asr_kd.train.checkpoint``.

What a model file holds (``torch.save`` of a dict of tensors and plain
Python values, loadable with ``torch.load(..., weights_only=True)``)::

    format_version   int (CHECKPOINT_FORMAT)
    model            model state_dict (unwrapped, no "module." prefix)
    model_config     TransducerConfig.to_dict()
    feature_config   asr_kd.data.features.feature_config_dict()
    bpe_model        str, path of the sentencepiece model;  bpe_sha256  its SHA-256
    averaged_from    (averaged files only) the file names averaged

Training checkpoints hold these entries plus the training state listed in
``asr_kd.train.checkpoint``; every function here reads both kinds.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import torch

from asr_kd.atomic import atomic_torch_save
from asr_kd.models.transducer import Transducer, TransducerConfig, build_transducer
from asr_kd.types import PathLike

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "load_checkpoint",
    "peek_checkpoint",
    "checkpoint_bpe_model",
    "average_state_dicts",
    "average_checkpoints",
    "save_averaged",
    "load_model",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message is one line naming the file and why."""


def _why_unreadable(path: Path, err: BaseException) -> str:
    """Short reason for a failed ``torch.load`` of ``path`` (judged from the file, not torch's text)."""
    size = path.stat().st_size
    if size == 0:
        return "empty file (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":
        if not zipfile.is_zipfile(path):
            return f"truncated ({size} bytes; the archive has no end record)"
        return f"damaged archive ({type(err).__name__}: {str(err).splitlines()[0][:120]})"
    return f"not a PyTorch checkpoint ({size} bytes, starts with {head!r})"


def _is_zip_archive(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu",
                    mmap: bool = False) -> dict[str, Any]:
    """Load an asr_kd checkpoint dict (``weights_only=True``).

    Raises ``FileNotFoundError`` for a missing file and ``CheckpointError``
    (one line: the file and the reason: empty, truncated, damaged, not a
    PyTorch checkpoint, not an asr_kd checkpoint) for an unusable one.
    ``mmap=True`` maps tensors lazily (cheap peeks at metadata); a file in
    torch's legacy (pre-zip) format cannot be mapped and is read whole.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    try:
        # mmap needs the zip format; legacy torch.save(_use_new_zipfile_serialization=False) files are read whole
        use_mmap = mmap and _is_zip_archive(path)
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=use_mmap)
    except Exception as e:  # corrupt / truncated / foreign file
        raise CheckpointError(f"checkpoint {path}: cannot be read: {_why_unreadable(path, e)}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        what = f"a {type(ckpt).__name__}" if not isinstance(ckpt, dict) else f"keys {sorted(ckpt)[:5]}"
        raise CheckpointError(f"checkpoint {path}: not an asr_kd checkpoint (holds {what}, no 'model' entry)")
    return ckpt


def peek_checkpoint(path: PathLike) -> Optional[dict[str, Any]]:
    """The checkpoint dict with lazily mapped tensors, or None (with a warning naming the file) if unusable."""
    try:
        return load_checkpoint(path, mmap=True)
    except (CheckpointError, FileNotFoundError) as e:
        log.warning("%s; skipping it", e)
        return None


def checkpoint_bpe_model(path: PathLike) -> Optional[Path]:
    """The sentencepiece model a checkpoint records (its ``bpe_model`` entry), or None when it records none.

    Raises like ``load_checkpoint`` for a missing or unusable file (tensors are
    mapped, not read: only one string is wanted).
    """
    bpe = load_checkpoint(path, mmap=True).get("bpe_model")
    return Path(bpe) if bpe else None


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of model state_dicts with identical keys and shapes.

    Floating tensors: (1/N) sum_i s_i[k], accumulated in float64 and cast back
    to the original dtype.  Non-floating tensors (counters, integer buffers)
    are taken from the last state.
    """
    if not states:
        raise ValueError("averaging checkpoints: nothing to average")
    keys = list(states[-1].keys())
    for i, s in enumerate(states):
        if set(s.keys()) != set(keys):
            diff = sorted(set(s.keys()) ^ set(keys))
            raise ValueError(f"averaging checkpoints: state {i} has different parameters than the last: {diff[:5]}")
    out: dict[str, torch.Tensor] = {}
    n = len(states)
    for k in keys:
        ref = states[-1][k]
        if not torch.is_floating_point(ref):
            out[k] = ref.clone()
            continue
        acc = torch.zeros(ref.shape, dtype=torch.float64)
        for s in states:
            if s[k].shape != ref.shape:
                raise ValueError(
                    f"averaging checkpoints: shape mismatch for {k}: {tuple(s[k].shape)} vs {tuple(ref.shape)}")
            acc += s[k].detach().to("cpu", torch.float64)
        out[k] = (acc / n).to(ref.dtype)
    return out


_META_KEYS = ("model_config", "feature_config", "bpe_model", "bpe_sha256")


def average_checkpoints(paths: Sequence[PathLike]) -> dict[str, Any]:
    """Average the models of ``paths`` (same model_config required).

    Returns a model-only checkpoint dict (see the module docstring) whose
    metadata comes from the last path.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("averaging checkpoints: no checkpoint given")
    states, last = [], None
    for p in paths:
        ck = load_checkpoint(p)
        if last is not None and ck.get("model_config") != last.get("model_config"):
            raise ValueError(f"checkpoint {p}: a different model_config than {paths[0]}; cannot average them")
        states.append(ck["model"])
        last = ck
    assert last is not None
    out: dict[str, Any] = {"format_version": CHECKPOINT_FORMAT, "model": average_state_dicts(states)}
    for k in _META_KEYS:
        out[k] = last.get(k)
    out["averaged_from"] = [p.name for p in paths]
    return out


def save_averaged(paths: Sequence[PathLike], out_path: PathLike) -> Path:
    """``average_checkpoints(paths)`` written atomically to ``out_path``."""
    return atomic_torch_save(average_checkpoints(paths), out_path)


def load_model(path_or_paths: Union[PathLike, Iterable[PathLike]],
               device: Union[str, torch.device] = "cpu") -> Transducer:
    """Rebuild the ``Transducer`` of a checkpoint (or the average of several), in eval mode.

    Args:
      path_or_paths: one checkpoint (training, epoch or pretrained.pt), or a
        list of checkpoints to average (same model_config).
      device: where to put the model.
    """
    if isinstance(path_or_paths, (str, Path)):
        ck = load_checkpoint(path_or_paths)
        where = str(path_or_paths)
    else:
        paths = list(path_or_paths)
        ck = average_checkpoints(paths)
        where = ", ".join(str(p) for p in paths)
    if not ck.get("model_config"):
        raise CheckpointError(f"checkpoint {where}: no model_config; cannot rebuild the model")
    model = build_transducer(TransducerConfig.from_dict(ck["model_config"]))
    missing, unexpected = model.load_state_dict(ck["model"], strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {where}: does not match its model_config: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return model.to(device).eval()
