"""ScaledAdam: an Adam variant whose steps are relative to each parameter tensor's size.

Our own implementation, written from a description of the optimiser icefall
trains its Zipformer with (``egs/librispeech/ASR/zipformer/optim.py`` of
k2-fsa/icefall as of commit 36e0420c; Yao et al., "Zipformer: A faster and
better encoder for automatic speech recognition", ICLR 2024).

Why.  Adam's step has the same absolute size for every element (about lr),
so a tensor with small entries changes relatively fast and one with large
entries slowly.  A network without LayerNorm that learns its own scales (the
Zipformer: BiasNorm, learnt per-module scales, bypass weights) wants every
tensor to move by the same *fraction* of its size, and wants that size itself
to be a learnt quantity.  ScaledAdam multiplies Adam's normalised step by the
tensor's RMS and adds an explicit, slower update of the tensor's overall
scale.  Tensors with one element ("scalars": gains, bias of a 1-unit layer)
have no meaningful RMS; they take plain Adam steps at lr * scalar_lr_scale.

Notation, for one parameter tensor p of any shape S (a "scalar" if
p.numel() == 1), its gradient g (shape S, already multiplied by the global
clipping factor c below), this tensor's step t = 0, 1, ..., the group's lr
(set by the schedule), betas (b1, b2), P = size_update_period, and
rms(x) = sqrt(mean(x²)) (a 0-dim tensor)::

    v      <- b2 v + (1 - b2) g²                              (shape S)
    v_hat  =  v / (1 - b2^(t+1))   while 1 - b2^(t+1) < 0.99, else v
    scalar:      d = -lr * scalar_lr_scale * g / (sqrt(v_hat) + eps)
    non-scalar:  r = rms(p), refreshed when t % P == 0 and cached between
                 d = -lr * max(r, param_min_rms) * g / (sqrt(v_hat) + eps)
                 s <- s + sum(p * g)                          (0-dim; d loss / d log-scale)
                 when t % P == P - 1 (scale learning; k = (t + 1) / P updates so far):
                     w    <- b2^P w + (1 - b2^P) s²
                     w_hat = w / (1 - b2^(P k))  while that divisor < 0.99, else w
                     a     = -lr * scalar_lr_scale * s / (sqrt(w_hat) + eps)
                     a     = clamp(a, -0.1, 0.1);  a = 0 if r < param_min_rms
                     a     = max(min(a, (param_max_rms - r) / r), -0.1)   (r * (1 + a) <= param_max_rms)
                     d    <- d + a * p;   s <- 0
    m  <- b1 m + (1 - b1) d                                   (momentum on the step; no bias correction)
    p  <- p + m;   scalars: p <- clamp(p, -scalar_max, scalar_max)

State per tensor: ``step`` (int), ``exp_avg_sq`` = v and ``delta`` = m (shape S);
non-scalars also ``param_rms`` = r, ``scale_grad_sum`` = s, ``scale_exp_avg_sq`` = w (0-dim).

Gradient clipping (``clipping_scale`` not None), once per ``step()`` over all
tensors that have a gradient, before the updates above.  With the global step
counter n (``step()`` calls that updated)::

    N² = sum_non-scalars (r ||g||)² + sum_scalars (scalar_lr_scale ||g||)²
    T  = clipping_scale * median(last C norms)   recomputed when n % C == 0 (n > 0),
         2 * clipping_scale * median(...)        at n = 10, 20, 40 while n < C (short history)
    T  = inf before the first recomputation;   c = min(1, T / N)

C = clipping_update_period; the norms are those before clipping.  A
non-finite N (NaN/inf gradient) skips the whole update: no parameter or state
changes except the counter ``clip_skipped``.  The clipping state (``clip_step``
= n, ``clip_norms``, ``clip_threshold``, last norm and factor) lives in the
state of the first parameter of the first group, as plain ints/floats/lists,
so ``state_dict``/``load_state_dict`` (and ``--continue-from``, which carries
per-parameter state by name) restore it exactly.

Differences from icefall's version: tensors are updated one by one, not in
batches of same-shape tensors (the same arithmetic, slower on GPU for models
with many small tensors); a non-finite clipping norm skips the step instead of
zeroing the gradient (which would still apply the momentum); the parameter
names icefall passes for its diagnostics are not used.  Weight decay is not
part of ScaledAdam (the scale is learnt and bounded by param_max_rms).
Deterministic: only elementwise ops and reductions, no atomics.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Optional

import torch
from torch import Tensor

__all__ = ["ScaledAdam"]

_MAX_SCALE_STEP = 0.1  # |a| bound of the scale-learning step per size_update_period
_EARLY_CLIP_STEPS = (10, 20, 40)  # extra threshold recomputations while the norm history is short
_STATE_KEYS = ("step", "delta", "exp_avg_sq")  # every updated tensor has these


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


class ScaledAdam(torch.optim.Optimizer):
    """Adam with steps relative to each tensor's RMS, learnt tensor scales and median-based clipping.

    See the module docstring for the equations.  ``clipping_scale=None``
    disables clipping (and the non-finite check that comes with it).
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.03, betas: tuple[float, float] = (0.9, 0.98),
                 scalar_lr_scale: float = 0.1, eps: float = 1e-8, param_min_rms: float = 1e-5,
                 param_max_rms: float = 3.0, scalar_max: float = 10.0, size_update_period: int = 4,
                 clipping_update_period: int = 100, clipping_scale: Optional[float] = 2.0) -> None:
        if not lr > 0:
            raise ValueError(f"ScaledAdam: lr must be > 0, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas) or len(betas) != 2:
            raise ValueError(f"ScaledAdam: betas must be two values in [0, 1), got {betas}")
        if not (0 < param_min_rms < param_max_rms):
            raise ValueError(f"ScaledAdam: need 0 < param_min_rms < param_max_rms, "
                             f"got {param_min_rms}, {param_max_rms}")
        if size_update_period < 1 or clipping_update_period < 1:
            raise ValueError("ScaledAdam: size_update_period and clipping_update_period must be >= 1")
        if clipping_scale is not None and not clipping_scale > 0:
            raise ValueError(f"ScaledAdam: clipping_scale must be > 0 or None, got {clipping_scale}")
        if not (eps >= 0 and scalar_lr_scale > 0 and scalar_max > 0):
            raise ValueError("ScaledAdam: eps must be >= 0, scalar_lr_scale and scalar_max > 0")
        defaults = dict(lr=lr, betas=tuple(betas), scalar_lr_scale=scalar_lr_scale, eps=eps,
                        param_min_rms=param_min_rms, param_max_rms=param_max_rms, scalar_max=scalar_max,
                        size_update_period=int(size_update_period),
                        clipping_update_period=int(clipping_update_period), clipping_scale=clipping_scale)
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ state helpers

    def _global_state(self) -> dict[str, Any]:
        st = self.state[self.param_groups[0]["params"][0]]
        if "clip_step" not in st:
            st.update(clip_step=0, clip_norms=[], clip_threshold=math.inf, clip_last_norm=None,
                      clip_last_factor=1.0, clip_skipped=0)
        return st

    def clipping_info(self) -> dict[str, Any]:
        """Clipping state: step (updates so far), threshold T, last norm N, last factor c, skipped steps."""
        st = self._global_state()
        return {"step": st["clip_step"], "threshold": st["clip_threshold"], "last_norm": st["clip_last_norm"],
                "last_factor": st["clip_last_factor"], "skipped": st["clip_skipped"],
                "history": list(st["clip_norms"])}

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        for st in sd["state"].values():  # the norm history is appended to in place: hand out a copy
            if "clip_norms" in st:
                st["clip_norms"] = list(st["clip_norms"])
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for i, st in state_dict["state"].items():
            if ("step" in st and not all(k in st for k in _STATE_KEYS)) or "exp_avg" in st:
                raise ValueError(f"ScaledAdam.load_state_dict: the state of parameter {i} has keys {sorted(st)}, "
                                 f"not ScaledAdam's (a checkpoint of another optimiser, e.g. AdamW?)")
        for g in state_dict["param_groups"]:
            if "scalar_lr_scale" not in g:
                raise ValueError("ScaledAdam.load_state_dict: parameter groups without ScaledAdam's "
                                 "hyper-parameters (a checkpoint of another optimiser?)")
        super().load_state_dict(state_dict)

    # ------------------------------------------------------------------ step

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = [(group, p) for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not work:
            return loss
        rms: list[Optional[Tensor]] = []
        for group, p in work:
            if p.grad.is_sparse or p.is_complex():
                raise RuntimeError("ScaledAdam: sparse gradients and complex parameters are not supported")
            st = self.state[p]
            if p.numel() == 1:
                rms.append(None)
            elif "step" not in st or st["step"] % group["size_update_period"] == 0:
                rms.append(p.detach().square().mean().sqrt())
            else:
                rms.append(st["param_rms"])
        factor = self._clip_factor(work, rms)
        gs = self._global_state()
        if factor is None:
            gs["clip_skipped"] += 1
            return loss
        gs["clip_step"] += 1
        for (group, p), r in zip(work, rms):
            g = p.grad if factor == 1.0 else p.grad * factor
            self._update(group, p, g, r)
        return loss

    def _clip_factor(self, work: list[tuple[dict[str, Any], Tensor]], rms: list[Optional[Tensor]]) -> Optional[float]:
        """c of the module docstring; None when the norm is not finite (skip the step)."""
        group0 = self.param_groups[0]
        scale = group0["clipping_scale"]
        if scale is None:
            return 1.0
        total: Optional[Tensor] = None
        for (group, p), r in zip(work, rms):
            w = group["scalar_lr_scale"] if r is None else r
            term = (torch.linalg.vector_norm(p.grad) * w).double().square()
            total = term if total is None else total + term.to(total.device)
        assert total is not None
        norm = math.sqrt(float(total))
        if not math.isfinite(norm):
            return None
        gs = self._global_state()
        n, period, hist = gs["clip_step"], group0["clipping_update_period"], gs["clip_norms"]
        if hist and n < period and n in _EARLY_CLIP_STEPS:
            gs["clip_threshold"] = 2.0 * scale * _median(hist)
        elif hist and n > 0 and n % period == 0:
            gs["clip_threshold"] = scale * _median(hist)
        threshold = gs["clip_threshold"]
        factor = threshold / norm if norm > threshold else 1.0
        hist.append(norm)
        if len(hist) > period:
            del hist[0]
        gs["clip_last_norm"], gs["clip_last_factor"] = norm, factor
        return factor

    def _update(self, group: dict[str, Any], p: Tensor, g: Tensor, r: Optional[Tensor]) -> None:
        st = self.state[p]
        lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
        period, small = group["size_update_period"], group["scalar_lr_scale"]
        if "step" not in st:
            st["step"] = 0
            st["delta"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if r is not None:
                zero = torch.zeros((), dtype=p.dtype, device=p.device)
                st.update(param_rms=zero.clone(), scale_grad_sum=zero.clone(), scale_exp_avg_sq=zero.clone())
        t = st["step"]
        v = st["exp_avg_sq"]
        v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
        corr = 1.0 - b2 ** (t + 1)
        denom = (v / corr if corr < 0.99 else v).sqrt().add_(eps)
        if r is None:
            d = g / denom * (-lr * small)
        else:
            if t % period == 0:
                st["param_rms"].copy_(r)
            rms = st["param_rms"]
            d = g / denom * (rms.clamp(min=group["param_min_rms"]) * -lr)
            s = st["scale_grad_sum"]
            s.add_((p * g).sum())
            if t % period == period - 1:
                d.add_(p * self._scale_step(group, st, t))
                s.zero_()
        m = st["delta"]
        m.mul_(b1).add_(d, alpha=1.0 - b1)
        p.add_(m)
        if r is None:
            p.clamp_(-group["scalar_max"], group["scalar_max"])
        st["step"] = t + 1

    @staticmethod
    def _scale_step(group: dict[str, Any], st: dict[str, Any], t: int) -> Tensor:
        """a of the module docstring (0-dim tensor; no host synchronisation)."""
        period, (_, b2) = group["size_update_period"], group["betas"]
        s, w, r = st["scale_grad_sum"], st["scale_exp_avg_sq"], st["param_rms"]
        bp = b2 ** period
        w.mul_(bp).add_(s * s, alpha=1.0 - bp)
        corr = 1.0 - bp ** ((t + 1) // period)
        denom = (w / corr if corr < 0.99 else w).sqrt() + group["eps"]
        a = (s / denom * (-group["lr"] * group["scalar_lr_scale"])).clamp(-_MAX_SCALE_STEP, _MAX_SCALE_STEP)
        a = torch.where(r < group["param_min_rms"], torch.zeros_like(a), a)
        a = torch.minimum(a, (group["param_max_rms"] - r) / r)
        return a.clamp(min=-_MAX_SCALE_STEP)
