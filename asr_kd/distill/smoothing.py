"""Teacher-side smoothing of output distributions for output-layer KD.

All functions here act on the last axis of a logits tensor of any leading
shape ``(..., V)`` (typically the pruned lattice ``(B, T, R, V)``) and return
log-probabilities of the same shape. They run under ``torch.no_grad()``: the
teacher is never trained, so nothing on this side needs a graph.

Methods
-------
``"none"``
    ``log q = log_softmax(z)``.
``"temperature"``
    ``log q = log_softmax(z / tau)``. In :func:`asr_kd.distill.output_kd_loss`
    this is Hinton-style KD: the student is tempered by the same ``tau`` and
    the KL is multiplied by ``tau**2``.
``"adaptive-power"``
    Per node, with ``p = softmax(z)`` and target entropy ``H*`` (nats)::

        q_alpha(v) = p(v)**alpha / sum_u p(u)**alpha,   alpha in [alpha_min, 1]

    ``alpha = 1`` (``q = p`` exactly) where ``H(p) >= H*``. Elsewhere ``alpha``
    solves ``H(q_alpha) = H*``, or is ``alpha_min`` when even
    ``H(q_alpha_min) < H*``. With ``l = log p`` and
    ``A(alpha) = logsumexp(alpha * l)``::

        H(alpha)       = A(alpha) - alpha * E_q[l]
        dH/dalpha      = -alpha * Var_q[l]   (<= 0: H decreases in alpha)

    so the root is unique. We solve ``g(alpha) = log H(alpha) - log H* = 0``
    (``log H`` is close to linear in ``alpha`` for peaked distributions,
    where ``H ~ c * alpha * gap * exp(-alpha * gap)``) by Newton steps
    ``alpha <- alpha - g / g'`` (``g' = -alpha Var_q[l] / H``) from
    ``alpha = 1``, safeguarded by a bracket that starts as ``[alpha_min, 1]``:
    a step that leaves the bracket or stops converging is replaced by a
    visit to ``alpha_min`` (once) or by Illinois false position. All
    unresolved nodes are iterated at once (vectorised); nodes within ``tol``
    nats leave the working set, and the loop stops when none is left or after
    ``num_iters`` steps (typical teacher nodes take 3-5; a spike over a flat
    tail with a high target, whose H(alpha) is a steep sigmoid, up to ~14).
    Finally ``log q = alpha * l - log sum_v exp(alpha * l)``, so q is exactly
    a power transform of p.

Memory: the work is done in place on one (N, V) buffer of log-probabilities
plus a scratch buffer (and, unless every node is solved, a copy) the size of
the nodes being solved; entropies and
row-wise dot products are computed in row chunks (``_CHUNK_ELEMS``), so no
other (N, V) temporaries are created.

Why ``alpha_min = 0.1`` by default: ``alpha = 1 / tau`` is a temperature, so
the clamp caps the per-node effective temperature at 10. Below that, the
transform mostly amplifies the teacher's far tail (a probability of
``e**-50`` becomes ``e**-5`` at ``alpha = 0.1``, ``e**-2.5`` at 0.05), which
is where a teacher is least calibrated; nodes that would need more are
reported by the ``at_alpha_min`` share so the target can be tuned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional

import torch

SMOOTHING_METHODS = ("none", "temperature", "adaptive-power")

#: Default lower bound of the per-node power (effective temperature <= 10).
DEFAULT_ALPHA_MIN = 0.1
#: Default maximum number of Newton/bisection iterations of the alpha search.
DEFAULT_NUM_ITERS = 16
#: Default stopping tolerance on |H(q) - target| in nats.
DEFAULT_TOL = 1e-5

# log p is clamped to this value inside the alpha search only, so that
# vocabulary entries with p == 0 (logit -inf) keep Var_q[log p] finite.
_LOGP_FLOOR = -1.0e4
_TINY_ENTROPY = 1.0e-30
# exp() arguments are floored here in diagnostics and in the alpha search:
# e**-80 ~ 1.8e-35 is still a normal float32, and subnormal arithmetic is
# ~10x slower on CPUs. The change to any sum is below V * e**-80.
_EXP_FLOOR = -80.0
# Row-chunked helpers work on at most this many elements at a time.
_CHUNK_ELEMS = 1 << 22


@dataclass
class SmoothingStats:
    """Per-node diagnostics of :func:`smooth_teacher_with_stats`.

    All tensors have the leading shape of the logits (``(...)``, without V),
    are detached, and are float32 (float64 for float64 input).

    alpha: the power applied per node (1 for "none", 1/tau for "temperature").
    entropy_before: H(softmax(z)) in nats.
    entropy_after: H(q) in nats.
    at_alpha_min: bool, nodes whose alpha was clamped at alpha_min (target
        not reachable); always False for "none"/"temperature".
    """

    alpha: torch.Tensor
    entropy_before: torch.Tensor
    entropy_after: torch.Tensor
    at_alpha_min: torch.Tensor


# --------------------------------------------------------------------------- #
# Row-wise helpers on (N, V) tensors
# --------------------------------------------------------------------------- #


def _row_chunks(x: torch.Tensor) -> Iterator[slice]:
    rows = max(1, _CHUNK_ELEMS // max(1, x.shape[-1]))
    for start in range(0, x.shape[0], rows):
        yield slice(start, start + rows)


def _log_softmax_rows_(x: torch.Tensor) -> torch.Tensor:
    """In-place log_softmax over the last axis of (N, V) ``x``; returns ``x``."""
    for sl in _row_chunks(x):
        x[sl] = torch.log_softmax(x[sl], dim=-1)
    return x


def _entropy_rows(log_p: torch.Tensor) -> torch.Tensor:
    """H = -sum_v p log p per row of (N, V) log-probabilities (p == 0 adds 0).

    log p is floored at ``_EXP_FLOOR`` (changes H by < V * 80 * e**-80).
    """
    out = torch.empty(log_p.shape[0], dtype=log_p.dtype, device=log_p.device)
    for sl in _row_chunks(log_p):
        c = log_p[sl].clamp_min(_EXP_FLOOR)
        out[sl] = -torch.linalg.vecdot(c.exp(), c)
    return out


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_v a * b per row of two (N, V) tensors, in row chunks."""
    out = torch.empty(a.shape[0], dtype=a.dtype, device=a.device)
    for sl in _row_chunks(a):
        out[sl] = torch.linalg.vecdot(a[sl], b[sl])
    return out


