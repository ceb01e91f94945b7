"""Stage-2 distillation loss: KL(smoothed teacher || student) on the pruned lattice.

Lattice nodes are indexed ``(b, t, r)`` with absolute symbol position
``s = ranges[b, t, r]`` (k2 pruned-lattice semantics; for the full lattice
use ``ranges[b, t, :] = 0..S``). A node is *valid* when ``t < T_b`` and
``s <= S_b`` (``boundary[b] = [0, 0, S_b, T_b]``). With teacher logits
``z^T`` and student logits ``z^S`` at a node (raw joiner outputs, (V,))::

    q       = smooth(z^T)                     (asr_kd.distill.smoothing)
    log p   = log_softmax(z^S / tau_s)        tau_s = tau for "temperature", else 1
    KL_node = sum_v q_v (log q_v - log p_v)   (terms with q_v = 0 add 0)

    loss_b  = c * sum_{valid nodes of b} w_node * KL_node
    c       = tau**2 for "temperature" (Hinton-style), else 1
    w_node  = occupancy[b, t, r] (detached) if given, else 1

``reduction="sum"`` returns ``sum_b loss_b``; ``"none"`` returns (B,).
Training divides the sum by the number of encoder frames in the batch, like
the transducer losses (the loss-normalisation rule: transducer and output-KD
terms are batch sums / encoder frames, the hidden MSE a mean over frames and
dims), so lambda_o weighs a nat of KL per frame like a nat of transducer loss.

``distribution="collapsed"`` (Panchapagesan et al., 2021) replaces both
distributions at every node by a 3-way one before the KL::

    s <  S_b: [P(blank), P(y_{s+1}), 1 - P(blank) - P(y_{s+1})]
    s == S_b: [P(blank), 0,          1 - P(blank)]

with ``y_{s+1} = symbols[b, s]`` (0-based), computed from the full-vocabulary
log-probabilities (teacher: after smoothing; student: after its tempering),
"rest" as a log-sum-exp over the remaining entries.

The gradient reaches ``student_logits`` only; the teacher side runs under
``torch.no_grad``. Only valid nodes are gathered, so invalid nodes are never
read: they do not change the loss and get exactly zero gradient, even if they
hold inf/nan.

Memory (N valid nodes): the teacher side works in place on its gathered
(N, V) copy; the full-distribution student term is a fused soft-target
cross-entropy (:class:`_SoftTargetCrossEntropy`) that saves only one (N, V)
log-softmax buffer. Besides the logits and their gradient, the forward peak
is about three (N, V) float32 buffers (teacher q, teacher work buffer,
student log-softmax) and the backward one more; row-wise sums run in chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .smoothing import (
    DEFAULT_ALPHA_MIN,
    DEFAULT_NUM_ITERS,
    DEFAULT_TOL,
    SMOOTHING_METHODS,
    SmoothingStats,
    _log_softmax_rows_,
    _rowdot,
    _smooth_rows_,
    _validate_options,
)

DISTRIBUTIONS = ("full", "collapsed")
REDUCTIONS = ("sum", "none")
_SMOOTH_OPTION_NAMES = ("temperature", "target_entropy", "alpha_min", "num_iters", "tol")
_WHERE = "asr_kd.distill.output_kd_loss"


@dataclass
class KDStats:
    """Diagnostics of one :func:`output_kd_loss_with_stats` call.

    0-dim detached tensors over the valid nodes (unweighted by occupancy);
    entropies are of the full-vocabulary teacher distribution, in nats, before
    any collapsing. Zero when there are no valid nodes.
    """

    num_nodes: torch.Tensor
    teacher_entropy_before: torch.Tensor
    teacher_entropy_after: torch.Tensor
    alpha_mean: torch.Tensor
    alpha_min_share: torch.Tensor
    smoothed_share: torch.Tensor  # share of nodes with alpha != 1 (changed by smoothing)


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _validate(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    ranges: torch.Tensor,
    boundary: torch.Tensor,
    smoothing: str,
    reduction: str,
    symbols: Optional[torch.Tensor],
    occupancy: Optional[torch.Tensor],
    distribution: str,
    blank_id: int,
    smooth_opts: dict,
) -> None:
    if smoothing not in SMOOTHING_METHODS:
        raise ValueError(f"{_WHERE}: smoothing must be one of {SMOOTHING_METHODS}, got {smoothing!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"{_WHERE}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"{_WHERE}: distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    unknown = sorted(set(smooth_opts) - set(_SMOOTH_OPTION_NAMES))
    if unknown:
        raise TypeError(f"{_WHERE}: unknown smoothing options {unknown}; accepted: {_SMOOTH_OPTION_NAMES}")
    if student_logits.dim() != 4:
        raise ValueError(f"{_WHERE}: student_logits must be (B, T, R, V), got {tuple(student_logits.shape)}")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"{_WHERE}: teacher_logits {tuple(teacher_logits.shape)} must match student_logits "
            f"{tuple(student_logits.shape)} (evaluate both joiners on the same ranges)"
        )
    batch, frames, width, vocab = student_logits.shape
    if vocab < 2:
        raise ValueError(f"{_WHERE}: vocabulary size must be >= 2, got {vocab}")
    if not student_logits.is_floating_point() or not teacher_logits.is_floating_point():
        raise ValueError(f"{_WHERE}: logits must be floating point")
    _validate_options(
        vocab,
        smoothing,
        float(smooth_opts.get("temperature", 1.0)),
        smooth_opts.get("target_entropy"),
        float(smooth_opts.get("alpha_min", DEFAULT_ALPHA_MIN)),
        int(smooth_opts.get("num_iters", DEFAULT_NUM_ITERS)),
        float(smooth_opts.get("tol", DEFAULT_TOL)),
    )
    if tuple(ranges.shape) != (batch, frames, width):
        raise ValueError(f"{_WHERE}: ranges must be (B, T, R) = {(batch, frames, width)}, got {tuple(ranges.shape)}")
    if ranges.is_floating_point():
        raise ValueError(f"{_WHERE}: ranges must be integer, got {ranges.dtype}")
    if tuple(boundary.shape) != (batch, 4) or boundary.is_floating_point():
        raise ValueError(f"{_WHERE}: boundary must be integer (B, 4) = ({batch}, 4), got {tuple(boundary.shape)}")
    if batch == 0:
        return
    if bool((boundary[:, :2] != 0).any()):
        raise ValueError(f"{_WHERE}: boundary rows must be [0, 0, S_b, T_b]; non-zero begins are not supported")
    if bool((boundary[:, 3] < 0).any()) or bool((boundary[:, 3] > frames).any()):
        raise ValueError(f"{_WHERE}: boundary T_b must lie in [0, T={frames}], got {boundary[:, 3].tolist()}")
    if bool((boundary[:, 2] < 0).any()):
        raise ValueError(f"{_WHERE}: boundary S_b must be >= 0, got {boundary[:, 2].tolist()}")
    if ranges.numel() > 0 and int(ranges.min()) < 0:
        raise ValueError(f"{_WHERE}: ranges hold negative symbol positions")
    if occupancy is not None and tuple(occupancy.shape) != (batch, frames, width):
        raise ValueError(
            f"{_WHERE}: occupancy must be (B, T, R) = {(batch, frames, width)}, got {tuple(occupancy.shape)}"
        )
    if not 0 <= blank_id < vocab:
        raise ValueError(f"{_WHERE}: blank_id {blank_id} out of range for V={vocab}")
    if distribution == "collapsed":
        if symbols is None:
            raise ValueError(f"{_WHERE}: distribution='collapsed' needs symbols (B, S)")
        if symbols.dim() != 2 or symbols.shape[0] != batch or symbols.is_floating_point():
            raise ValueError(f"{_WHERE}: symbols must be integer (B, S) with B={batch}, got {tuple(symbols.shape)}")
        max_s = int(boundary[:, 2].max())
        if symbols.shape[1] < max_s:
            raise ValueError(f"{_WHERE}: symbols has S={symbols.shape[1]} columns but boundary has S_b up to {max_s}")
        if vocab < 3:
            raise ValueError(f"{_WHERE}: distribution='collapsed' needs V >= 3 (blank, label, rest), got V={vocab}")


def _collapse(log_probs: torch.Tensor, label: torch.Tensor, has_label: torch.Tensor, blank_id: int) -> torch.Tensor:
    """(N, V) log-probs -> (N, 3) log-probs [blank, label, rest].

    ``label`` (N,) is the next label (any in-range id where ``has_label`` is
    False); where ``has_label`` is False the label class gets -inf and "rest"
    is everything but blank. Differentiable w.r.t. ``log_probs``.
    """
    n = log_probs.shape[0]
    neg_inf = torch.tensor(float("-inf"), dtype=log_probs.dtype, device=log_probs.device)
    lb = log_probs[:, blank_id]
    ly = torch.where(has_label, log_probs.gather(1, label.unsqueeze(1)).squeeze(1), neg_inf)
    excl = torch.zeros(log_probs.shape, dtype=torch.bool, device=log_probs.device)
    excl[:, blank_id] = True
    excl[torch.arange(n, device=log_probs.device), label] |= has_label
    lr = torch.logsumexp(log_probs.masked_fill(excl, float("-inf")), dim=-1)
    return torch.stack([lb, ly, lr], dim=-1)


class _SoftTargetCrossEntropy(torch.autograd.Function):
    """cross_n = -sum_v q_nv * log_softmax(x_n / tau)_v at gathered nodes.

    Forward: ``student_logits`` (B, T, R, V), node indices ``b, t, r`` (N,),
    teacher ``q`` (N, V) (no gradient), ``tau``, compute dtype -> (N,).
    Backward: d cross_n / d x_nv = (softmax(x_n / tau)_v * sum_u q_nu - q_nv) / tau,
    scattered into a zero (B, T, R, V) gradient (invalid nodes stay exactly 0).
    Saves one (N, V) log-softmax buffer (plus q, which the caller holds anyway).
    """

    @staticmethod
    def forward(ctx, student_logits, b_idx, t_idx, r_idx, q, tau, dtype):  # type: ignore[override]
        x = student_logits.detach()[b_idx, t_idx, r_idx].to(dtype)  # fresh (N, V) copy
        if tau != 1.0:
            x.div_(tau)
        log_p = _log_softmax_rows_(x)
        cross = -_rowdot(q, log_p)
        ctx.save_for_backward(log_p, q, b_idx, t_idx, r_idx)
        ctx.tau = tau
        ctx.logits_shape = student_logits.shape
        ctx.logits_dtype = student_logits.dtype
        return cross

    @staticmethod
    def backward(ctx, grad_cross):  # type: ignore[override]
        log_p, q, b_idx, t_idx, r_idx = ctx.saved_tensors
        scale = (grad_cross / ctx.tau).unsqueeze(-1)  # (N, 1)
        grad_nodes = log_p.exp()  # not in place: the graph may be backpropagated again
        grad_nodes.mul_(q.sum(dim=-1, keepdim=True)).sub_(q).mul_(scale)
        grad = torch.zeros(ctx.logits_shape, dtype=ctx.logits_dtype, device=grad_nodes.device)
        grad[b_idx, t_idx, r_idx] = grad_nodes.to(ctx.logits_dtype)
        return grad, None, None, None, None, None, None


def _collapsed_kl(
    student_logits: torch.Tensor,
    b_idx: torch.Tensor,
    t_idx: torch.Tensor,
    r_idx: torch.Tensor,
    log_q_full: torch.Tensor,
    tau: float,
    ranges: torch.Tensor,
    s_end: torch.Tensor,
    symbols: Optional[torch.Tensor],
    blank_id: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Per-node KL between the 3-way collapsed teacher and student distributions (N,)."""
    device = student_logits.device
    vocab = student_logits.shape[-1]
    pos = ranges[b_idx, t_idx, r_idx]  # (N,)
    has_label = pos < s_end[b_idx]
    if symbols is not None and symbols.shape[1] > 0:
        symbols = symbols.to(device)
        cols = pos.clamp(max=symbols.shape[1] - 1)
        label = torch.where(has_label, symbols[b_idx, cols], torch.full_like(pos, blank_id))
    else:
        label = torch.full_like(pos, blank_id)
    if bool(((label == blank_id) & has_label).any()) or bool(((label < 0) | (label >= vocab)).any()):
        raise ValueError(f"{_WHERE}: symbols at valid positions (< S_b) must be non-blank ids in [0, V={vocab})")
    with torch.no_grad():
        log_q = _collapse(log_q_full, label, has_label, blank_id)  # (N, 3)
    student_nodes = student_logits[b_idx, t_idx, r_idx].to(dtype)
    if tau != 1.0:
        student_nodes = student_nodes / tau
    log_p = _collapse(torch.log_softmax(student_nodes, dim=-1), label, has_label, blank_id)  # (N, 3)
    q = log_q.exp()
    terms = torch.where(q > 0, q * (log_q - log_p), torch.zeros((), dtype=dtype, device=device))
    return terms.sum(-1)


