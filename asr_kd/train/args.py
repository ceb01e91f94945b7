"""Command-line arguments of ``python -m asr_kd.bin.train``.

``add_training_arguments(parser)`` adds every flag of plain transducer
training (model, data, optimisation, checkpoints, DDP, loss).  Distillation
flags are added by ``asr_kd.train.kd.add_kd_arguments(parser)`` when that
module exists (``build_parser`` does both).  Units: chunk sizes and left
contexts are in encoder frames of 40 ms (= 4 feature frames of 10 ms).
"""

from __future__ import annotations

import argparse
import importlib
import logging
from typing import Any, Optional

from asr_kd.models.encoders import ENCODER_TYPES
from asr_kd.models.presets import preset_names
from asr_kd.options import add_refused_option, mapped_value
from asr_kd.train.losses import add_loss_arguments
from asr_kd.train.optim import OPTIMIZERS, SCHEDULES

__all__ = ["str2bool", "int_list", "add_training_arguments", "build_parser", "sanitize_args",
           "resolve_max_grad_norm", "DEFAULT_MAX_GRAD_NORM"]

#: --max-grad-norm when not given and --optimizer is adamw (with scaled-adam: 0, off)
DEFAULT_MAX_GRAD_NORM = 5.0

#: --preset values of either encoder (asr_kd.train.run.build_model_config refuses the other encoder's)
PRESET_CHOICES = tuple(sorted(set(preset_names("conformer")) | set(preset_names("zipformer"))))

log = logging.getLogger(__name__)


