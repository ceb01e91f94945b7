"""Word timing and latency metrics (definitions in docs/decoding.md, "Metrics").

Times are seconds from the start of the decoded audio (the cut start).

Token times (produced by :mod:`asr_kd.decode`):

* **emission** time ``e = f · 0.04 s``: encoder frame ``f`` at which the token
  was emitted (frame shift 40 ms after 4× subsampling of 10 ms features);
* **availability** time ``a``: end of the audio the decoder had consumed when
  it emitted the token (the end of the chunk's audio, front-end look-ahead
  included; the utterance end for offline decoding). Always ``a ≥ e``.

Word times: a hypothesis word's time is the time of its **first** token;
a sentencepiece piece starting with ``▁`` starts a new word
(:func:`tokens_to_words`).

For an utterance with reference words ``r_1..r_N`` starting at ``s_1..s_N``
and hypothesis words ``h_1..h_M`` with times ``e_j`` / ``a_j``, aligned with
kaldialign (minimum edit distance):

* **first-token latency** ``L = a_1 − s_1`` (availability time of the first
  hypothesis word minus the reference start of the first reference word),
  defined when ``r_1`` is aligned to an identical hypothesis word
  ("qualifying" utterance). If a word was inserted before ``r_1``, ``h_1`` is
  that inserted word and ``L`` measures when the *first word appeared*; such
  utterances are counted in ``share_inserted_before_first`` so the reader can
  see how often that happens. Reported: mean and P90 (``numpy.percentile``,
  linear interpolation) over qualifying utterances, the share of utterances
  that qualify, and the share with an insertion before ``r_1`` (both over
  utterances with a non-empty reference whose word times are known);
* **mean symbol delay** (emission): mean of ``e_j − s_i`` over every aligned
  pair ``(r_i, h_j)`` with ``r_i == h_j``, pooled over utterances;
  availability version: the same with ``a_j``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from .wer import EPS, align_words

__all__ = [
    "WORD_START",
    "TimedWords",
    "UtteranceTiming",
    "FirstTokenLatency",
    "SymbolDelay",
    "tokens_to_words",
    "reference_word_times",
    "first_token_latency",
    "mean_symbol_delay",
]

log = logging.getLogger(__name__)

#: sentencepiece's word-boundary marker (U+2581).
WORD_START = "\u2581"

#: Alignment symbols that mark silence/noise rather than a transcript word.
_NON_WORDS = frozenset({"", "<eps>", "<sil>", "sil", "SIL", "sp", "<SIL>"})


@dataclass
class TimedWords:
    """Hypothesis words with the times of their first token (seconds)."""

    words: List[str] = field(default_factory=list)
    emission_s: List[float] = field(default_factory=list)
    availability_s: List[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not (len(self.words) == len(self.emission_s) == len(self.availability_s)):
            raise ValueError("TimedWords: words, emission_s and availability_s differ in length")


def tokens_to_words(pieces: Sequence[str], emission_s: Sequence[float],
                    availability_s: Sequence[float]) -> TimedWords:
    """Group sentencepiece pieces into words, timing each word by its first piece.

    A piece starting with ``▁`` starts a word; the first piece always does (a
    hypothesis may begin with a word-internal piece). A lone ``▁`` piece
    starts a word whose letters come from the following pieces. Pieces that
    make no letters (a trailing ``▁``) produce no word.

    Args:
      pieces: the hypothesis tokens as pieces (``Tokenizer.id_to_piece``).
      emission_s, availability_s: per-token times, same length as ``pieces``.
    """
    if not (len(pieces) == len(emission_s) == len(availability_s)):
        raise ValueError(
            f"tokens_to_words: {len(pieces)} pieces but {len(emission_s)} emission and "
            f"{len(availability_s)} availability times"
        )
    out = TimedWords()
    cur: Optional[List[Any]] = None  # [text, emission, availability]

    def flush() -> None:
        if cur is not None and cur[0]:
            out.words.append(cur[0])
            out.emission_s.append(float(cur[1]))
            out.availability_s.append(float(cur[2]))

    for piece, e, a in zip(pieces, emission_s, availability_s):
        starts = piece.startswith(WORD_START) or cur is None
        text = piece.replace(WORD_START, " ")
        if starts:
            flush()
            cur = ["", e, a]
        # A piece may hold several words only if it contains inner '▁'s
        # (sentencepiece never makes those with default settings); split anyway.
        parts = text.split(" ")
        cur[0] += parts[0]
        for extra in parts[1:]:
            if cur[0]:
                flush()
                cur = ["", e, a]
            cur[0] += extra
    flush()
    return out


def reference_word_times(supervision: Any, ref_words: Sequence[str]) -> Tuple[Optional[List[float]], str]:
    """Start times of the reference words from ``supervision.alignment["word"]``.

    ``AlignmentItem.start`` is taken as seconds from the cut start (true for
    recording-level cuts and for this project's synthetic corpus, whose prep
    shifts the times by every trim/pad it applies). Silence symbols
    (``""``, ``<eps>``, ``sil``, ``sp`` ...) are dropped.

    Returns:
      (times, "") when the aligned words match ``ref_words`` (case-insensitive),
      else (None, reason).
    """
    ali = getattr(supervision, "alignment", None) or {}
    items = ali.get("word") if isinstance(ali, dict) else None
    if not items:
        return None, "no word alignment in the supervision"
    items = [it for it in items if str(it.symbol) not in _NON_WORDS]
    syms = [str(it.symbol).upper() for it in items]
    if syms != [w.upper() for w in ref_words]:
        return None, (f"word alignment {syms[:6]}... does not match the transcript "
                      f"{list(ref_words)[:6]}...")
    return [float(it.start) for it in items], ""


@dataclass
class UtteranceTiming:
    """What the latency metrics need from one decoded utterance."""

    utt_id: str
    ref_words: List[str]
    ref_starts_s: Optional[List[float]]  # None: reference times unknown
    hyp: TimedWords

    def __post_init__(self) -> None:
        if self.ref_starts_s is not None and len(self.ref_starts_s) != len(self.ref_words):
            raise ValueError(f"{self.utt_id}: {len(self.ref_words)} reference words but "
                             f"{len(self.ref_starts_s)} start times")


@dataclass
class FirstTokenLatency:
    """First-token latency summary (ms); None fields come with ``reason``."""

    mean_ms: Optional[float]
    p90_ms: Optional[float]
    num_utts: int  # utterances with a non-empty reference and known word times
    num_qualifying: int
    share_qualifying: Optional[float]
    share_inserted_before_first: Optional[float]
    reason: str = ""


@dataclass
class SymbolDelay:
    """Mean symbol delay (ms) over correctly recognised words."""

    emission_ms: Optional[float]
    availability_ms: Optional[float]
    num_words: int
    reason: str = ""


def _pairs_with_indices(ref: Sequence[str], hyp: Sequence[str]) -> List[Tuple[int, int, str, str]]:
    """Alignment pairs annotated with (ref index or -1, hyp index or -1)."""
    out = []
    i = j = 0
    for r, h in align_words(ref, hyp):
        ri = hj = -1
        if r != EPS:
            ri, i = i, i + 1
        if h != EPS:
            hj, j = j, j + 1
        out.append((ri, hj, r, h))
    return out


def _usable(utts: Sequence[UtteranceTiming]) -> List[UtteranceTiming]:
    return [u for u in utts if u.ref_words and u.ref_starts_s is not None]


def first_token_latency(utts: Sequence[UtteranceTiming]) -> FirstTokenLatency:
    """First-token latency over ``utts`` (see the module docstring for the definition)."""
    usable = _usable(utts)
    if not usable:
        reason = ("no utterance has reference word times" if utts else "no utterances")
        return FirstTokenLatency(None, None, 0, 0, None, None, reason)
    lat: List[float] = []
    inserted = 0
    for u in usable:
        pairs = _pairs_with_indices(u.ref_words, u.hyp.words)
        k = next(n for n, p in enumerate(pairs) if p[0] == 0)
        if any(p[0] == -1 for p in pairs[:k]):
            inserted += 1
        _, hj, r, h = pairs[k]
        if hj >= 0 and r == h:
            lat.append(1000.0 * (u.hyp.availability_s[0] - u.ref_starts_s[0]))
    n = len(usable)
    if not lat:
        return FirstTokenLatency(None, None, n, 0, 0.0, inserted / n,
                                 "no utterance has its first reference word recognised")
    arr = np.asarray(lat, dtype=np.float64)
    return FirstTokenLatency(float(arr.mean()), float(np.percentile(arr, 90)), n, len(lat),
                             len(lat) / n, inserted / n)


def mean_symbol_delay(utts: Sequence[UtteranceTiming]) -> SymbolDelay:
    """Mean (hyp word time − ref word start) over correct words, both time kinds."""
    usable = _usable(utts)
    if not usable:
        reason = ("no utterance has reference word times" if utts else "no utterances")
        return SymbolDelay(None, None, 0, reason)
    emis: List[float] = []
    avail: List[float] = []
    for u in usable:
        for ri, hj, r, h in _pairs_with_indices(u.ref_words, u.hyp.words):
            if ri >= 0 and hj >= 0 and r == h:
                emis.append(u.hyp.emission_s[hj] - u.ref_starts_s[ri])
                avail.append(u.hyp.availability_s[hj] - u.ref_starts_s[ri])
    if not emis:
        return SymbolDelay(None, None, 0, "no reference word was recognised correctly")
    return SymbolDelay(1000.0 * math.fsum(emis) / len(emis), 1000.0 * math.fsum(avail) / len(avail),
                       len(emis))
