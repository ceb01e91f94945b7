"""Closed-vocabulary restriction of the sentence pool (a task in the manner of
Resource Management's 1k-word or WSJ's 5k-closed read speech).

    vocab  = the V most frequent transcript words of the whole pool
             (ties broken alphabetically, so the list is a function of the pool)
    keep   = sentences with MIN..MAX words that all lie in vocab

Every split is drawn from ``keep``, so every test word is a vocabulary word
(closed-vocabulary test sets); no word is out of vocabulary, and a small
transducer meets each word many times in a few hours of audio.  Sizes of the
pool built from the Debian sources (4..14 words): V = 1000 keeps ~7.9 k
sentences, V = 2000 ~19 k, V = 5000 ~50 k.
"""
from __future__ import annotations

from collections import Counter
from typing import List, Sequence, Tuple

__all__ = ["closed_vocabulary", "restrict_pool"]


def closed_vocabulary(pool: Sequence, size: int) -> List[str]:
    """The ``size`` most frequent transcript words of ``pool`` (sorted by count, then word)."""
    if size <= 0:
        raise ValueError(f"closed_vocab: vocabulary size must be > 0, got {size}")
    counts = Counter(w for s in pool for w in s.transcript.split())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [w for w, _ in ranked[:size]]


def restrict_pool(pool: Sequence, size: int, min_words: int, max_words: int) -> Tuple[List, List[str]]:
    """(sentences of ``pool`` inside the closed vocabulary with min..max words, the vocabulary)."""
    if not 1 <= min_words <= max_words:
        raise ValueError(f"closed_vocab: need 1 <= min_words <= max_words, got {min_words}, {max_words}")
    vocab = closed_vocabulary(pool, size)
    allowed = set(vocab)
    kept = [s for s in pool
            if min_words <= s.num_words <= max_words and all(w in allowed for w in s.transcript.split())]
    return kept, vocab
