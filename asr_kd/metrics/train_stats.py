"""Per-epoch training statistics of a run (``<exp_dir>/train_stats.json``) and the RESULTS.md section
"Stage-2 smoothing statistics" built from them.

The trainer's main rank rewrites ``train_stats.json`` atomically at the end of
every epoch (:func:`update_train_stats`); it is small JSON, so summaries never
torch-load checkpoints. Format (``format`` 1)::

    {"format": 1, "run_id": "3f2a...", "args": {"kd_stage": "output", "kd_smoothing": "adaptive-power",
                                                 "kd_target_entropy": 0.5, "kd_alpha_min": 0.1, ...},
     "epochs": {"3": {"train": {"loss": ..., "kd_output_loss": ..., "kd_teacher_entropy": ..., ...},
                      "valid": {"loss": ...}, "frames": 51234.0, "batch_idx_train": 420}, ...}}

``train`` holds the epoch's frame-weighted means, over all ranks, of every
entry of the loss computer's per-batch ``info`` (``asr_kd.train.tracking``);
for output KD (``asr_kd.train.kd``) these include ``kd_output_loss`` (KL per
encoder frame), ``kd_teacher_entropy`` / ``kd_teacher_entropy_smoothed``
(mean teacher entropy per pruned-lattice node before / after smoothing, nats),
``kd_alpha_mean``, ``kd_alpha_min_share``, ``kd_smoothed_share`` and
``kd_coverage``. Epoch keys are strings of the global epoch number (a stage
continued with ``--continue-from`` starts after its parent's epochs). A file
holding another run id is replaced, not extended.

Runs trained before this file existed are read from the ``train_metrics`` of
their ``epoch-<e>.pt`` checkpoints instead (:func:`load_run_stats`, lazily
mapped, no weights read).
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from asr_kd.atomic import atomic_write_text
from asr_kd.types import PathLike

__all__ = [
    "STATS_FILE", "STATS_FORMAT", "ENGAGE_THRESHOLD_NATS", "KD_KEYS", "KDRunSummary", "update_train_stats",
    "read_train_stats", "load_run_stats", "summarize_kd_runs", "engagement_sentence", "render_kd_section",
    "kd_stats_records",
]

log = logging.getLogger(__name__)

STATS_FILE = "train_stats.json"
STATS_FORMAT = 1
#: below this change of the mean teacher entropy (nats) smoothing is reported as not engaged
ENGAGE_THRESHOLD_NATS = 0.01
#: the output-KD entries of the loss computer's info reported per KD run
KD_KEYS = ("kd_output_loss", "kd_teacher_entropy", "kd_teacher_entropy_smoothed", "kd_alpha_mean",
           "kd_alpha_min_share", "kd_smoothed_share", "kd_coverage")
_ARG_KEYS = ("teacher_checkpoint", "init_from", "continue_from", "num_epochs", "seed", "preset", "causal")
_OUTPUT_STAGES = ("output", "joint")


def _finite(x: Any) -> Optional[float]:
    """float(x), or None for missing/non-finite values (JSON has no NaN)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _clean(d: Optional[Mapping[str, Any]]) -> Dict[str, Optional[float]]:
    return {str(k): _finite(v) for k, v in (d or {}).items()}


def read_train_stats(exp_dir: PathLike) -> Optional[Dict[str, Any]]:
    """The parsed ``<exp_dir>/train_stats.json``, or None when absent or unreadable (warned)."""
    path = Path(exp_dir) / STATS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("%s cannot be read (%s); ignored", path, e)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("epochs"), dict):
        log.warning("%s is not a train_stats file (no 'epochs' object); ignored", path)
        return None
    return data


