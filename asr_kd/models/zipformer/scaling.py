"""Zipformer building blocks without learnt structure: activations, BiasNorm, schedules, bypass.

Facts from icefall's zipformer recipe (``scaling.py``, as of commit 36e0420c)
and Yao et al. 2024; the code here is our own.

* SwooshR(x) = log(1 + e^(x-1)) - 0.08 x - 0.313261687   (SwooshR(0) ~ 0)
* SwooshL(x) = log(1 + e^(x-4)) - 0.08 x - 0.035
* BiasNorm(x) = x exp(gamma) / sqrt(mean_c (x - b)^2): a learnt per-channel
  bias b (only inside the RMS; it is not subtracted from the output) and a
  learnt scalar log-scale gamma (init 1.0, held to [-1.5, 1.5] in training
  by ``hold_in_range``). No epsilon, as in the recipe.
* ``ScheduledFloat``: a value piecewise linear in the global batch count
  (held at the end values outside the given points); ``default`` when the
  batch count was never set or the module is not training.
* ``Bypass``: out = orig + (new - orig) s with a learnt per-channel s
  (init 0.5); in training s is held to [scale_min, 1] by ``hold_in_range``
  with scale_min scheduled (0, 0.9) -> (20000, 0.2).
* ``hold_in_range`` (the recipe's ``limit_param_value``): the forward value
  is the parameter itself, in training and evaluation alike; only the
  gradient of an element outside [lo, hi] that would push it further out
  has its sign flipped, so the optimiser walks it back. A forward clamp
  would instead train the model with the clamped value while evaluation
  uses the raw one (s = 0.5 at initialisation against a training minimum of
  0.9 for the first ~3,300 h of audio): the evaluated model would not be the
  trained one. The recipe applies it at random on 60% of the calls to save
  time; here it applies on every training call (no random draw).

icefall's Balancer, Whiten and ScaleGrad are identity in the forward pass
(they only shape gradients in training) and are not implemented; neither are
the layer-skip ("skip_rate") and straight-through options of the bypass.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "swoosh_r",
    "swoosh_l",
    "SwooshR",
    "SwooshL",
    "BiasNorm",
    "ScheduledFloat",
    "Bypass",
    "scaled_linear",
    "set_batch_count",
]

_SWOOSH_R_OFFSET = 0.313261687
_SWOOSH_L_OFFSET = 0.035


def swoosh_r(x: Tensor) -> Tensor:
    """SwooshR(x) = log(1 + e^(x-1)) - 0.08 x - 0.313261687 (elementwise)."""
    return F.softplus(x - 1.0) - 0.08 * x - _SWOOSH_R_OFFSET


def swoosh_l(x: Tensor) -> Tensor:
    """SwooshL(x) = log(1 + e^(x-4)) - 0.08 x - 0.035 (elementwise)."""
    return F.softplus(x - 4.0) - 0.08 * x - _SWOOSH_L_OFFSET


class SwooshR(nn.Module):
    """Module form of :func:`swoosh_r`."""

    def forward(self, x: Tensor) -> Tensor:
        return swoosh_r(x)


class SwooshL(nn.Module):
    """Module form of :func:`swoosh_l`."""

    def forward(self, x: Tensor) -> Tensor:
        return swoosh_l(x)


class ScheduledFloat:
    """A float that is piecewise linear in the training batch count.

    ``ScheduledFloat((0, 0.9), (20000, 0.2), default=0.2)``: 0.9 at batch 0,
    linear to 0.2 at batch 20000, constant outside.  ``value(training)``
    returns ``default`` when not training or when ``batch_count`` is None
    (never set).  Not a module: it holds no tensors and is not saved in a
    state_dict; :func:`set_batch_count` updates every instance found as an
    attribute of a module.
    """

    def __init__(self, *points: tuple[float, float], default: float) -> None:
        if not points:
            raise ValueError("zipformer: ScheduledFloat needs at least one (batch, value) point")
        xs = [float(p[0]) for p in points]
        if any(b <= a for a, b in zip(xs, xs[1:])):
            raise ValueError(f"zipformer: ScheduledFloat batch points must increase, got {xs}")
        self.points = [(float(x), float(y)) for x, y in points]
        self.default = float(default)
        self.batch_count: Optional[float] = None

    def at(self, batch_count: float) -> float:
        """The schedule's value at ``batch_count``."""
        pts = self.points
        if batch_count <= pts[0][0]:
            return pts[0][1]
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            if batch_count <= x1:
                return y0 + (y1 - y0) * (batch_count - x0) / (x1 - x0)
        return pts[-1][1]

    def value(self, training: bool) -> float:
        if not training or self.batch_count is None:
            return self.default
        return self.at(self.batch_count)

    def __repr__(self) -> str:
        return f"ScheduledFloat({self.points}, default={self.default}, batch_count={self.batch_count})"


