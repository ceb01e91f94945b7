"""Distillation flags of ``python -m asr_kd.bin.train`` and their parsed form.

``add_kd_arguments(parser)`` adds the ``--kd-*`` / ``--teacher-*`` flags;
``kd_config_from_args(args)`` turns them into a validated :class:`KDConfig`.
The method and the reasons for every default are in ``asr_kd.train.kd`` and
docs/method.md; this module only parses and validates.

Defaults (the reasons, and what the default synth run logs, are in
docs/method.md, "Training integration"):

* ``--kd-hidden-scale`` 1.0: at the start of stage 1 (random student) the
  MSE is ~2.1 against a transducer loss of ~8.2 nats/frame, and both fall
  together; the MSE stays a sizeable but not dominant share.
* ``--kd-output-scale`` 1.0: KL/frame and the transducer loss/frame are both
  nats per encoder frame, so lambda_o = 1 weighs a nat of KL like a nat of
  likelihood (random student: KL 15 vs transducer 8.7 nats/frame).
* ``--kd-target-entropy`` 0.5 nats: nodes sharper than the target are
  smoothed up to it, while nodes where the teacher hesitates (above it) are
  left alone; read the logged ``kd_teacher_entropy`` before changing it.
* ``--kd-occupancy false``: every valid pruned node counts (the usual
  lattice-KD sum); ``true`` weights nodes by the range owner's occupancy.
* ``--kd-teacher-input clean``: the teacher sees the un-augmented input.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional

from asr_kd.distill import DEFAULT_ALPHA_MIN, SMOOTHING_METHODS

__all__ = [
    "KD_STAGES",
    "KDConfig",
    "add_kd_arguments",
    "kd_config_from_args",
    "parse_layer_pairs",
    "resolve_layer",
]

KD_STAGES = ("hidden", "output", "joint")
_WHERE = "asr_kd.train.kd"

#: defaults of the numeric KD flags (one definition; the parser and KDConfig use them)
DEFAULT_HIDDEN_SCALE = 1.0
DEFAULT_OUTPUT_SCALE = 1.0
DEFAULT_TEMPERATURE = 2.0
DEFAULT_TARGET_ENTROPY = 0.5


def parse_layer_pairs(spec: str) -> tuple[tuple[int, int], ...]:
    """``"-1:-1"`` or ``"3:5,-1:-1"`` -> ((student, teacher), ...) 0-based encoder layer indices.

    Negative indices count from the end. The last index (-1) stands for the
    encoder output (after the encoder's final norm, what the joiner sees);
    the others are the outputs of those encoder layers (a Zipformer's stacks). Raises ValueError
    naming the bad entry.
    """
    pairs = []
    text = str(spec).replace(" ", "")
    if not text:
        raise ValueError(f"{_WHERE}: --kd-hidden-layers is empty; expected e.g. '-1:-1' or '2:5,-1:-1'")
    for item in text.split(","):
        parts = item.split(":")
        if len(parts) != 2:
            raise ValueError(
                f"{_WHERE}: --kd-hidden-layers entry {item!r} must be 'student:teacher' "
                f"(two layer indices separated by ':'), in {spec!r}"
            )
        try:
            s, t = int(parts[0]), int(parts[1])
        except ValueError:
            raise ValueError(
                f"{_WHERE}: --kd-hidden-layers entry {item!r} holds a non-integer layer index, in {spec!r}"
            ) from None
        pairs.append((s, t))
    if len(set(pairs)) != len(pairs):
        raise ValueError(f"{_WHERE}: --kd-hidden-layers {spec!r} lists a layer pair twice")
    return tuple(pairs)


def resolve_layer(index: int, num_layers: int, who: str, unit: str = "layers") -> int:
    """Map a possibly negative layer index into [0, num_layers); ValueError when out of range.

    ``unit`` names what the encoder's layers are in the message ("stacks" for a Zipformer).
    """
    if not -num_layers <= index < num_layers:
        raise ValueError(
            f"{_WHERE}: --kd-hidden-layers: {who} layer {index} is out of range; "
            f"the {who} encoder has {num_layers} {unit} (valid: {-num_layers}..{num_layers - 1})"
        )
    return index % num_layers


def _layer_pairs_type(v: str) -> tuple[tuple[int, int], ...]:
    try:
        return parse_layer_pairs(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _str2bool(v: str) -> bool:
    from asr_kd.train.args import str2bool

    return str2bool(v)


@dataclass
class KDConfig:
    """Parsed distillation options (one field per flag, see ``add_kd_arguments``)."""

    stage: str
    teacher_checkpoint: str
    teacher_cache: Optional[str] = None
    hidden_layers: tuple[tuple[int, int], ...] = ((-1, -1),)
    hidden_scale: float = DEFAULT_HIDDEN_SCALE
    output_scale: float = DEFAULT_OUTPUT_SCALE
    projection: str = "auto"
    smoothing: str = "adaptive-power"
    temperature: float = DEFAULT_TEMPERATURE
    target_entropy: float = DEFAULT_TARGET_ENTROPY
    alpha_min: float = DEFAULT_ALPHA_MIN
    distribution: str = "full"
    ranges: str = "student"
    occupancy: bool = False
    teacher_input: str = "clean"

    def __post_init__(self) -> None:
        if self.stage not in KD_STAGES:
            raise ValueError(f"{_WHERE}: --kd-stage must be one of {KD_STAGES}, got {self.stage!r}")
        if not self.teacher_checkpoint:
            raise ValueError(
                f"{_WHERE}: --kd-stage {self.stage} needs --teacher-checkpoint (the teacher's decoder and "
                "joiner are needed even with --teacher-cache)"
            )
        checks = [
            (self.projection in ("auto", "true", "false"), f"--kd-projection must be auto/true/false, got {self.projection!r}"),
            (self.smoothing in SMOOTHING_METHODS, f"--kd-smoothing must be one of {SMOOTHING_METHODS}, got {self.smoothing!r}"),
            (self.distribution in ("full", "collapsed"), f"--kd-distribution must be full/collapsed, got {self.distribution!r}"),
            (self.ranges in ("student", "teacher"), f"--kd-ranges must be student/teacher, got {self.ranges!r}"),
            (self.teacher_input in ("clean", "augmented"), f"--kd-teacher-input must be clean/augmented, got {self.teacher_input!r}"),
            (self.hidden_scale >= 0 and self.output_scale >= 0, "--kd-hidden-scale and --kd-output-scale must be >= 0"),
            (self.temperature > 0, f"--kd-temperature must be > 0, got {self.temperature}"),
            (self.target_entropy > 0, f"--kd-target-entropy must be > 0 nats, got {self.target_entropy}"),
            (0 < self.alpha_min <= 1, f"--kd-alpha-min must lie in (0, 1], got {self.alpha_min}"),
            (len(self.hidden_layers) > 0, "--kd-hidden-layers needs at least one pair"),
        ]  # fmt: skip
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"{_WHERE}: {msg}")
        if self.teacher_cache and self.teacher_input != "clean":
            raise ValueError(
                f"{_WHERE}: --teacher-cache stores the teacher's outputs on clean features, so it needs "
                f"--kd-teacher-input clean (got {self.teacher_input!r})"
            )

    @property
    def uses_hidden(self) -> bool:
        return self.stage in ("hidden", "joint")

    @property
    def uses_output(self) -> bool:
        return self.stage in ("output", "joint")

    def smooth_opts(self) -> dict[str, float]:
        """The ``**smooth_opts`` of ``output_kd_loss`` for this smoothing method."""
        if self.smoothing == "temperature":
            return {"temperature": self.temperature}
        if self.smoothing == "adaptive-power":
            return {"target_entropy": self.target_entropy, "alpha_min": self.alpha_min}
        return {}


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
    g.add_argument("--kd-hidden-layers", type=_layer_pairs_type, default=((-1, -1),),
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
    g.add_argument("--kd-occupancy", type=_str2bool, default=False,
                   help="true/false: weight KL nodes by the (detached) simple-lattice occupancy of the range owner (default: %(default)s)")
    g.add_argument("--kd-teacher-input", default="clean", choices=("clean", "augmented"),
                   help="teacher input: clean (before SpecAugment/noise) or the student's augmented features (default: %(default)s)")


def kd_config_from_args(args: argparse.Namespace) -> KDConfig:
    """KDConfig from parsed flags (ValueError on inconsistent settings)."""
    layers = args.kd_hidden_layers
    if isinstance(layers, str):
        layers = parse_layer_pairs(layers)
    return KDConfig(
        stage=args.kd_stage,
        teacher_checkpoint=args.teacher_checkpoint,
        teacher_cache=args.teacher_cache,
        hidden_layers=tuple((int(s), int(t)) for s, t in layers),
        hidden_scale=float(args.kd_hidden_scale),
        output_scale=float(args.kd_output_scale),
        projection=str(args.kd_projection),
        smoothing=str(args.kd_smoothing),
        temperature=float(args.kd_temperature),
        target_entropy=float(args.kd_target_entropy),
        alpha_min=float(args.kd_alpha_min),
        distribution=str(args.kd_distribution),
        ranges=str(args.kd_ranges),
        occupancy=bool(args.kd_occupancy),
        teacher_input=str(args.kd_teacher_input),
    )