def update_train_stats(exp_dir: PathLike, epoch: int, train: Mapping[str, Any],
                       valid: Optional[Mapping[str, Any]] = None, *, run_id: Optional[str] = None,
                       args: Optional[Mapping[str, Any]] = None, frames: Optional[float] = None,
                       batch_idx_train: Optional[int] = None) -> Path:
    """Insert or replace ``epoch`` in ``<exp_dir>/train_stats.json`` (atomic rewrite); returns its path.

    Args:
      exp_dir: the run's directory.
      epoch: global epoch number (1-based).
      train / valid: the epoch's frame-weighted averages (non-finite values stored as null).
      run_id: the run's id; a file of another run is replaced (with a log line).
      args: the run's sanitised flags; the ``kd_*`` ones and a few others are kept.
      frames: training frames of the epoch (all ranks); batch_idx_train: batches trained so far.
    """
    exp_dir = Path(exp_dir)
    old = read_train_stats(exp_dir)
    if old is not None and run_id is not None and old.get("run_id") not in (None, run_id):
        log.info("%s belongs to run %s; starting it afresh for run %s", exp_dir / STATS_FILE, old.get("run_id"),
                 run_id)
        old = None
    data: Dict[str, Any] = old or {}
    data["format"] = STATS_FORMAT
    if run_id is not None:
        data["run_id"] = run_id
    if args is not None:
        data["args"] = {k: v for k, v in args.items() if k.startswith("kd_") or k in _ARG_KEYS}
    epochs: Dict[str, Any] = dict(data.get("epochs") or {})
    entry: Dict[str, Any] = {"train": _clean(train), "valid": _clean(valid)}
    if frames is not None:
        entry["frames"] = _finite(frames)
    if batch_idx_train is not None:
        entry["batch_idx_train"] = int(batch_idx_train)
    epochs[str(int(epoch))] = entry
    data["epochs"] = {k: epochs[k] for k in sorted(epochs, key=int)}
    return atomic_write_text(exp_dir / STATS_FILE, json.dumps(data, indent=1, sort_keys=False) + "\n")


def _stats_from_checkpoints(exp_dir: Path, stages: Optional[Sequence[str]] = None) -> Optional[Dict[str, Any]]:
    """train_stats-shaped dict from the ``train_metrics`` of ``epoch-<e>.pt`` (older runs), or None.

    ``stages``: stop after the first readable checkpoint (None) unless its ``--kd-stage`` is one of these.
    """
    files = [p for p in exp_dir.glob("epoch-*.pt") if re.fullmatch(r"epoch-\d+\.pt", p.name)]
    if not files:
        return None
    from asr_kd.models.checkpoint import peek_checkpoint  # torch: only for runs without train_stats.json

    data: Dict[str, Any] = {"format": STATS_FORMAT, "epochs": {}, "source": "checkpoints"}
    for p in sorted(files, key=lambda p: int(p.stem.split("-")[1])):
        ck = peek_checkpoint(p)
        if ck is None or not ck.get("train_metrics"):
            continue
        data["run_id"] = ck.get("run_id")
        data["args"] = {k: v for k, v in (ck.get("args") or {}).items() if k.startswith("kd_") or k in _ARG_KEYS}
        if stages is not None and data["args"].get("kd_stage") not in stages:
            return None  # not a run of interest: the other checkpoints are not opened
        data["epochs"][str(int(ck["epoch"]))] = {"train": _clean(ck["train_metrics"]),
                                                 "valid": {"loss": _finite(ck.get("valid_loss"))}}
    return data if data["epochs"] else None


def load_run_stats(exp_dir: PathLike, checkpoint_fallback: bool = True,
                   stages: Optional[Sequence[str]] = None) -> Optional[Dict[str, Any]]:
    """``train_stats.json`` of a run, else (``checkpoint_fallback``) its epoch checkpoints' train_metrics.

    ``stages``: for the fallback only, skip runs whose ``--kd-stage`` is not among these (after one peek).
    """
    exp_dir = Path(exp_dir)
    data = read_train_stats(exp_dir)
    if data is None and checkpoint_fallback:
        data = _stats_from_checkpoints(exp_dir, stages)
    return data


# --------------------------------------------------------------------------- summaries