def str2bool(v: Any) -> bool:
    """argparse type for true/false flags (true/false, yes/no, 1/0)."""
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("true", "t", "yes", "y", "1"):
        return True
    if s in ("false", "f", "no", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {v!r}")


def int_list(v: str) -> tuple[int, ...]:
    """argparse type: "16" or "16,8,32" -> (16, 8, 32)."""
    try:
        out = tuple(int(x) for x in str(v).replace(" ", "").split(",") if x != "")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {v!r}") from None
    if not out:
        raise argparse.ArgumentTypeError(f"expected at least one integer, got {v!r}")
    return out


def frontend_scale(v: str) -> "float | str":
    """--frontend-scale: ``"sqrt-d"`` (kept as is, resolved with the model's d_model) or a number > 0."""
    if v == "sqrt-d":
        return v
    try:
        x = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0 or sqrt-d, got {v!r}") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0 or sqrt-d, got {v!r}")
    return x


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """All flags of transducer training (not the KD ones)."""
    g = parser.add_argument_group("experiment and data")
    g.add_argument("--exp-dir", required=True, help="checkpoints, logs and tensorboard go here (required)")
    g.add_argument("--cuts-train", required=True, help="lhotse CutSet manifest of the training data (required)")
    g.add_argument("--cuts-valid", default=None, help="CutSet for the per-epoch validation loss (default: none, no validation)")
    g.add_argument("--bpe-model", required=True, help="sentencepiece model (asr_kd.bin.train_bpe) (required)")
    g.add_argument("--max-duration", type=float, default=200.0, help="seconds of audio per batch (default: %(default)s)")
    g.add_argument("--min-cut-duration", type=float, default=0.0,
                   help="train only on cuts of at least this many seconds (counted and logged) (default: %(default)s)")
    g.add_argument("--max-cut-duration", type=float, default=float("inf"),
                   help="train only on cuts of at most this many seconds, e.g. 20 as icefall does for "
                        "LibriSpeech (counted and logged) (default: %(default)s, no limit)")
    g.add_argument("--num-buckets", type=int, default=30, help="DynamicBucketingSampler buckets (default: %(default)s)")
    g.add_argument("--num-workers", type=int, default=2, help="data loader workers (0: main process) (default: %(default)s)")
    g.add_argument("--spec-augment", type=str2bool, default=True, help="true/false: SpecAugment on training batches (default: %(default)s)")
    g.add_argument("--noise-cuts", default=None, help="CutSet of noise recordings to mix in (default: none, no noise)")
    g.add_argument("--speed-perturb", type=str2bool, default=False,
                   help="true/false: add 0.9x/1.1x copies (needs --on-the-fly-feats true) (default: %(default)s)")
    g.add_argument("--on-the-fly-feats", type=str2bool, default=False,
                   help="true/false: compute fbank from audio instead of reading stored features (default: %(default)s)")

    g = parser.add_argument_group("model")
    g.add_argument("--encoder", default="conformer", choices=ENCODER_TYPES,
                   help="encoder architecture: conformer (asr_kd.models.conformer) or zipformer "
                        "(asr_kd.models.zipformer; train it with --optimizer scaled-adam) (default: %(default)s)")
    g.add_argument("--preset", default="small", choices=PRESET_CHOICES,
                   help="model size: tiny|small|full|large for --encoder conformer, cpu|tiny|small|medium|large "
                        "for --encoder zipformer (default: %(default)s)")
    g.add_argument("--causal", type=str2bool, default=False,
                   help="true/false; false: full-context teacher; true: chunk-wise streaming student (default: %(default)s)")
    g.add_argument("--chunk-size", type=int_list, default=None,
                   help="student chunk sizes in encoder frames (x40 ms), e.g. 16 or 16,8,32; "
                        "first = decoding default; zipformer: multiples of 4 (default: the preset's, 16 = 640 ms "
                        "for the conformer, 8 = 320 ms for the zipformer)")
    g.add_argument("--left-context", type=int_list, default=None,
                   help="student left contexts in encoder frames, -1 = unlimited; zipformer: multiples of 4 "
                        "(default: the preset's, 64 = 2.56 s)")
    g.add_argument("--dynamic-chunk", type=str2bool, default=None,
                   help="true/false: draw chunk size/left context per batch from the lists "
                        "(default: true when a list has several entries)")
    g.add_argument("--dropout", type=float, default=None, help="override the preset's dropout (default: the preset's)")
    g.add_argument("--num-layers", type=int, default=None,
                   help="conformer only: override the preset's number of encoder blocks (default: the preset's, "
                        "6 for small)")
    g.add_argument("--frontend-scale", type=frontend_scale, default=None,
                   help="conformer only: multiplier of the Conv2d front end's output: a number > 0, or sqrt-d for "
                        "sqrt(d_model) as in ESPnet/WeNet/icefall (default: 1, no scaling)")

    g = parser.add_argument_group("optimisation")
    g.add_argument("--num-epochs", type=int, default=30, help="train up to this epoch (1-based) (default: %(default)s)")
    g.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS,
                   help="adamw: AdamW, for the Conformer; scaled-adam: ScaledAdam (asr_kd.train.scaled_adam), "
                        "steps relative to each tensor's RMS, for the Zipformer; it clips gradients itself "
                        "(--clipping-scale) and ignores --weight-decay; its --lr is a relative step size "
                        "(icefall's Zipformer recipe: 0.045) (default: %(default)s)")
    g.add_argument("--lr", type=float, default=2e-3,
                   help="peak learning rate (for --optimizer scaled-adam a relative step size) (default: %(default)s)")
    g.add_argument("--weight-decay", type=float, default=1e-2,
                   help="AdamW decoupled weight decay (matrices); unused by scaled-adam (default: %(default)s)")
    g.add_argument("--warmup-batches", type=int, default=500, help="linear LR warm-up length in batches (default: %(default)s)")
    g.add_argument("--lr-batches", type=float, default=5000.0, help="batch decay constant of the LR (default: %(default)s)")
    g.add_argument("--lr-epochs", type=float, default=6.0, help="epoch decay constant of the LR (default: %(default)s)")
    g.add_argument("--lr-schedule", default="inverse-sqrt", choices=SCHEDULES,
                   help="decay form after warm-up: inverse-sqrt = (1+b/B)^-0.5 (1+e/E)^-0.5, "
                        "eden = ((b^2+B^2)/B^2)^-0.25 ((e^2+E^2)/E^2)^-0.25 (default: %(default)s)")
    g.add_argument("--max-grad-norm", type=float, default=None,
                   help="clip the global gradient L2 norm to this (<= 0: off), applied by the training loop "
                        f"before the optimiser (default: {DEFAULT_MAX_GRAD_NORM:g} with --optimizer adamw; 0 = off "
                        "with scaled-adam, which clips by itself (--clipping-scale); a value given here applies "
                        "with either)")
    g.add_argument("--clipping-scale", type=float, default=2.0,
                   help="--optimizer scaled-adam only: clip the gradient at this multiple of the median of the "
                        "last 100 gradient norms (RMS-weighted, see asr_kd.train.scaled_adam) (<= 0: no "
                        "clipping) (default: %(default)s)")
    g.add_argument("--amp", default="auto", choices=("auto", "none", "bf16", "fp16"),
                   help="autocast on CUDA (auto: bf16 when supported, else fp16); CPU always float32 (default: %(default)s)")
    g.add_argument("--use-fp16", dest="amp", type=mapped_value({"true": "fp16", "false": "none"}, "--use-fp16"),
                   help="icefall's spelling: true = --amp fp16, false = --amp none (default: --amp's)")
    g.add_argument("--seed", type=int, default=42, help="random seed (default: %(default)s)")
    g.add_argument("--max-bad-batches", type=int, default=10,
                   help="abort after this many consecutive non-finite batches (default: %(default)s)")
    add_loss_arguments(parser)

    g = parser.add_argument_group("icefall spellings with no equivalent here")
    add_refused_option(g, "--start-epoch", "an interrupted run continues with --resume (newest checkpoint, "
                                           "mid-epoch included); --continue-from CKPT starts a new run from another's epoch")
    add_refused_option(g, "--world-size", "launch several processes with torchrun --nproc-per-node N "
                                          "-m asr_kd.bin.train ... (or run.sh --num-gpus N)")

    g = parser.add_argument_group("checkpoints and logging")
    g.add_argument("--resume", nargs="?", const="latest", default=None,
                   help="continue this run: from the newest loadable checkpoint of --exp-dir (no value; "
                        "unreadable ones are skipped with a warning) or from the given file. The settings "
                        "must equal the checkpoint's (see --allow-changed-settings). Default: a fresh run")
    g.add_argument("--overwrite", action="store_true",
                   help="start a fresh run even though --exp-dir holds another run's checkpoints: they are "
                        "moved (not deleted) to <exp-dir>/replaced-<time>-<run id>/. Without it such a "
                        "start is refused (flag; default: off)")
    g.add_argument("--allow-changed-settings", action="store_true",
                   help="let --resume continue although settings that change training (lr, loss weights, "
                        "KD flags, data, seed, ...) differ from the checkpoint's; each is logged (flag; default: off)")
    g.add_argument("--init-from", default=None,
                   help="initialise the model weights from this checkpoint (no optimiser state; LR warm-up, "
                        "loss warm-up and the CTC head start afresh) (default: none, random initialisation)")
    g.add_argument("--continue-from", default=None, metavar="CKPT",
                   help="start a new run (new --exp-dir) from the full training state of the epoch "
                        "checkpoint CKPT (epoch-<e>.pt of another run): model, CTC head, optimizer moments "
                        "of parameters present in both runs (new ones, e.g. KD projections, start fresh), "
                        "LR schedule and the batch count driving --warm-step and the delay-penalty gate. "
                        "Epochs continue counting: this run trains epochs e+1 .. e+--num-epochs (default: none)")
    g.add_argument("--save-every-n", type=int, default=2000, help="checkpoint every N batches (0: off) (default: %(default)s)")
    g.add_argument("--keep-last-k", type=int, default=5, help="batch checkpoints to keep (0: all) (default: %(default)s)")
    g.add_argument("--avg", type=int, default=1,
                   help="pretrained.pt = average of the last N epoch checkpoints (0: none) (default: %(default)s)")
    g.add_argument("--log-interval", type=int, default=50, help="batches between log lines (default: %(default)s)")
    g.add_argument("--tensorboard", type=str2bool, default=True,
                   help="true/false: write tensorboard logs to <exp-dir>/tensorboard (default: %(default)s)")
    g.add_argument("--progress", type=str2bool, default=True, help="true/false: tqdm progress bar (default: %(default)s)")

    g = parser.add_argument_group("devices")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda (DDP: one GPU per process); auto: cuda when available, else cpu (default: %(default)s)")
    g.add_argument("--find-unused-parameters", type=str2bool, default=False,
                   help="true/false: DistributedDataParallel find_unused_parameters (default: %(default)s)")


