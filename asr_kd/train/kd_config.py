"""Distillation settings: :class:`KDConfig` (one field per ``--kd-*`` / ``--teacher-*`` flag) and its validation.

The flags themselves are defined in ``asr_kd.train.cli`` (``add_kd_arguments``),
which builds a :class:`KDConfig` from them; the method and the reasons for
every default are in ``asr_kd.train.kd`` and docs/method.md; this module only
holds the settings, their defaults and their checks.

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
* ``--kd-teacher-delay-ms 0``: teacher frame t teaches student frame t (see
  ``asr_kd.distill.delay`` for what a delay changes).
* ``--kd-mask-lead false``: the KL covers the lead-in too (``true`` leaves out
  the nodes at u = 0, before anything is emitted: ``asr_kd.distill.lead``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from asr_kd.distill import DEFAULT_ALPHA_MIN, SMOOTHING_METHODS
from asr_kd.models.units import ms_to_frames

__all__ = [
    "KD_STAGES",
    "KDConfig",
    "parse_layer_pairs",
    "resolve_layer",
    "DEFAULT_HIDDEN_SCALE",
    "DEFAULT_OUTPUT_SCALE",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TARGET_ENTROPY",
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


@dataclass(frozen=True)
class KDConfig:
    """Distillation options (one field per flag, see ``asr_kd.train.cli.add_kd_arguments``)."""

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
    teacher_delay_ms: int = 0
    mask_lead: bool = False

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
        try:
            self.teacher_delay_frames  # a whole number of encoder frames, or 0
        except ValueError as e:
            raise ValueError(f"{_WHERE}: {e}") from None
        if self.teacher_cache and self.teacher_input != "clean":
            raise ValueError(
                f"{_WHERE}: --teacher-cache stores the teacher's outputs on clean features, so it needs "
                f"--kd-teacher-input clean (got {self.teacher_input!r})"
            )

    @property
    def uses_hidden(self) -> bool:
        return self.stage in ("hidden", "joint")

    @property
    def teacher_delay_frames(self) -> int:
        """--kd-teacher-delay-ms in encoder frames (``asr_kd.distill.delay``)."""
        return ms_to_frames(self.teacher_delay_ms, "--kd-teacher-delay-ms", allow_zero=True)

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