@dataclass
class KDRunSummary:
    """Output-KD statistics of one run: its first and last epoch (train-set means)."""

    model: str
    stage: Optional[str]
    smoothing: Optional[str]
    target_entropy: Optional[float]
    alpha_min: Optional[float]
    temperature: Optional[float]
    first_epoch: int
    last_epoch: int
    first: Dict[str, Optional[float]]
    last: Dict[str, Optional[float]]

    @property
    def num_epochs(self) -> int:
        return self.last_epoch - self.first_epoch + 1

    @property
    def entropy_change(self) -> Optional[float]:
        """Mean teacher entropy after − before smoothing in the last epoch (nats)."""
        a, b = self.last.get("kd_teacher_entropy_smoothed"), self.last.get("kd_teacher_entropy")
        return None if a is None or b is None else a - b

    @property
    def engaged(self) -> Optional[bool]:
        d = self.entropy_change
        return None if d is None else abs(d) >= ENGAGE_THRESHOLD_NATS


def _is_output_kd(data: Mapping[str, Any]) -> bool:
    stage = (data.get("args") or {}).get("kd_stage")
    if stage is not None:
        return stage in _OUTPUT_STAGES
    return any("kd_output_loss" in (e.get("train") or {}) for e in data["epochs"].values())


def summarize_kd_runs(exp_dir: PathLike, models: Optional[Sequence[str]] = None,
                      checkpoint_fallback: bool = True) -> List[KDRunSummary]:
    """One summary per run directory under ``exp_dir`` trained with output KD (--kd-stage output/joint).

    ``models``: directory names to consider (default: every subdirectory), in
    the recipe's display order (``asr_kd.metrics.summary.MODEL_ORDER``).
    """
    from asr_kd.metrics.summary import MODEL_ORDER

    exp_dir = Path(exp_dir)
    names = list(models) if models is not None else sorted(p.name for p in exp_dir.iterdir() if p.is_dir()) \
        if exp_dir.is_dir() else []

    def rank(n: str) -> tuple:
        base = n.split("-seed")[0]
        return (MODEL_ORDER.index(base) if base in MODEL_ORDER else len(MODEL_ORDER), n)

    out: List[KDRunSummary] = []
    for name in sorted(names, key=rank):
        data = load_run_stats(exp_dir / name, checkpoint_fallback, stages=_OUTPUT_STAGES)
        if data is None or not data["epochs"] or not _is_output_kd(data):
            continue
        epochs = sorted(data["epochs"], key=int)
        args = data.get("args") or {}
        first, last = (data["epochs"][e].get("train") or {} for e in (epochs[0], epochs[-1]))
        out.append(KDRunSummary(
            model=name, stage=args.get("kd_stage"), smoothing=args.get("kd_smoothing"),
            target_entropy=_finite(args.get("kd_target_entropy")), alpha_min=_finite(args.get("kd_alpha_min")),
            temperature=_finite(args.get("kd_temperature")), first_epoch=int(epochs[0]),
            last_epoch=int(epochs[-1]), first={k: first.get(k) for k in KD_KEYS},
            last={k: last.get(k) for k in KD_KEYS},
        ))  # fmt: skip
    return out


def _num(x: Optional[float], nd: int = 3, pct: bool = False) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.1f}%" if pct else f"{x:.{nd}f}"


def _trend(s: KDRunSummary, key: str, nd: int = 3, pct: bool = False) -> str:
    last = _num(s.last.get(key), nd, pct)
    if s.num_epochs <= 1:
        return last
    return f"{_num(s.first.get(key), nd, pct)} → {last}"


def _target(s: KDRunSummary) -> str:
    if s.smoothing == "temperature":
        return f"τ = {_num(s.temperature, 2)}"
    if s.smoothing == "none":
        return "–"
    return _num(s.target_entropy, 2)