def output_kd_loss_with_stats(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    ranges: torch.Tensor,
    boundary: torch.Tensor,
    smoothing: str = "adaptive-power",
    reduction: str = "sum",
    symbols: Optional[torch.Tensor] = None,
    occupancy: Optional[torch.Tensor] = None,
    distribution: str = "full",
    *,
    blank_id: int = 0,
    **smooth_opts,
) -> tuple[torch.Tensor, KDStats]:
    """:func:`output_kd_loss` plus teacher-side diagnostics (:class:`KDStats`) for logging."""
    return _output_kd(
        student_logits, teacher_logits, ranges, boundary, smoothing, reduction, symbols, occupancy,
        distribution, blank_id, smooth_opts, want_stats=True,
    )  # fmt: skip


def output_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    ranges: torch.Tensor,
    boundary: torch.Tensor,
    smoothing: str = "adaptive-power",
    reduction: str = "sum",
    symbols: Optional[torch.Tensor] = None,
    occupancy: Optional[torch.Tensor] = None,
    distribution: str = "full",
    *,
    blank_id: int = 0,
    **smooth_opts,
) -> torch.Tensor:
    """KL(smoothed teacher || student) summed over the valid pruned-lattice nodes.

    Args:
      student_logits: (B, T, R, V) raw student joiner outputs on ``ranges``.
      teacher_logits: (B, T, R, V) raw teacher joiner outputs on the same
        ranges; detached here.
      ranges: (B, T, R) int64 absolute symbol positions of the nodes.
      boundary: (B, 4) int64 rows ``[0, 0, S_b, T_b]``.
      smoothing: "none", "temperature" (Hinton-style: student tempered by the
        same tau, KL multiplied by tau**2) or "adaptive-power".
      reduction: "sum" (0-dim) or "none" ((B,) per-utterance sums).
      symbols: (B, S) int64 labels; required for ``distribution="collapsed"``.
      occupancy: optional (B, T, R) node weights, used detached.
      distribution: "full" (V classes) or "collapsed" (3-way, see module doc).
      blank_id: the blank symbol (collapsed distribution only).
      **smooth_opts: ``temperature``, ``target_entropy``, ``alpha_min``
        (default 0.1), ``num_iters``, ``tol``: see
        :func:`asr_kd.distill.smoothing.smooth_teacher_with_stats`.

    Returns:
      float32 loss (float64 for float64 student logits), 0-dim or (B,).
    """
    loss, _ = _output_kd(
        student_logits, teacher_logits, ranges, boundary, smoothing, reduction, symbols, occupancy,
        distribution, blank_id, smooth_opts, want_stats=False,
    )  # fmt: skip
    return loss