# --------------------------------------------------------------------------- #
# Adaptive power transformation
# --------------------------------------------------------------------------- #


def _power_log_z(l: torch.Tensor, alpha: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    """log Z(alpha) = logsumexp(alpha * l) per row, for rows shifted so max_v l = 0.

    l (n, V) finite, alpha (n,), buf (n, V) scratch that is left holding the
    unnormalised weights w = exp(alpha * l) (exp arguments floored at
    ``_EXP_FLOOR``). Since max(alpha * l) = 0, Z >= 1 and needs no max pass.
    """
    torch.mul(l, alpha.unsqueeze(-1), out=buf)
    buf.clamp_min_(_EXP_FLOOR).exp_()
    return buf.sum(dim=-1).log_()


def _power_eval(l: torch.Tensor, alpha: torch.Tensor, buf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """H(q_alpha) and Var_q[l] per row (rows shifted so max_v l = 0), in ``buf``.

    With w = exp(alpha * l), Z = sum w, E_q[f] = sum w f / Z:
    H = log Z - alpha * E_q[l] and Var_q[l] = E_q[l^2] - E_q[l]^2. Eight
    elementwise passes, no allocation of (n, V) temporaries.
    Returns (H (n,), Var (n,)).
    """
    log_z = _power_log_z(l, alpha, buf)
    inv_z = torch.exp(-log_z)
    e_l = buf.mul_(l).sum(dim=-1) * inv_z  # buf: w * l
    e_l2 = buf.mul_(l).sum(dim=-1) * inv_z  # buf: w * l^2
    ent = (log_z - alpha * e_l).clamp_min(0.0)
    var = (e_l2 - e_l * e_l).clamp_min(0.0)
    return ent, var


# Below this, H(alpha) computed in float32 is dominated by the exp() floor and
# log H no longer guides Newton steps.
_TRUSTED_ENTROPY = 1.0e-20


def _solve_alpha(
    l: torch.Tensor,
    target: float,
    alpha_min: float,
    num_iters: int,
    tol: float,
    buf: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Find alpha per row of shifted log p (N, V); all rows have H(p) < target.

    Root of g(alpha) = log H(alpha) - log target (decreasing) by safeguarded
    Newton, g' = -alpha Var_q[l] / H, starting at alpha = 1. A bracket
    [lo, hi] with g(lo) >= 0 > g(hi) starts as [alpha_min, 1]. A Newton step
    is taken when it lands strictly inside the bracket and is less than half
    the step before the previous one (so it is converging); otherwise the
    next point is alpha_min if that end has not been evaluated yet (rows with
    H(alpha_min) <= target are clamped there), else the false-position point
    of g between the bracket ends, with the Illinois halving of a retained
    end's g to avoid one-sided stalls. Rows within ``tol`` nats (or clamped)
    leave the working set, which is compacted once it has shrunk by half.
    ``buf`` (N, V) is scratch.

    Returns (alpha (N,), at_alpha_min (N,) bool).
    """
    n = l.shape[0]
    dtype, device = l.dtype, l.device
    log_t = math.log(target)
    alpha_out = torch.ones(n, dtype=dtype, device=device)
    at_min_out = torch.zeros(n, dtype=torch.bool, device=device)
    rows = torch.arange(n, device=device)
    alpha = torch.ones(n, dtype=dtype, device=device)
    lo = torch.full_like(alpha, alpha_min)
    hi = torch.ones_like(alpha)
    g_lo = torch.full_like(alpha, math.inf)  # unknown until alpha_min (or a point left of the root) is seen
    g_hi = torch.full_like(alpha, -math.inf)
    step_prev = torch.full_like(alpha, math.inf)  # |step| one and two iterations back
    step_prev2 = torch.full_like(alpha, math.inf)
    kept_lo = torch.zeros(n, dtype=torch.bool, device=device)  # last update moved hi (lo retained)
    kept_hi = torch.zeros(n, dtype=torch.bool, device=device)
    for _ in range(num_iters + 1):
        ent, var = _power_eval(l, alpha, buf[: l.shape[0]])
        err = ent - target
        at_min = (alpha <= alpha_min) & (err <= 0)
        open_rows = (err.abs() > tol) & ~at_min
        n_open = int(open_rows.sum())
        if n_open == 0:
            break
        trusted = ent > _TRUSTED_ENTROPY
        ent_c = ent.clamp_min(_TRUSTED_ENTROPY)
        g = torch.log(ent_c) - log_t
        above = err > 0  # H too high -> alpha must grow
        # Illinois: an end retained twice in a row has its g halved.
        g_lo = torch.where(above, g, torch.where(kept_lo, 0.5 * g_lo, g_lo))
        g_hi = torch.where(above, torch.where(kept_hi, 0.5 * g_hi, g_hi), g)
        kept_lo, kept_hi = ~above, above
        lo = torch.where(above, alpha, lo)
        hi = torch.where(above, hi, alpha)

        newton = alpha + g * ent_c / (alpha * var)
        converging = (newton - alpha).abs() < 0.5 * step_prev2
        use_newton = trusted & torch.isfinite(newton) & (newton > lo) & (newton < hi) & converging
        lo_known = torch.isfinite(g_lo)
        false_pos = lo + (hi - lo) * (g_lo / (g_lo - g_hi)).clamp(0.0, 1.0)
        fallback = torch.where(lo_known, false_pos, lo)
        nxt = torch.where(use_newton, newton, fallback)
        step_prev2, step_prev = step_prev, (nxt - alpha).abs()
        alpha = torch.where(open_rows, nxt, alpha)
        if 2 * n_open <= rows.numel():
            # Retire finished rows and shrink the working set.
            done = (~open_rows).nonzero().squeeze(-1)
            alpha_out.index_copy_(0, rows[done], alpha[done])
            at_min_out.index_copy_(0, rows[done], at_min[done])
            keep = open_rows.nonzero().squeeze(-1)
            rows, l, alpha, at_min = rows[keep], l[keep], alpha[keep], at_min[keep]
            lo, hi, g_lo, g_hi = lo[keep], hi[keep], g_lo[keep], g_hi[keep]
            step_prev, step_prev2, kept_lo, kept_hi = step_prev[keep], step_prev2[keep], kept_lo[keep], kept_hi[keep]
    alpha_out.index_copy_(0, rows, alpha.clamp(alpha_min, 1.0))
    at_min_out.index_copy_(0, rows, at_min)
    return alpha_out, at_min_out


def _adaptive_power_(
    log_p: torch.Tensor,
    target: float,
    alpha_min: float,
    num_iters: int,
    tol: float,
    want_stats: bool,
) -> tuple[torch.Tensor, Optional[SmoothingStats]]:
    """Adaptive power transform of (N, V) log-probabilities, in place.

    Returns (log_q (the same buffer as ``log_p``), stats or None). Rows with
    H(p) >= target are left untouched (bit for bit).
    """
    ent_before = _entropy_rows(log_p)
    alpha = torch.ones_like(ent_before)
    at_min = torch.zeros_like(ent_before, dtype=torch.bool)
    ent_after = ent_before.clone() if want_stats else None
    idx = (ent_before < target).nonzero().squeeze(-1)
    if idx.numel() > 0:
        all_active = idx.numel() == log_p.shape[0]
        l_act = log_p if all_active else log_p.index_select(0, idx)
        # Shift so that max_v l = 0 (log q = alpha * l - log Z is unchanged by it).
        l_act.sub_(l_act.amax(dim=-1, keepdim=True))
        # Only a copy when some entries are -inf (p == 0 in the vocabulary).
        l_work = l_act.clamp_min(_LOGP_FLOOR) if bool(torch.isneginf(l_act).any()) else l_act
        buf = torch.empty_like(l_work)
        a_act, m_act = _solve_alpha(l_work, target, alpha_min, num_iters, tol, buf)
        log_z = _power_log_z(l_work, a_act, buf)
        del buf, l_work
        # log q = alpha * l - log Z(alpha), in place.
        l_act.mul_(a_act.unsqueeze(-1)).sub_(log_z.unsqueeze(-1))
        if not all_active:
            log_p.index_copy_(0, idx, l_act)
        alpha.index_copy_(0, idx, a_act)
        at_min.index_copy_(0, idx, m_act)
        if want_stats:
            ent_after.index_copy_(0, idx, _entropy_rows(l_act))
    if not want_stats:
        return log_p, None
    return log_p, SmoothingStats(alpha, ent_before, ent_after, at_min)


# --------------------------------------------------------------------------- #
# Public entry points
# --------------------------------------------------------------------------- #


def _check_logits(teacher_logits: torch.Tensor, method: str) -> None:
    if method not in SMOOTHING_METHODS:
        raise ValueError(
            f"asr_kd.distill.smoothing: unknown smoothing method {method!r}; "
            f"expected one of {SMOOTHING_METHODS}"
        )
    if teacher_logits.dim() < 1 or teacher_logits.shape[-1] < 2:
        raise ValueError(
            "asr_kd.distill.smoothing: teacher_logits must have a vocabulary axis "
            f"of size >= 2 as its last dimension, got shape {tuple(teacher_logits.shape)}"
        )
    if not teacher_logits.is_floating_point():
        raise ValueError(
            f"asr_kd.distill.smoothing: teacher_logits must be floating point, got {teacher_logits.dtype}"
        )


def _validate_options(
    vocab: int,
    method: str,
    temperature: float,
    target_entropy: Optional[float],
    alpha_min: float,
    num_iters: int,
    tol: float,
) -> None:
    where = "asr_kd.distill.smoothing"
    if method not in SMOOTHING_METHODS:
        raise ValueError(f"{where}: unknown smoothing method {method!r}; expected one of {SMOOTHING_METHODS}")
    if method != "temperature" and temperature != 1.0:
        raise ValueError(
            f"{where}: temperature={temperature} only applies to method='temperature' (got method={method!r})"
        )
    if method == "temperature" and not (temperature > 0.0 and math.isfinite(temperature)):
        raise ValueError(f"{where}: temperature must be a positive finite number, got {temperature}")
    if method != "adaptive-power":
        if target_entropy is not None:
            raise ValueError(
                f"{where}: target_entropy only applies to method='adaptive-power' (got method={method!r})"
            )
        return
    if target_entropy is None:
        raise ValueError(f"{where}: method='adaptive-power' needs target_entropy (nats)")
    if not (0.0 < float(target_entropy) < math.log(vocab)):
        raise ValueError(
            f"{where}: target_entropy must be in (0, log V) = (0, {math.log(vocab):.4f}) nats "
            f"for V={vocab}, got {target_entropy}"
        )
    if not (0.0 < alpha_min <= 1.0):
        raise ValueError(f"{where}: alpha_min must be in (0, 1], got {alpha_min}")
    if num_iters < 0 or not tol > 0.0:
        raise ValueError(f"{where}: need num_iters >= 0 and tol > 0, got num_iters={num_iters}, tol={tol}")


def _smooth_rows_(
    z: torch.Tensor,
    method: str,
    temperature: float,
    target_entropy: Optional[float],
    alpha_min: float,
    num_iters: int,
    tol: float,
    want_stats: bool,
) -> tuple[torch.Tensor, Optional[SmoothingStats]]:
    """Smooth (N, V) logits that the caller owns, in place (options validated).

    ``z`` must be a float32/float64 buffer nobody else reads: it becomes
    log q. Returns (log_q, stats or None), stats tensors of shape (N,).
    """
    with torch.no_grad():
        if method == "adaptive-power":
            return _adaptive_power_(
                _log_softmax_rows_(z), float(target_entropy), alpha_min, num_iters, tol, want_stats
            )
        tau = temperature if method == "temperature" else 1.0
        ent_before = None
        if want_stats and tau != 1.0:
            ent_before = torch.empty(z.shape[0], dtype=z.dtype, device=z.device)
            for sl in _row_chunks(z):
                ent_before[sl] = _entropy_rows(torch.log_softmax(z[sl], dim=-1))
        if tau != 1.0:
            z.div_(tau)
        log_q = _log_softmax_rows_(z)
        if not want_stats:
            return log_q, None
        ent_after = _entropy_rows(log_q)
        alpha = torch.full_like(ent_after, 1.0 / tau)
        stats = SmoothingStats(
            alpha=alpha,
            entropy_before=ent_before if ent_before is not None else ent_after,
            entropy_after=ent_after,
            at_alpha_min=torch.zeros_like(ent_after, dtype=torch.bool),
        )
        return log_q, stats


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _smooth(
    teacher_logits: torch.Tensor,
    method: str,
    temperature: float,
    target_entropy: Optional[float],
    alpha_min: float,
    num_iters: int,
    tol: float,
    want_stats: bool,
) -> tuple[torch.Tensor, Optional[SmoothingStats]]:
    """Shared body of :func:`smooth_teacher` and :func:`smooth_teacher_with_stats`."""
    _check_logits(teacher_logits, method)
    vocab = teacher_logits.shape[-1]
    lead = teacher_logits.shape[:-1]
    _validate_options(vocab, method, temperature, target_entropy, alpha_min, num_iters, tol)
    z = teacher_logits.detach().to(_work_dtype(teacher_logits), copy=True).reshape(-1, vocab)
    log_q, st = _smooth_rows_(z, method, temperature, target_entropy, alpha_min, num_iters, tol, want_stats)
    log_q = log_q.reshape(teacher_logits.shape)
    if st is None:
        return log_q, None
    return log_q, SmoothingStats(
        alpha=st.alpha.reshape(lead),
        entropy_before=st.entropy_before.reshape(lead),
        entropy_after=st.entropy_after.reshape(lead),
        at_alpha_min=st.at_alpha_min.reshape(lead),
    )


def smooth_teacher_with_stats(
    teacher_logits: torch.Tensor,
    method: str,
    temperature: float = 1.0,
    target_entropy: Optional[float] = None,
    alpha_min: float = DEFAULT_ALPHA_MIN,
    num_iters: int = DEFAULT_NUM_ITERS,
    tol: float = DEFAULT_TOL,
) -> tuple[torch.Tensor, SmoothingStats]:
    """Smoothed teacher log-probabilities plus per-node diagnostics.

    Args:
      teacher_logits: (..., V) raw teacher logits (detached internally).
      method: "none", "temperature" or "adaptive-power" (see module doc).
      temperature: tau > 0, used by "temperature" only (must stay 1.0 otherwise).
      target_entropy: H* in nats, 0 < H* < log V; required by "adaptive-power"
        and must be None for the other methods.
      alpha_min: lower bound of alpha, 0 < alpha_min <= 1 ("adaptive-power").
      num_iters: maximum Newton/bisection iterations of the alpha search.
      tol: stop once every unclamped node has |H(q) - H*| <= tol nats
        (float32 evaluates H to about 1e-6 relative, so keep tol above that).

    Returns:
      (log_q (..., V), SmoothingStats). log_q is float32 (float64 for float64
      input) and has no autograd history.
    """
    log_q, stats = _smooth(
        teacher_logits, method, temperature, target_entropy, alpha_min, num_iters, tol, want_stats=True
    )
    assert stats is not None
    return log_q, stats


def smooth_teacher(
    teacher_logits: torch.Tensor,
    method: str,
    temperature: float = 1.0,
    target_entropy: Optional[float] = None,
    alpha_min: float = DEFAULT_ALPHA_MIN,
) -> torch.Tensor:
    """Smoothed teacher log-probabilities over the last axis.

    ``teacher_logits`` (..., V) raw logits -> log q (..., V), detached,
    float32 (float64 for float64 input). See the module docstring for the
    three methods; :func:`smooth_teacher_with_stats` also returns alpha and
    the entropies before/after for logging.
    """
    log_q, _ = _smooth(
        teacher_logits,
        method,
        temperature,
        target_entropy,
        alpha_min,
        DEFAULT_NUM_ITERS,
        DEFAULT_TOL,
        want_stats=False,
    )
    return log_q
