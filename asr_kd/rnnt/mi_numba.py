"""The mutual-information recursion compiled with numba (CPU, float64).

Forward, for every batch element at once::

    alpha[0, 0] = 0
    alpha[s, t] = logadd(alpha[s-1, t] + px[s-1, t],  alpha[s, t-1] + py[s, t-1])

over the full ``(S+1) x (T+1)`` grid (terms with a negative index are
absent); cells inside an element's region ``s <= S_b, t <= T_b`` depend only on that
region, so ``score[b] = alpha[S_b, T_b, b]``.  Backward computes ``beta[s, t]``,
the log-sum over partial paths from ``(s, t)`` to ``(S_b, T_b)``
(``beta[S_b, T_b] = 0``), restricted to each region::

    beta[s, t] = logadd(px[s, t] + beta[s+1, t],  py[s, t] + beta[s, t+1])

and the occupancies in closed form (see :func:`occupancy_kernel`).

Layout: the batch is the *innermost* axis -- px (S, T+1, B), py (S+1, T, B),
alpha/beta (S+1, T+1, B).  The recursion is latency-bound (each cell waits for
the ``exp``/``log1p`` of its left neighbour); sweeping ``B`` independent chains
in the inner loop lets the CPU overlap them, which measured 2.5x faster than a
per-utterance loop at B=8, S=60, T=250.
"""

from __future__ import annotations

import math

import numpy as np

try:
    import numba

    AVAILABLE = True
except Exception:  # pragma: no cover - numba is a declared dependency
    numba = None
    AVAILABLE = False


def _jit(fn):
    """``numba.njit`` with an on-disk cache (compile once per machine).

    Falls back to an in-memory compile where numba finds no writable cache
    location (a read-only install without a user cache directory).
    """
    if not AVAILABLE:  # pragma: no cover
        return fn
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # pragma: no cover - "no locator available"
        return numba.njit(nogil=True)(fn)


@_jit
def _logadd(x: float, y: float) -> float:
    """log(exp(x) + exp(y)), exact for -inf operands (gives -inf, never NaN)."""
    m = max(x, y)
    if m == -np.inf:
        return m
    return m + math.log1p(math.exp(-abs(x - y)))


@_jit
def alpha_kernel(px, py, alpha):
    """Fill ``alpha`` (S+1, T+1, B) from px (S, T+1, B) and py (S+1, T, B).

    No region masking is needed: ``alpha[s, t]`` only reads cells and arcs
    with smaller or equal indexes, all inside the region when ``(s, t)`` is.
    """
    num_s = px.shape[0]
    width = alpha.shape[1]
    num_b = alpha.shape[2]
    for b in range(num_b):
        alpha[0, 0, b] = 0.0
    for t in range(1, width):
        for b in range(num_b):
            alpha[0, t, b] = alpha[0, t - 1, b] + py[0, t - 1, b]
    for s in range(1, num_s + 1):
        for b in range(num_b):
            alpha[s, 0, b] = alpha[s - 1, 0, b] + px[s - 1, 0, b]
        for t in range(1, width):
            for b in range(num_b):
                alpha[s, t, b] = _logadd(
                    alpha[s - 1, t, b] + px[s - 1, t, b], alpha[s, t - 1, b] + py[s, t - 1, b]
                )


@_jit
def occupancy_kernel(px, py, alpha, s_end, t_end, floor, px_grad, py_grad):
    """Backward sweep: ``beta`` and the arc occupancies of every region.

    ``beta[s, t]`` (log-sum of partial paths from ``(s, t)`` to ``(S_b, T_b)``)
    uses only arcs whose target lies inside the region; occupancies::

        px_grad[s, t] = exp(alpha[s, t] + px[s, t] + beta[s+1, t] - score)
        py_grad[s, t] = exp(alpha[s, t] + py[s, t] + beta[s, t+1] - score)

    are written for arcs inside the region; ``px_grad``/``py_grad`` must be
    zero-initialised (S, T+1, B) / (S+1, T, B) arrays.  Occupancies below
    ``floor`` are written as 0: the caller passes the smallest normal number
    of its dtype, because subnormal gradients make every later float op on
    them (matmuls included) many times slower on x86.  Elements whose score
    is not finite (no complete path) keep zero occupancies.
    """
    num_s = px.shape[0]
    width = alpha.shape[1]
    num_b = alpha.shape[2]
    cur = np.full((width, num_b), -np.inf)
    nxt = np.full((width, num_b), -np.inf)
    total = np.empty(num_b)
    live = np.empty(num_b, dtype=np.bool_)
    for b in range(num_b):
        total[b] = alpha[s_end[b], t_end[b], b]
        live[b] = math.isfinite(total[b])
    for s in range(num_s, -1, -1):
        for t in range(width - 1, -1, -1):
            for b in range(num_b):
                sb = s_end[b]
                tb = t_end[b]
                if s > sb or t > tb or not live[b]:
                    cur[t, b] = -np.inf
                    continue
                if s == sb and t == tb:
                    cur[t, b] = 0.0
                    continue
                a = alpha[s, t, b] - total[b]
                acc = -np.inf
                if s < sb:
                    acc = px[s, t, b] + nxt[t, b]
                    g = math.exp(a + acc)
                    px_grad[s, t, b] = g if g >= floor else 0.0
                if t < tb:
                    e = py[s, t, b] + cur[t + 1, b]
                    g = math.exp(a + e)
                    py_grad[s, t, b] = g if g >= floor else 0.0
                    acc = _logadd(acc, e)
                cur[t, b] = acc
        cur, nxt = nxt, cur


def run_alpha(px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """alpha (S+1, T+1, B) float64 for px (S, T+1, B), py (S+1, T, B)."""
    num_s, width, num_b = px.shape
    alpha = np.empty((num_s + 1, width, num_b), dtype=np.float64)
    alpha_kernel(px, py, alpha)
    return alpha


def run_occupancies(px: np.ndarray, py: np.ndarray, alpha: np.ndarray,
                    s_end: np.ndarray, t_end: np.ndarray, floor: float):
    """``(px_grad (S, T+1, B), py_grad (S+1, T, B))`` float64; ends (B,) int64.

    Occupancies below ``floor`` are flushed to 0 (see :func:`occupancy_kernel`).
    """
    px_grad = np.zeros(px.shape, dtype=np.float64)
    py_grad = np.zeros(py.shape, dtype=np.float64)
    occupancy_kernel(px, py, alpha, s_end, t_end, floor, px_grad, py_grad)
    return px_grad, py_grad
