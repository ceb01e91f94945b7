"""Paired bootstrap over utterances for the WER difference of two systems.

Two systems A and B decode the same utterances ``i = 1..n``; let ``E^A_i``,
``E^B_i`` be their word errors and ``N_i`` the reference length. The corpus
difference is

    Δ = WER_A − WER_B = 100 · (Σ E^A_i − Σ E^B_i) / Σ N_i.

A bootstrap replicate draws ``n`` utterance indices with replacement (the
same indices for both systems: that is what makes it *paired* and removes
the between-utterance variance both systems share) and recomputes Δ on them.
The 95% interval is the 2.5th and 97.5th percentiles of the replicates
(percentile method). ``prob_a_better`` is the share of replicates with
Δ < 0 (A has fewer errors); if the interval excludes 0 the difference is
unlikely to be noise at that level. The generator is numpy's PCG64 seeded
with ``seed``, so the result is reproducible.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np

from .wer import utterance_errors

__all__ = ["BootstrapResult", "paired_bootstrap", "paired_bootstrap_from_recogs"]


@dataclass
class BootstrapResult:
    """WERs (percent) of A and B, their difference A − B and its interval."""

    num_utts: int
    num_ref_words: int
    wer_a: float
    wer_b: float
    diff: float
    ci_low: float
    ci_high: float
    confidence: float
    prob_a_better: float
    num_samples: int
    seed: int

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)

    def summary(self, name_a: str = "A", name_b: str = "B") -> str:
        pct = int(round(100 * self.confidence))
        verdict = ("the interval excludes 0: the difference is unlikely to be noise"
                   if self.ci_low > 0 or self.ci_high < 0 else
                   "the interval includes 0: no significant difference")
        return (f"{name_a}: WER {self.wer_a:.2f}%   {name_b}: WER {self.wer_b:.2f}%   "
                f"({self.num_utts} utterances, {self.num_ref_words} reference words)\n"
                f"WER({name_a}) - WER({name_b}) = {self.diff:+.2f} points, {pct}% CI "
                f"[{self.ci_low:+.2f}, {self.ci_high:+.2f}] ({self.num_samples} paired "
                f"bootstrap samples, seed {self.seed}); P({name_a} better) = "
                f"{self.prob_a_better:.3f}; {verdict}")


def paired_bootstrap(errors_a: Sequence[int], errors_b: Sequence[int], ref_lens: Sequence[int],
                     num_samples: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> BootstrapResult:
    """Paired bootstrap interval of WER_A − WER_B from per-utterance counts.

    Args:
      errors_a, errors_b: word errors per utterance of each system (length n).
      ref_lens: reference words per utterance (length n, sum > 0).
      num_samples: bootstrap replicates.
      confidence: coverage of the two-sided percentile interval.
      seed: numpy generator seed.
    """
    ea = np.asarray(errors_a, dtype=np.int64)
    eb = np.asarray(errors_b, dtype=np.int64)
    nr = np.asarray(ref_lens, dtype=np.int64)
    n = ea.shape[0]
    if not (eb.shape[0] == n == nr.shape[0]):
        raise ValueError(f"paired_bootstrap: lengths differ ({n}, {eb.shape[0]}, {nr.shape[0]})")
    if n == 0 or nr.sum() == 0:
        raise ValueError("paired_bootstrap: no reference words")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    rng = np.random.Generator(np.random.PCG64(seed))
    diffs = np.empty(num_samples, dtype=np.float64)
    d_err = ea - eb
    # Draw in blocks so memory stays bounded for large sets.
    block = max(1, min(num_samples, 2_000_000 // max(n, 1)))
    for s in range(0, num_samples, block):
        m = min(block, num_samples - s)
        idx = rng.integers(0, n, size=(m, n))
        num = d_err[idx].sum(axis=1)
        den = nr[idx].sum(axis=1)
        diffs[s:s + m] = 100.0 * num / np.maximum(den, 1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(diffs, [alpha, 1.0 - alpha])
    total = float(nr.sum())
    return BootstrapResult(
        num_utts=int(n), num_ref_words=int(total),
        wer_a=100.0 * float(ea.sum()) / total, wer_b=100.0 * float(eb.sum()) / total,
        diff=100.0 * float(d_err.sum()) / total, ci_low=float(lo), ci_high=float(hi),
        confidence=float(confidence), prob_a_better=float((diffs < 0).mean()),
        num_samples=int(num_samples), seed=int(seed),
    )


Recogs = Mapping[str, Tuple[Sequence[str], Sequence[str]]]


def paired_bootstrap_from_recogs(a: Recogs, b: Recogs, **kwargs) -> BootstrapResult:
    """Paired bootstrap from two id -> (ref_words, hyp_words) maps (e.g. :func:`read_recogs`).

    Both must cover the same utterances with the same references; otherwise
    ``ValueError`` names the first offending utterance.
    """
    if set(a) != set(b):
        only_a = sorted(set(a) - set(b))[:3]
        only_b = sorted(set(b) - set(a))[:3]
        raise ValueError(f"the two systems decoded different utterances: only in A {only_a}, "
                         f"only in B {only_b} ({len(set(a) ^ set(b))} in total)")
    ids = sorted(a)
    ea, eb, nr = [], [], []
    for uid in ids:
        ref_a, hyp_a = a[uid]
        ref_b, hyp_b = b[uid]
        if list(ref_a) != list(ref_b):
            raise ValueError(f"utterance {uid!r}: references differ between the two systems")
        ea.append(utterance_errors(ref_a, hyp_a).errors)
        eb.append(utterance_errors(ref_b, hyp_b).errors)
        nr.append(len(ref_a))
    return paired_bootstrap(ea, eb, nr, **kwargs)
