"""Checkpoints: atomic save, resume state, averaging, loading a model for inference.

File layout of an experiment directory (``--exp-dir``)::

    checkpoint-<b>.pt   every --save-every-n training batches (b = global batch count);
                        only the newest --keep-last-k are kept
    epoch-<e>.pt        at the end of epoch e (1-based), after validation; all kept
    pretrained.pt       the final model: average of the last --avg epoch checkpoints

Training checkpoint (``torch.save`` of a dict of tensors and plain Python
values, loadable with ``torch.load(..., weights_only=True)``)::

    format_version   int (CHECKPOINT_FORMAT)
    model            model state_dict (unwrapped, no "module." prefix)
    model_config     TransducerConfig.to_dict()
    feature_config   asr_kd.data.features.feature_config_dict()
    bpe_model        str, path of the sentencepiece model;  bpe_sha256  its SHA-256
    optimizer        AdamW state_dict;  scheduler  WarmupDecaySchedule.state_dict()
    grad_scaler      GradScaler state_dict ({} when AMP fp16 is off)
    loss_computer    the loss computer's state_dict() ({} when it has none)
    sampler          the training sampler's state_dict() (None when not known)
    rng              list, one entry per rank: {"python", "numpy", "torch", "cuda" (current device or None)}
    epoch            int, the epoch the checkpoint was written in (1-based)
    batch_idx        int, batches of that epoch already trained on
    batch_idx_train  int, batches trained on since the start (all epochs)
    epoch_done       bool, True for epoch-<e>.pt (resume starts epoch e+1)
    bad_batches      int, consecutive non-finite batches at save time
    valid_loss       float or None (epoch checkpoints)
    args             dict, the command-line arguments (str/int/float/bool/list/None)
    run_id           str, identifies the training run that wrote the file (kept across
                     --resume; a fresh run gets a new one); pruning deletes only its own run's files
    epoch_metrics    {"frames": float, "sums": {name: float}}: the running train-loss sums of the
                     current epoch, so the epoch's loss after a resume covers the whole epoch

``pretrained.pt`` and ``average_checkpoints`` outputs hold only
``format_version, model, model_config, feature_config, bpe_model,
bpe_sha256, averaged_from`` (the file names averaged).

Atomicity: every file is written to ``.<name>.tmp.<pid>`` in the same
directory, flushed and fsync'ed, then ``os.replace``'d onto its name, so a
crash leaves either the old complete file or none -- never a partial one.
"""

from __future__ import annotations

import logging
import random
import re
import zipfile
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "atomic_torch_save",
    "load_checkpoint",
    "get_rng_state",
    "set_rng_state",
    "list_checkpoints",
    "peek_checkpoint",
    "latest_checkpoint",
    "prune_checkpoints",
    "epoch_checkpoints",
    "average_state_dicts",
    "average_checkpoints",
    "save_averaged",
    "load_model",
]

from asr_kd.atomic import atomic_torch_save
from asr_kd.models import TransducerConfig, build_transducer


log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
PathLike = Union[str, Path]