def engagement_sentence(s: KDRunSummary, bold: bool = False) -> str:
    """One sentence, from the last epoch's numbers, saying whether smoothing changed the teacher.

    ``bold``: the model name in markdown bold.
    """
    d = s.entropy_change
    hb, ha = s.last.get("kd_teacher_entropy"), s.last.get("kd_teacher_entropy_smoothed")
    a, at_min = s.last.get("kd_alpha_mean"), s.last.get("kd_alpha_min_share")
    head = (f"**{s.model}**" if bold else s.model) + f" (epoch {s.last_epoch})"
    if d is None:
        return f"{head}: no teacher-entropy statistics were logged."
    if s.smoothing == "none":
        return f"{head}: no smoothing (--kd-smoothing none); teacher entropy {_num(hb)} nats."
    what = "temperature smoothing" if s.smoothing == "temperature" else "smoothing"
    at = f" at this target ({_num(s.target_entropy, 2)} nats)" if s.smoothing == "adaptive-power" else ""
    if abs(d) < ENGAGE_THRESHOLD_NATS:
        why = ""
        if s.smoothing == "adaptive-power" and a is not None and a > 0.99:
            why = f" (mean α = {_num(a)}: nearly every node already meets the target)"
        return (f"{head}: {what} changed the teacher's mean entropy by {d:+.3f} nats "
                f"(< {ENGAGE_THRESHOLD_NATS} nats: {_num(hb)} → {_num(ha)}){at}: it did not engage{why}.")
    sent = (f"{head}: {what} {'raised' if d > 0 else 'lowered'} the teacher's mean entropy by {abs(d):.3f} nats "
            f"({_num(hb)} → {_num(ha)}){at}: it engaged")
    if s.smoothing == "adaptive-power":
        sent += f", mean α = {_num(a)}"
        if at_min is not None and at_min > 0:
            sent += f", {_num(at_min, pct=True)} of nodes held at α_min = {_num(s.alpha_min, 2)} (target out of reach)"
    return sent + "."


def render_kd_section(summaries: Sequence[KDRunSummary]) -> List[str]:
    """Markdown lines of "Stage-2 smoothing statistics" ([] when there is no output-KD run)."""
    if not summaries:
        return []
    lines = [
        "## Stage-2 smoothing statistics", "",
        "Training-set means of each epoch (frame-weighted over batches, read from `<model>/train_stats.json`), "
        "first → last epoch of the run. *KD loss* = output KL per encoder frame; *H before / after* = mean "
        "entropy (nats) of the teacher's distribution per pruned-lattice node before / after smoothing; *H\\** = "
        "target entropy; *at α_min* = share of nodes whose power was clamped at α_min; *coverage* = share of "
        "the teacher's simple-lattice alignment mass on the KL's nodes.", "",
        "| model | KD | smoothing | epochs | KD loss/frame | H before | H after | H* | mean α | at α_min "
        "| coverage |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        ep = str(s.last_epoch) if s.num_epochs <= 1 else f"{s.first_epoch}–{s.last_epoch}"
        lines.append(
            f"| {s.model} | {s.stage or '–'} | {s.smoothing or '–'} | {ep} | {_trend(s, 'kd_output_loss')} | "
            f"{_trend(s, 'kd_teacher_entropy')} | {_trend(s, 'kd_teacher_entropy_smoothed')} | {_target(s)} | "
            f"{_trend(s, 'kd_alpha_mean')} | {_trend(s, 'kd_alpha_min_share', pct=True)} | "
            f"{_trend(s, 'kd_coverage')} |")
    lines.append("")
    lines += [f"- {engagement_sentence(s, bold=True)}" for s in summaries]
    lines.append("")
    return lines


def kd_stats_records(summaries: Sequence[KDRunSummary]) -> List[Dict[str, Any]]:
    """JSON-ready records of the summaries (the side file ``kd_stats.json`` of ``asr_kd.bin.results``)."""
    return [{
        "model": s.model, "kd_stage": s.stage, "smoothing": s.smoothing, "target_entropy": s.target_entropy,
        "alpha_min": s.alpha_min, "temperature": s.temperature, "first_epoch": s.first_epoch,
        "last_epoch": s.last_epoch, "first": dict(s.first), "last": dict(s.last),
        "entropy_change_nats": s.entropy_change, "engaged": s.engaged, "sentence": engagement_sentence(s),
    } for s in summaries]  # fmt: skip