def resolve_max_grad_norm(args: argparse.Namespace) -> argparse.Namespace:
    """Fill in ``--max-grad-norm`` when it was not given: 5 for adamw, 0 (off) for scaled-adam.

    ScaledAdam clips relative to the median of recent gradient norms
    (``--clipping-scale``); a fixed norm clip before it would clip twice.  An
    explicit ``--max-grad-norm`` is kept.  Idempotent; ``build_parser``'s
    parser calls it after parsing, so ``args.max_grad_norm`` is always a number.
    """
    if getattr(args, "max_grad_norm", 0.0) is None:
        scaled = getattr(args, "optimizer", "adamw") == "scaled-adam"
        args.max_grad_norm = 0.0 if scaled else DEFAULT_MAX_GRAD_NORM
    return args


class _TrainingParser(argparse.ArgumentParser):
    """ArgumentParser that resolves defaults depending on other flags (``resolve_max_grad_norm``)."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        ns, rest = super().parse_known_args(args, namespace)
        return resolve_max_grad_norm(ns), rest


def build_parser(with_kd: bool = True) -> argparse.ArgumentParser:
    """Parser with the training flags, plus the KD flags when ``asr_kd.train.kd`` is present."""
    parser = _TrainingParser(
        prog="python -m asr_kd.bin.train",
        description="Train a transducer teacher (--causal false) or streaming student (--causal true).",
    )
    add_training_arguments(parser)
    if with_kd:
        kd = _optional_kd_module()
        if kd is not None and hasattr(kd, "add_kd_arguments"):
            kd.add_kd_arguments(parser)
    return parser


def _optional_kd_module() -> Optional[Any]:
    try:
        return importlib.import_module("asr_kd.train.kd")
    except ModuleNotFoundError as e:
        if e.name != "asr_kd.train.kd":
            raise
        return None


def sanitize_args(args: argparse.Namespace) -> dict[str, Any]:
    """``vars(args)`` with only str/int/float/bool/None/list values (for weights_only checkpoints)."""
    out: dict[str, Any] = {}
    for k, v in vars(args).items():
        if isinstance(v, tuple):
            v = list(v)
        if v is None or isinstance(v, (str, int, float, bool)) or (
            isinstance(v, list) and all(isinstance(x, (str, int, float, bool)) for x in v)
        ):
            out[k] = v
        else:
            out[k] = str(v)
    return out