_BATCH_RE = re.compile(r"^checkpoint-(\d+)\.pt$")
_EPOCH_RE = re.compile(r"^epoch-(\d+)\.pt$")


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


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu",
                    mmap: bool = False) -> dict[str, Any]:
    """Load an asr_kd checkpoint dict (``weights_only=True``).

    Raises ``FileNotFoundError`` for a missing file and ``CheckpointError``
    (one line: the file and the reason: empty, truncated, damaged, not a
    PyTorch checkpoint, not an asr_kd checkpoint) for an unusable one.
    ``mmap=True`` maps tensors lazily (cheap peeks at metadata).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # corrupt / truncated / foreign file
        raise CheckpointError(f"checkpoint {path}: cannot be read: {_why_unreadable(path, e)}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        what = f"a {type(ckpt).__name__}" if not isinstance(ckpt, dict) else f"keys {sorted(ckpt)[:5]}"
        raise CheckpointError(f"checkpoint {path}: not an asr_kd checkpoint (holds {what}, no 'model' entry)")
    return ckpt


# ---------------------------------------------------------------- RNG state


def get_rng_state() -> dict[str, Any]:
    """RNG states of python, numpy, torch (CPU) and CUDA (current device), as weights_only-safe values."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        # the current device only: touching every GPU would create a context on each of them
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
    }


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``get_rng_state`` (the CUDA state goes to the current device, when present)."""
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


# ---------------------------------------------------------------- listing / rotation


def list_checkpoints(exp_dir: PathLike) -> tuple[list[tuple[int, Path]], list[tuple[int, Path]]]:
    """(batch checkpoints [(b, path)], epoch checkpoints [(e, path)]), each sorted ascending."""
    exp_dir = Path(exp_dir)
    batch, epoch = [], []
    if exp_dir.is_dir():
        for p in exp_dir.iterdir():
            if m := _BATCH_RE.match(p.name):
                batch.append((int(m.group(1)), p))
            elif m := _EPOCH_RE.match(p.name):
                epoch.append((int(m.group(1)), p))
    return sorted(batch), sorted(epoch)


def epoch_checkpoints(exp_dir: PathLike, last_epoch: Optional[int], avg: int) -> list[Path]:
    """Paths of ``epoch-<e>.pt`` for the ``avg`` epochs ending at ``last_epoch`` (None: newest).

    Raises FileNotFoundError naming the missing files.
    """
    _, epochs = list_checkpoints(exp_dir)
    if last_epoch is None:
        if not epochs:
            raise FileNotFoundError(f"checkpoint.py: no epoch-*.pt checkpoints in {exp_dir}")
        last_epoch = epochs[-1][0]
    if avg < 1:
        raise ValueError(f"checkpoint.py: avg must be >= 1, got {avg}")
    wanted = [Path(exp_dir) / f"epoch-{e}.pt" for e in range(last_epoch - avg + 1, last_epoch + 1)]
    missing = [str(p) for p in wanted if not p.is_file()]
    if missing or last_epoch - avg + 1 < 1:
        raise FileNotFoundError(
            f"checkpoint.py: averaging {avg} epochs ending at {last_epoch} needs {[str(p) for p in wanted]}; "
            f"missing: {missing or 'epochs before 1'}"
        )
    return wanted


def peek_checkpoint(path: PathLike) -> Optional[dict[str, Any]]:
    """The checkpoint dict with lazily mapped tensors, or None (with a warning naming the file) if unusable."""
    try:
        return load_checkpoint(path, mmap=True)
    except (CheckpointError, FileNotFoundError) as e:
        log.warning("%s; skipping it", e)
        return None


def latest_checkpoint(exp_dir: PathLike, run_id: Optional[str] = None) -> Optional[Path]:
    """The loadable checkpoint furthest into training (largest batch_idx_train; epoch ones win ties).

    Unreadable files (truncated, empty, foreign) are skipped with a warning
    naming them, so a resume falls back to the newest intact checkpoint.
    With ``run_id``, only checkpoints of that run are considered.
    """
    batch, epochs = list_checkpoints(exp_dir)
    best, best_key = None, None
    for _, p in batch + epochs:
        ck = peek_checkpoint(p)
        if ck is None or (run_id is not None and ck.get("run_id") != run_id):
            continue
        key = (int(ck.get("batch_idx_train", -1)), bool(ck.get("epoch_done", False)))
        if best_key is None or key > best_key:
            best, best_key = p, key
    return best


def prune_checkpoints(exp_dir: PathLike, keep_last_k: int, run_id: Optional[str] = None) -> list[Path]:
    """Delete all but the newest ``keep_last_k`` batch checkpoints (0: keep all); return deleted.

    With ``run_id`` only that run's checkpoints are counted and deleted: files
    of another run, of no run id (older versions) or unreadable are never touched.
    """
    if keep_last_k <= 0:
        return []
    batch, _ = list_checkpoints(exp_dir)
    if run_id is not None:
        batch = [(b, p) for b, p in batch if (ck := peek_checkpoint(p)) is not None and ck.get("run_id") == run_id]
    removed = []
    for _, p in batch[: max(0, len(batch) - keep_last_k)]:
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


# ---------------------------------------------------------------- averaging


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of model state_dicts with identical keys and shapes.

    Floating tensors: (1/N) sum_i s_i[k], accumulated in float64 and cast back
    to the original dtype.  Non-floating tensors (counters, integer buffers)
    are taken from the last state.
    """
    if not states:
        raise ValueError("checkpoint.py: nothing to average")
    keys = list(states[-1].keys())
    for i, s in enumerate(states):
        if set(s.keys()) != set(keys):
            diff = sorted(set(s.keys()) ^ set(keys))
            raise ValueError(f"checkpoint.py: state {i} has different parameters than the last: {diff[:5]}")
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
                raise ValueError(f"checkpoint.py: shape mismatch for {k}: {tuple(s[k].shape)} vs {tuple(ref.shape)}")
            acc += s[k].detach().to("cpu", torch.float64)
        out[k] = (acc / n).to(ref.dtype)
    return out


_META_KEYS = ("model_config", "feature_config", "bpe_model", "bpe_sha256")


def average_checkpoints(paths: Sequence[PathLike]) -> dict[str, Any]:
    """Average the models of ``paths`` (same model_config required).

    Returns a model-only checkpoint dict (see module docstring) whose
    metadata comes from the last path.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("checkpoint.py: average_checkpoints needs at least one path")
    states, last = [], None
    for p in paths:
        ck = load_checkpoint(p)
        if last is not None and ck.get("model_config") != last.get("model_config"):
            raise ValueError(f"checkpoint.py: {p} has a different model_config than {paths[0]}; cannot average")
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


def load_model(path_or_paths: Union[PathLike, Iterable[PathLike]], device: Union[str, torch.device] = "cpu"):
    """Rebuild the ``Transducer`` of a checkpoint (or the average of several), in eval mode.

    Args:
      path_or_paths: one checkpoint (training, epoch or pretrained.pt), or a
        list of checkpoints to average (same model_config).
      device: where to put the model.
    """
    if isinstance(path_or_paths, (str, Path)):
        ck = load_checkpoint(path_or_paths)
        state, where = ck["model"], str(path_or_paths)
    else:
        paths = list(path_or_paths)
        ck = average_checkpoints(paths)
        state, where = ck["model"], ", ".join(str(p) for p in paths)
    if not ck.get("model_config"):
        raise RuntimeError(f"checkpoint.py: {where} has no model_config; cannot rebuild the model")
    model = build_transducer(TransducerConfig.from_dict(ck["model_config"]))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(
            f"checkpoint.py: {where} does not match its model_config: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return model.to(device).eval()
