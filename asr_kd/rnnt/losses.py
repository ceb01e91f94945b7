"""The transducer losses with k2's names, argument order, defaults and semantics.

Every loss builds the lattice arc log-probs ``px`` (B, S, T+1) and ``py``
(B, S+1, T) (see :mod:`.logprobs`), runs :func:`mutual_information_recursion`
and returns the negated total log-likelihood per utterance, reduced by
``reduction``: ``"none"`` -> (B,), ``"sum"``, ``"mean"`` (batch mean).

Regular RNN-T lattice for utterance ``b`` with ``S_b`` symbols and ``T_b``
frames: node ``(s, t)`` = ``s`` symbols emitted, at frame ``t``; emitting
symbol ``symbols[b, s]`` moves to ``(s+1, t)``, blank moves to ``(s, t+1)``;
paths run from ``(0, 0)`` to ``(S_b, T_b)``, the last arc being the blank at
``(S_b, T_b - 1)``.  ``boundary`` rows are ``[0, 0, S_b, T_b]``; ``None``
means ``[0, 0, S, T]``.  ``symbols`` entries past ``S_b`` are ignored.

``delay_penalty`` (> 0; k2 ignores other values) adds
``delay_penalty * ((T_b - 1) / 2 - t)`` to every symbol emission at frame
``t`` -- it rewards early emission and sums to zero over an utterance's frames.

With ``return_grad=True`` the losses that support it return
``(loss, (px_grad, py_grad))``: the arc occupancies of the unreduced scores,
i.e. the gradient of ``-loss_none.sum()`` with respect to ``px``/``py``.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

from torch import Tensor

from .backend import k2_or_none
from .logprobs import finish_px, joint_logprobs, pruned_logprobs, simple_logprobs
from .mutual_information import recursion_with_ends
from .validation import (
    check_boundary, check_float, check_ranges, check_reduction, check_rnnt_type, check_same,
    check_shape, check_symbols,
)

LossOut = Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]


def _reduce(neg_loss: Tensor, reduction: str) -> Tensor:
    """Negate the scores and reduce them over the batch."""
    if reduction == "none":
        return -neg_loss
    if reduction == "sum":
        return -neg_loss.sum()
    return -neg_loss.mean()


def _run(px_valid: Tensor, py: Tensor, s_end: Tensor, t_end: Tensor, boundary: Tensor,
         delay_penalty: float, reduction: str, return_grad: bool) -> LossOut:
    """Finish ``px``, run the recursion, reduce."""
    px = finish_px(px_valid, boundary[:, 3], float(delay_penalty))
    out = recursion_with_ends(px, py, s_end, t_end, return_grad)
    if return_grad:
        scores, grads = out
        return _reduce(scores, reduction), grads
    return _reduce(out, reduction)


def _check_common(fn: str, rnnt_type: str, reduction: str, delay_penalty: float) -> None:
    check_rnnt_type(fn, rnnt_type)
    check_reduction(fn, reduction)
    if not isinstance(delay_penalty, (int, float)):
        raise ValueError(f"{fn}: delay_penalty must be a number, got {delay_penalty!r}")


def _check_lm_am(fn: str, lm: Tensor, am: Tensor) -> Tuple[int, int, int, int]:
    """lm (B, S+1, V) and am (B, T, V); returns (B, S, T, V)."""
    check_float(fn, "lm", lm, 3)
    check_float(fn, "am", am, 3)
    check_same(fn, "am", am, lm=lm)
    num_b, num_t, vocab = am.shape
    if lm.shape[0] != num_b or lm.shape[2] != vocab or lm.shape[1] < 1:
        raise ValueError(
            f"{fn}: lm has shape {tuple(lm.shape)} and am {tuple(am.shape)}; expected "
            "lm (B, S+1, V) and am (B, T, V) with the same B and V"
        )
    return num_b, lm.shape[1] - 1, num_t, vocab


def rnnt_loss_simple(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: Optional[str] = "mean",
    return_grad: bool = False,
) -> LossOut:
    """RNN-T loss of the additive joiner ``log_softmax(am[b, t] + lm[b, s])``.

    Args:
      lm: (B, S+1, V) decoder-side logits (position ``s`` = after ``s`` symbols).
      am: (B, T, V) encoder-side logits.
      symbols: (B, S) int64 label ids in ``[0, V)`` (first ``S_b`` per row).
      termination_symbol: the blank id, in ``[0, V)``.
      boundary, rnnt_type, delay_penalty, reduction, return_grad: see module docs.
    """
    fn = "rnnt_loss_simple"
    _check_common(fn, rnnt_type, reduction, delay_penalty)
    k2 = k2_or_none()
    if k2 is not None:
        return k2.rnnt_loss_simple(
            lm=lm, am=am, symbols=symbols, termination_symbol=termination_symbol,
            boundary=boundary, rnnt_type=rnnt_type, delay_penalty=delay_penalty,
            reduction=reduction, return_grad=return_grad)
    num_b, num_s, num_t, vocab = _check_lm_am(fn, lm, am)
    boundary, s_end, t_end = check_boundary(fn, boundary, num_b, num_s, num_t, am.device)
    symbols = check_symbols(fn, symbols, num_b, num_s, vocab, s_end, termination_symbol,
                            am.device)
    px, py = simple_logprobs(lm, am, symbols, termination_symbol)
    return _run(px, py, s_end, t_end, boundary, delay_penalty, reduction, return_grad)


def rnnt_loss_smoothed(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    lm_only_scale: float = 0.1,
    am_only_scale: float = 0.1,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: Optional[str] = "mean",
    return_grad: bool = False,
) -> LossOut:
    """:func:`rnnt_loss_simple` with k2's LM-only / AM-only smoothing.

    Each arc log-prob is ``(1 - lm_only_scale - am_only_scale) * log p_joint
    + lm_only_scale * log p_lm + am_only_scale * log p_am`` with
    ``p_lm = softmax(lm[s])`` and ``p_am ∝ exp(am[t]) * unigram``, the unigram
    being the LM posterior averaged over the batch and positions (see
    :func:`asr_kd.rnnt.logprobs.simple_logprobs`).  Both scales 0 gives
    :func:`rnnt_loss_simple`.
    """
    fn = "rnnt_loss_smoothed"
    _check_common(fn, rnnt_type, reduction, delay_penalty)
    k2 = k2_or_none()
    if k2 is not None:
        return k2.rnnt_loss_smoothed(
            lm=lm, am=am, symbols=symbols, termination_symbol=termination_symbol,
            lm_only_scale=lm_only_scale, am_only_scale=am_only_scale, boundary=boundary,
            rnnt_type=rnnt_type, delay_penalty=delay_penalty, reduction=reduction,
            return_grad=return_grad)
    num_b, num_s, num_t, vocab = _check_lm_am(fn, lm, am)
    boundary, s_end, t_end = check_boundary(fn, boundary, num_b, num_s, num_t, am.device)
    symbols = check_symbols(fn, symbols, num_b, num_s, vocab, s_end, termination_symbol,
                            am.device)
    px, py = simple_logprobs(lm, am, symbols, termination_symbol,
                             float(lm_only_scale), float(am_only_scale))
    return _run(px, py, s_end, t_end, boundary, delay_penalty, reduction, return_grad)


def rnnt_loss(
    logits: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: Optional[str] = "mean",
) -> Tensor:
    """Full RNN-T loss from joiner logits (B, T, S+1, V) (normalised here).

    Memory is O(B T S V); prefer the pruned pipeline for training.
    """
    fn = "rnnt_loss"
    _check_common(fn, rnnt_type, reduction, delay_penalty)
    k2 = k2_or_none()
    if k2 is not None:
        return k2.rnnt_loss(
            logits=logits, symbols=symbols, termination_symbol=termination_symbol,
            boundary=boundary, rnnt_type=rnnt_type, delay_penalty=delay_penalty,
            reduction=reduction)
    check_float(fn, "logits", logits, 4)
    num_b, num_t, num_s1, vocab = logits.shape
    if num_s1 < 1:
        raise ValueError(f"{fn}: logits has shape {tuple(logits.shape)}; expected (B, T, S+1, V)")
    boundary, s_end, t_end = check_boundary(fn, boundary, num_b, num_s1 - 1, num_t, logits.device)
    symbols = check_symbols(fn, symbols, num_b, num_s1 - 1, vocab, s_end, termination_symbol,
                            logits.device)
    px, py = joint_logprobs(logits, symbols, termination_symbol)
    return _run(px, py, s_end, t_end, boundary, delay_penalty, reduction, False)


def rnnt_loss_pruned(
    logits: Tensor,
    symbols: Tensor,
    ranges: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: Optional[str] = "mean",
) -> Tensor:
    """RNN-T loss on the pruned lattice.

    Args:
      logits: (B, T, R, V) joiner output on the nodes ``(ranges[b, t, r], t)``
        (e.g. the joiner applied to :func:`do_rnnt_pruning`'s outputs).
      symbols: (B, S) int64.
      ranges: (B, T, R) int64 from :func:`get_rnnt_prune_ranges`.
      termination_symbol, boundary, rnnt_type, delay_penalty, reduction: as
        :func:`rnnt_loss`.  Paths leaving the kept nodes get probability 0, so
        the loss is >= the full loss for the same (additive) joiner and equal
        to it when ``R = S + 1``.
    """
    fn = "rnnt_loss_pruned"
    _check_common(fn, rnnt_type, reduction, delay_penalty)
    k2 = k2_or_none()
    if k2 is not None:
        return k2.rnnt_loss_pruned(
            logits=logits, symbols=symbols, ranges=ranges,
            termination_symbol=termination_symbol, boundary=boundary, rnnt_type=rnnt_type,
            delay_penalty=delay_penalty, reduction=reduction)
    check_float(fn, "logits", logits, 4)
    num_b, num_t, num_r, vocab = logits.shape
    if not isinstance(symbols, Tensor) or symbols.ndim != 2:
        raise ValueError(f"{fn}: symbols must be a (B, S) int64 tensor")
    num_s = symbols.shape[1]
    if num_r > num_s + 1 or num_r < 1:
        raise ValueError(
            f"{fn}: logits has R = {num_r} positions per frame but S + 1 = {num_s + 1}"
        )
    check_shape(fn, "symbols", symbols, (num_b, num_s), "(B, S)")
    ranges = check_ranges(fn, ranges, num_b, num_t, num_r, num_s, logits.device)
    boundary, s_end, t_end = check_boundary(fn, boundary, num_b, num_s, num_t, logits.device)
    symbols = check_symbols(fn, symbols, num_b, num_s, vocab, s_end, termination_symbol,
                            logits.device)
    px, py = pruned_logprobs(logits, symbols, ranges, termination_symbol)
    return _run(px, py, s_end, t_end, boundary, delay_penalty, reduction, False)