def _output_kd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    ranges: torch.Tensor,
    boundary: torch.Tensor,
    smoothing: str,
    reduction: str,
    symbols: Optional[torch.Tensor],
    occupancy: Optional[torch.Tensor],
    distribution: str,
    blank_id: int,
    smooth_opts: dict,
    want_stats: bool,
) -> tuple[torch.Tensor, Optional[KDStats]]:
    _validate(
        student_logits, teacher_logits, ranges, boundary, smoothing, reduction, symbols, occupancy,
        distribution, blank_id, smooth_opts,
    )  # fmt: skip
    device = student_logits.device
    dtype = _work_dtype(student_logits)
    batch, frames, _, vocab = student_logits.shape
    ranges = ranges.to(device)
    boundary = boundary.to(device)
    s_end = boundary[:, 2]  # (B,)
    t_end = boundary[:, 3]  # (B,)

    # Valid nodes and their (b, t, r) coordinates.
    t_ok = torch.arange(frames, device=device).unsqueeze(0) < t_end.unsqueeze(1)  # (B, T)
    valid = t_ok.unsqueeze(-1) & (ranges <= s_end.view(-1, 1, 1))  # (B, T, R)
    b_idx, t_idx, r_idx = valid.nonzero(as_tuple=True)  # (N,) each

    temperature = float(smooth_opts.get("temperature", 1.0))
    tau = temperature if smoothing == "temperature" else 1.0
    with torch.no_grad():
        # Fresh (N, V) copy (advanced indexing copies), smoothed in place.
        teacher_nodes = teacher_logits.detach()[b_idx, t_idx, r_idx].to(dtype)
        log_q, sstats = _smooth_rows_(
            teacher_nodes,
            smoothing,
            temperature,
            smooth_opts.get("target_entropy"),
            float(smooth_opts.get("alpha_min", DEFAULT_ALPHA_MIN)),
            int(smooth_opts.get("num_iters", DEFAULT_NUM_ITERS)),
            float(smooth_opts.get("tol", DEFAULT_TOL)),
            want_stats=want_stats,
        )
        del teacher_nodes

    if distribution == "collapsed":
        kl = _collapsed_kl(student_logits, b_idx, t_idx, r_idx, log_q, tau, ranges, s_end, symbols, blank_id, dtype)
    else:
        with torch.no_grad():
            # q and sum_v q log q (0 log 0 = 0), reusing log_q's buffer.
            q = log_q.exp()
            neg_entropy = _rowdot(q, log_q.clamp_min_(torch.finfo(dtype).min))
            del log_q
        cross = _SoftTargetCrossEntropy.apply(student_logits, b_idx, t_idx, r_idx, q, tau, dtype)
        kl = neg_entropy + cross  # (N,)

    if occupancy is not None:
        kl = kl * occupancy.detach().to(device=device, dtype=dtype)[b_idx, t_idx, r_idx]
    if tau != 1.0:
        kl = kl * (tau * tau)
    if reduction == "sum":
        loss = kl.sum()
    else:
        loss = torch.zeros(batch, dtype=dtype, device=device).index_add(0, b_idx, kl)

    stats = _kd_stats(sstats, b_idx.numel(), dtype, device) if want_stats else None
    return loss, stats


def _kd_stats(sstats: Optional[SmoothingStats], n: int, dtype: torch.dtype, device: torch.device) -> KDStats:
    zero = torch.zeros((), dtype=dtype, device=device)
    num = torch.tensor(n, device=device)
    if sstats is None or n == 0:
        return KDStats(num, zero, zero, zero, zero, zero)
    return KDStats(
        num_nodes=num,
        teacher_entropy_before=sstats.entropy_before.mean().to(dtype),
        teacher_entropy_after=sstats.entropy_after.mean().to(dtype),
        alpha_mean=sstats.alpha.mean().to(dtype),
        alpha_min_share=sstats.at_alpha_min.to(dtype).mean(),
        smoothed_share=(sstats.alpha != 1).to(dtype).mean(),
    )
