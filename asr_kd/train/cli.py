"""The command line of ``python -m asr_kd.bin.train``: every flag, and the typed settings built from them.

``build_parser()`` holds every flag of training (model, data, optimisation,
loss, distillation, checkpoints, DDP); ``settings_from_args(args)`` turns the
parsed namespace into one frozen ``asr_kd.train.settings.TrainingSettings``
(validating flag combinations, one line naming the flags) and records the
flat flag dictionary checkpoints keep (``sanitize_args``).  Nothing past the
entry point sees the namespace.  Units: ``--chunk-ms`` / ``--left-context-ms``
are milliseconds on the command line (as in decoding and export) and become
encoder frames of 40 ms (= 4 feature frames of 10 ms) at parse time: the
namespace's ``chunk_size`` / ``left_context``, the settings and the ``args``
checkpoints keep are in encoder frames, as they always were.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional, Sequence

from asr_kd.data.datamodule import DataConfig
from asr_kd.distill import DEFAULT_ALPHA_MIN, SMOOTHING_METHODS
from asr_kd.models.encoders import ENCODER_TYPES
from asr_kd.models.presets import preset_names
from asr_kd.options import add_refused_option, mapped_value
from asr_kd.train.kd_config import (DEFAULT_HIDDEN_SCALE, DEFAULT_OUTPUT_SCALE, DEFAULT_TARGET_ENTROPY,
                                    DEFAULT_TEMPERATURE, KD_STAGES, KDConfig, parse_layer_pairs)
from asr_kd.train.loss_factory import LossSettings
from asr_kd.train.losses import TransducerLossConfig
from asr_kd.train.optim import OPTIMIZERS, SCHEDULES, OptimConfig
from asr_kd.train.settings import ModelSettings, RunSettings, TrainingSettings
from asr_kd.train.trainer import TrainerConfig

__all__ = ["str2bool", "int_list", "ms_list", "FRAME_MS", "frontend_scale", "add_training_arguments",
           "add_loss_arguments", "add_kd_arguments", "build_parser", "sanitize_args", "settings_from_args",
           "parse_settings", "DEFAULT_MAX_GRAD_NORM"]

#: --max-grad-norm when not given and --optimizer is adamw (with scaled-adam: 0, off)
DEFAULT_MAX_GRAD_NORM = 5.0

#: one encoder frame in ms: --chunk-ms / --left-context-ms are multiples of it
FRAME_MS = 40

#: --model-size values of either encoder (asr_kd.train.run.build_model_config refuses the other encoder's)
PRESET_CHOICES = tuple(sorted(set(preset_names("conformer")) | set(preset_names("zipformer"))))



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


def ms_list(option: str, allow_zero: bool) -> Any:
    """argparse type of ``option`` (--chunk-ms, --left-context-ms): "320,160" -> (8, 4) encoder frames.

    Each entry is a multiple of ``FRAME_MS`` (positive, or also 0 with
    ``allow_zero``) or -1, which stays -1 (full context / unlimited).  Anything
    else is one argparse error line (naming ``option``) with the nearest valid values.
    """
    lowest = 0 if allow_zero else FRAME_MS
    minus_one = "-1 (unlimited)" if allow_zero else "-1 (full context)"

    def convert(v: str) -> tuple[int, ...]:
        frames = []
        for ms in int_list(v):
            if ms == -1:
                frames.append(-1)
            elif ms > 0 and ms % FRAME_MS:
                below = ms // FRAME_MS * FRAME_MS
                near = " or ".join(str(x) for x in (below, below + FRAME_MS) if x >= lowest)
                raise argparse.ArgumentTypeError(
                    f"{ms} ms is not a multiple of {FRAME_MS} ms (one encoder frame); nearest valid: {near}")
            elif ms < lowest:
                raise argparse.ArgumentTypeError(
                    f"{ms} ms: expected {'' if allow_zero else 'positive '}multiples of {FRAME_MS} ms "
                    f"(one encoder frame) or {minus_one}")
            else:
                frames.append(ms // FRAME_MS)
        return tuple(frames)

    convert.__name__ = option.lstrip("-").replace("-", "_")
    return convert


def frontend_scale(v: str) -> "float | str":
    """argparse type of --frontend-scale: ``"sqrt-d"`` (kept as is, resolved with the model's d_model) or a number > 0."""
    if v == "sqrt-d":
        return v
    try:
        x = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0 or sqrt-d, got {v!r}") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0 or sqrt-d, got {v!r}")
    return x