def set_batch_count(module: nn.Module, batch_count: Optional[float]) -> None:
    """Set ``batch_count`` on every ScheduledFloat held by ``module`` or its sub-modules."""
    for m in module.modules():
        for v in vars(m).values():
            if isinstance(v, ScheduledFloat):
                v.batch_count = None if batch_count is None else float(batch_count)


class _HoldInRange(torch.autograd.Function):
    """Identity forward; backward flips the sign of gradients that push an out-of-range element further out."""

    @staticmethod
    def forward(ctx, x: Tensor, lo: float, hi: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        # gradient descent moves x by -grad: below lo a positive grad lowers x further, above hi a negative one raises it
        outward = ((x < ctx.lo) & (grad > 0)) | ((x > ctx.hi) & (grad < 0))
        return torch.where(outward, -grad, grad), None, None


def hold_in_range(x: Tensor, lo: float, hi: float, training: bool) -> Tensor:
    """``x`` unchanged; in training its gradient walks elements outside [lo, hi] back inside.

    x: a parameter of any shape.  The forward value never changes, so a model
    evaluates with exactly the values it was trained with.
    """
    if not training or not x.requires_grad:
        return x
    if hi < lo:
        raise ValueError(f"hold_in_range: upper limit {hi} is below the lower limit {lo}")
    return _HoldInRange.apply(x, lo, hi)


class BiasNorm(nn.Module):
    """BiasNorm over the last dim: ``x exp(gamma) / sqrt(mean_c (x - b)^2)``.

    x: (..., C) -> (..., C).  b (C,) init N(0, 1e-4^2); gamma scalar init
    1.0, clamped to [-1.5, 1.5] in training (the recipe's parameter limit).
    """

    def __init__(self, num_channels: int, log_scale_min: float = -1.5, log_scale_max: float = 1.5) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.bias = nn.Parameter(torch.randn(num_channels) * 1e-4)
        self.log_scale = nn.Parameter(torch.tensor(1.0))
        self.log_scale_min = log_scale_min
        self.log_scale_max = log_scale_max

    def forward(self, x: Tensor) -> Tensor:
        log_scale = hold_in_range(self.log_scale, self.log_scale_min, self.log_scale_max, self.training)
        scale = ((x - self.bias) ** 2).mean(dim=-1, keepdim=True) ** -0.5
        return x * scale * log_scale.exp()


class Bypass(nn.Module):
    """Learnt per-channel interpolation ``orig + (new - orig) s``; (..., C) inputs.

    In training, s is held to [scale_min(batch_count), 1.0] by
    ``hold_in_range`` (gradient only: the value used is s itself, in training
    and evaluation), with scale_min = ScheduledFloat((0, 0.9), (20000, 0.2)).
    s is initialised to 0.5.
    """

    def __init__(self, num_channels: int, init_scale: float = 0.5) -> None:
        super().__init__()
        self.bypass_scale = nn.Parameter(torch.full((num_channels,), float(init_scale)))
        self.scale_min = ScheduledFloat((0.0, 0.9), (20000.0, 0.2), default=0.2)
        self.scale_max = 1.0

    def effective_scale(self) -> Tensor:
        """The per-channel s (the parameter's value in both modes; training also holds it in range)."""
        return hold_in_range(self.bypass_scale, self.scale_min.value(self.training), self.scale_max, self.training)

    def forward(self, orig: Tensor, new: Tensor) -> Tensor:
        return orig + (new - orig) * self.effective_scale()


def scaled_linear(in_features: int, out_features: int, bias: bool = True, initial_scale: float = 1.0) -> nn.Linear:
    """nn.Linear whose default initial weight is multiplied by ``initial_scale``.

    The bias (if any) is drawn from U(-0.1 s, 0.1 s).  This is how the recipe's
    ``ScaledLinear`` differs from nn.Linear: an initialisation change only.
    Small output scales (0.05 for module outputs) make every residual branch
    start close to zero.
    """
    lin = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        lin.weight.mul_(initial_scale)
        if lin.bias is not None:
            lin.bias.uniform_(-0.1 * initial_scale, 0.1 * initial_scale)
    return lin