def layer_pairs(v: str) -> tuple[tuple[int, int], ...]:
    """argparse type of --kd-hidden-layers: "3:5,-1:-1" -> ((3, 5), (-1, -1)) (``kd_config.parse_layer_pairs``)."""
    try:
        return parse_layer_pairs(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """All flags of transducer training (not the KD ones, ``add_kd_arguments``)."""
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
    # dest "preset": the key stored in checkpoints and train_stats.json (older runs resume unchanged);
    # --preset stays accepted for older command lines, undocumented: run.sh --preset names a recipe conf
    g.add_argument("--model-size", "--preset", dest="preset", default="small", choices=PRESET_CHOICES,
                   metavar="SIZE",
                   help="model size: tiny|small|full|large for --encoder conformer, cpu|tiny|small|medium|large "
                        "for --encoder zipformer (default: %(default)s)")
    g.add_argument("--causal", type=str2bool, default=False,
                   help="true/false; false: full-context teacher; true: chunk-wise streaming student (default: %(default)s)")
    g.add_argument("--chunk-ms", dest="chunk_size", type=ms_list("--chunk-ms", allow_zero=False), default=None,
                   metavar="MS[,MS...]",
                   help="student chunk sizes in milliseconds, positive multiples of 40 (one encoder frame) or -1 "
                        "(full context), e.g. 640 or 640,320,1280; the first is the decoding default; "
                        "zipformer: multiples of 160 ms (4 encoder frames) (default: the model size's, 640 ms for "
                        "the conformer, 320 ms for the zipformer)")
    g.add_argument("--left-context-ms", dest="left_context", type=ms_list("--left-context-ms", allow_zero=True),
                   default=None, metavar="MS[,MS...]",
                   help="student attention left contexts in milliseconds, multiples of 40, -1 = unlimited, "
                        "e.g. 2560 or 2560,1280,-1; zipformer: multiples of 160 ms (default: the model size's, "
                        "2560 ms = 2.56 s)")
    add_refused_option(g, "--chunk-size", "chunk sizes are --chunk-ms in milliseconds (8 encoder frames = "
                                          "--chunk-ms 320; icefall's --chunk-size 16 at 50 Hz = 320 ms)")
    add_refused_option(g, "--left-context", "left contexts are --left-context-ms in milliseconds (32 encoder "
                                            "frames = --left-context-ms 1280; icefall's --left-context-frames "
                                            "128 at 50 Hz = 2560 ms)")
    g.add_argument("--dynamic-chunk", type=str2bool, default=None,
                   help="true/false: draw chunk size/left context per batch from the lists "
                        "(default: true when a list has several entries)")
    g.add_argument("--dropout", type=float, default=None, help="override the model size's dropout (default: the model size's)")
    g.add_argument("--num-layers", type=int, default=None,
                   help="conformer only: override the model size's number of encoder blocks (default: the model size's, "
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


def add_loss_arguments(parser: argparse.ArgumentParser) -> None:
    """The transducer-loss flags (see TransducerLossConfig)."""
    g = parser.add_argument_group("transducer loss")
    g.add_argument("--prune-range", type=int, default=5, help="pruned-loss symbol range R (>= 2) (default: %(default)s)")
    g.add_argument("--am-scale", type=float, default=0.0, help="am_only_scale of the smoothed simple loss (default: %(default)s)")
    g.add_argument("--lm-scale", type=float, default=0.25, help="lm_only_scale of the smoothed simple loss (default: %(default)s)")
    g.add_argument("--simple-loss-scale", type=float, default=0.5,
                   help="weight of the simple loss after the warm-up (starts at 1) (default: %(default)s)")
    g.add_argument("--pruned-scale-start", type=float, default=0.1,
                   help="weight of the pruned loss at step 0 (ends at 1) (default: %(default)s)")
    g.add_argument("--warm-step", type=int, default=2000,
                   help="batches over which the two loss weights reach their final values (default: %(default)s)")
    g.add_argument("--delay-penalty", type=float, default=0.0,
                   help="k2 delay penalty on both transducer losses, applied from --warm-step on "
                        "(0: off; the k2 authors tried 0.0015-0.01) (default: %(default)s)")
    g.add_argument("--ctc-scale", type=float, default=0.0,
                   help="weight of an auxiliary CTC loss on the encoder output (0: off) (default: %(default)s)")


def add_kd_arguments(parser: argparse.ArgumentParser) -> None:
    """The distillation flags (no effect unless --kd-stage is given)."""
    g = parser.add_argument_group("knowledge distillation (asr_kd.train.kd)")
    g.add_argument("--kd-stage", default=None, choices=KD_STAGES,
                   help="hidden: stage 1 (transducer + lambda_h MSE); output: stage 2 (transducer + lambda_o KL "
                        "over the pruned lattice); joint: one-stage baseline (both). Default: no distillation")
    g.add_argument("--teacher-checkpoint", default=None,
                   help="teacher checkpoint of asr_kd.train (e.g. exp/teacher/pretrained.pt); required with --kd-stage (default: none)")
    g.add_argument("--teacher-cache", default=None,
                   help="directory written by python -m asr_kd.bin.cache_teacher: teacher encoder outputs and "
                        "hidden layers read from disk instead of running the teacher encoder (default: none, the teacher runs)")
    g.add_argument("--kd-hidden-layers", type=layer_pairs, default=((-1, -1),),
                   help="student:teacher encoder layer pairs, 0-based, negatives from the end, e.g. '2:5,-1:-1' "
                        "(-1 = the encoder output) (default: -1:-1)")
    g.add_argument("--kd-hidden-scale", type=float, default=DEFAULT_HIDDEN_SCALE,
                   help="lambda_h, weight of the hidden MSE (mean over frames, dims and layer pairs) (default: %(default)s)")
    g.add_argument("--kd-output-scale", type=float, default=DEFAULT_OUTPUT_SCALE,
                   help="lambda_o, weight of the output KL (sum over valid pruned nodes / encoder frames) (default: %(default)s)")
    g.add_argument("--kd-projection", default="auto", choices=("auto", "true", "false"),
                   help="learned Linear on the student side of each layer pair (auto: only when dims differ) (default: %(default)s)")
    g.add_argument("--kd-smoothing", default="adaptive-power", choices=SMOOTHING_METHODS,
                   help="teacher smoothing: adaptive-power (the method), temperature (Hinton), none (default: %(default)s)")
    g.add_argument("--kd-temperature", type=float, default=DEFAULT_TEMPERATURE,
                   help="tau for --kd-smoothing temperature (teacher and student tempered, KL x tau^2) (default: %(default)s)")
    g.add_argument("--kd-target-entropy", type=float, default=DEFAULT_TARGET_ENTROPY,
                   help="target entropy H* (nats) of adaptive-power smoothing (default: %(default)s)")
    g.add_argument("--kd-alpha-min", type=float, default=DEFAULT_ALPHA_MIN,
                   help="lower bound of the adaptive power alpha (effective temperature <= 1/alpha_min) (default: %(default)s)")
    g.add_argument("--kd-distribution", default="full", choices=("full", "collapsed"),
                   help="full vocabulary, or the collapsed 3-way {blank, next label, rest} baseline (default: %(default)s)")
    g.add_argument("--kd-ranges", default="student", choices=("student", "teacher"),
                   help="whose simple-loss pruning ranges define the lattice nodes of the KL (default: %(default)s)")
    g.add_argument("--kd-occupancy", type=str2bool, default=False,
                   help="true/false: weight KL nodes by the (detached) simple-lattice occupancy of the range owner (default: %(default)s)")
    g.add_argument("--kd-teacher-input", default="clean", choices=("clean", "augmented"),
                   help="teacher input: clean (before SpecAugment/noise) or the student's augmented features (default: %(default)s)")
    g.add_argument("--kd-teacher-delay-ms", type=int, default=0,
                   help="delay the teacher's encoder frames by this many ms (a multiple of 40) before any target is "
                        "taken from them: student frame t learns from teacher frame t - d, so a chunk-wise student is "
                        "not asked to emit before it can have heard (0: off) (default: %(default)s)")
    g.add_argument("--kd-mask-lead", type=str2bool, default=False,
                   help="true/false: leave out of the KL the nodes that have emitted nothing yet (u = 0), where "
                        "the full-context teacher gives the first label its mass already in the leading silence "
                        "and a streaming student can only learn a prior over first words (the transducer loss "
                        "still trains them) (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m asr_kd.bin.train``: training, loss and distillation flags."""
    parser = argparse.ArgumentParser(
        prog="python -m asr_kd.bin.train",
        description="Train a transducer teacher (--causal false) or streaming student (--causal true).",
    )
    add_training_arguments(parser)
    add_kd_arguments(parser)
    return parser


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


def _resolved(args: argparse.Namespace) -> argparse.Namespace:
    """A copy of ``args`` with the defaults that depend on other flags filled in.

    ``--max-grad-norm`` not given: 5 for adamw, 0 (off) for scaled-adam, which
    clips relative to the median of recent gradient norms (``--clipping-scale``);
    a fixed norm clip before it would clip twice.  An explicit value is kept.
    """
    ns = argparse.Namespace(**vars(args))
    if ns.max_grad_norm is None:
        ns.max_grad_norm = 0.0 if ns.optimizer == "scaled-adam" else DEFAULT_MAX_GRAD_NORM
    return ns


def _check_flag_combinations(a: argparse.Namespace) -> None:
    """One-line ValueErrors for flag combinations that cannot mean anything."""
    if a.resume is not None and a.overwrite:
        raise ValueError("--resume and --overwrite exclude each other: resume the run, or move it aside")
    if a.continue_from and a.init_from:
        raise ValueError("--continue-from and --init-from exclude each other (--continue-from includes the weights)")
    if a.num_epochs < 1:
        raise ValueError(f"--num-epochs must be >= 1, got {a.num_epochs}")
    if a.min_cut_duration > a.max_cut_duration:
        raise ValueError(f"--min-cut-duration {a.min_cut_duration} is above --max-cut-duration "
                         f"{a.max_cut_duration}: no cut could be kept")
    if a.kd_stage is not None and a.teacher_cache and a.speed_perturb:
        raise ValueError(
            "--teacher-cache cannot be used with --speed-perturb true: perturbed copies have new "
            "cut ids and features the cache does not hold; run the teacher live (no --teacher-cache)"
        )


def _kd_config(a: argparse.Namespace) -> Optional[KDConfig]:
    """KDConfig of the --kd-* / --teacher-* flags (ValueError on inconsistent settings); None without --kd-stage."""
    if a.kd_stage is None:
        return None
    layers = parse_layer_pairs(a.kd_hidden_layers) if isinstance(a.kd_hidden_layers, str) else a.kd_hidden_layers
    return KDConfig(
        stage=a.kd_stage, teacher_checkpoint=a.teacher_checkpoint, teacher_cache=a.teacher_cache,
        hidden_layers=tuple((int(s), int(t)) for s, t in layers), hidden_scale=float(a.kd_hidden_scale),
        output_scale=float(a.kd_output_scale), projection=str(a.kd_projection), smoothing=str(a.kd_smoothing),
        temperature=float(a.kd_temperature), target_entropy=float(a.kd_target_entropy),
        alpha_min=float(a.kd_alpha_min), distribution=str(a.kd_distribution), ranges=str(a.kd_ranges),
        occupancy=bool(a.kd_occupancy), teacher_input=str(a.kd_teacher_input),
        teacher_delay_ms=int(a.kd_teacher_delay_ms), mask_lead=bool(a.kd_mask_lead),
    )


def settings_from_args(args: argparse.Namespace) -> TrainingSettings:
    """The frozen settings of a run from ``build_parser()``'s namespace (one-line ValueErrors naming the flags).

    ``record`` is ``sanitize_args`` of the namespace with its dependent defaults
    filled in (``--max-grad-norm``): exactly the dictionary every checkpoint and
    ``train_stats.json`` keeps under ``args``.
    """
    a = _resolved(args)
    _check_flag_combinations(a)
    return TrainingSettings(
        run=RunSettings(
            bpe_model=a.bpe_model, cuts_train=a.cuts_train, cuts_valid=a.cuts_valid,
            min_cut_duration=float(a.min_cut_duration), max_cut_duration=float(a.max_cut_duration),
            resume=a.resume, overwrite=bool(a.overwrite), allow_changed_settings=bool(a.allow_changed_settings),
            init_from=a.init_from, continue_from=a.continue_from, seed=int(a.seed), device=a.device,
            avg=int(a.avg), tensorboard=bool(a.tensorboard),
        ),
        model=ModelSettings(
            encoder=a.encoder, preset=a.preset, causal=bool(a.causal),
            chunk_size=None if a.chunk_size is None else tuple(a.chunk_size),
            left_context=None if a.left_context is None else tuple(a.left_context),
            dynamic_chunk=a.dynamic_chunk, dropout=a.dropout, num_layers=a.num_layers,
            frontend_scale=a.frontend_scale,
        ),
        optim=OptimConfig(optimizer=a.optimizer, lr=a.lr, weight_decay=a.weight_decay,
                          warmup_batches=a.warmup_batches, lr_batches=a.lr_batches, lr_epochs=a.lr_epochs,
                          schedule=a.lr_schedule, clipping_scale=a.clipping_scale),
        data=DataConfig(max_duration=a.max_duration, num_buckets=a.num_buckets, num_workers=a.num_workers,
                        spec_augment=a.spec_augment, noise_cuts=a.noise_cuts, speed_perturb=a.speed_perturb,
                        on_the_fly_feats=a.on_the_fly_feats, seed=a.seed),
        trainer=TrainerConfig(
            exp_dir=Path(a.exp_dir), num_epochs=a.num_epochs, max_grad_norm=a.max_grad_norm, amp=a.amp,
            save_every_n=a.save_every_n, keep_last_k=a.keep_last_k, log_interval=a.log_interval,
            max_bad_batches=a.max_bad_batches, find_unused_parameters=a.find_unused_parameters,
            progress=a.progress, seed=a.seed,
        ),
        loss=LossSettings(
            transducer=TransducerLossConfig(
                prune_range=a.prune_range, am_scale=a.am_scale, lm_scale=a.lm_scale,
                simple_loss_scale=a.simple_loss_scale, pruned_scale_start=a.pruned_scale_start,
                warm_step=a.warm_step, delay_penalty=float(a.delay_penalty),
            ),
            ctc_scale=float(a.ctc_scale),
            kd=_kd_config(a),
        ),
        record=sanitize_args(a),
    )


def parse_settings(argv: Optional[Sequence[str]] = None) -> TrainingSettings:
    """``settings_from_args(build_parser().parse_args(argv))`` (scripts and tests)."""
    return settings_from_args(build_parser().parse_args(argv))
