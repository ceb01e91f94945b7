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
  utterances with a non-empty reference whose word times are known). Also
  the median (``numpy.percentile`` 50, linear) of the same values, and the
  **anticipated share**: qualifying utterances with ``L < 0`` (``a_1 < s_1``:
  the first word was shown before it was spoken) over qualifying utterances.
  Anticipation (a predictable first word) pulls the mean below zero, which
  is why the median and this share are reported beside it;
* **mean symbol delay** (emission): mean of ``e_j − s_i`` over every aligned
  pair ``(r_i, h_j)`` with ``r_i == h_j``, pooled over utterances;
  availability version: the same with ``a_j``;
* **word-end latency** ``a_j − t_i`` over the same correct pairs, with
  ``t_i = s_i + d_i`` the reference *end* of ``r_i`` (start plus the
  alignment's duration), pooled over the utterances whose end times are
  known; reported: P50 and P90 (``numpy.percentile``, linear). Measured
  from the word's end, guessing a predictable word early gains much less
  than it does against the start; a value below 0 means the word was shown
  before it had been fully spoken.
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
    "WordEndLatency",
    "tokens_to_words",
    "reference_word_spans",
    "reference_word_times",
    "first_token_latency",
    "mean_symbol_delay",
    "word_end_latency",
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


def reference_word_spans(supervision: Any, ref_words: Sequence[str]
                         ) -> Tuple[Optional[List[float]], Optional[List[float]], str, str]:
    """Start and end times of the reference words from ``supervision.alignment["word"]``.

    ``AlignmentItem.start`` is taken as seconds from the cut start (true for
    recording-level cuts and for this project's synthetic corpus, whose prep
    shifts the times by every trim/pad it applies); a word's end is
    ``start + duration``. Silence symbols (``""``, ``<eps>``, ``sil``,
    ``sp`` ...) are dropped.

    Returns:
      (starts, ends, starts_reason, ends_reason): starts are None (with
      starts_reason) unless the aligned words match ``ref_words``
      (case-insensitive); ends are None with ends_reason whenever starts are,
      and also when a word has a non-positive duration (an alignment that
      stores starts only), in which case the starts are still returned.
    """
    ali = getattr(supervision, "alignment", None) or {}
    items = ali.get("word") if isinstance(ali, dict) else None
    if not items:
        why = "no word alignment in the supervision"
        return None, None, why, why
    items = [it for it in items if str(it.symbol) not in _NON_WORDS]
    syms = [str(it.symbol).upper() for it in items]
    if syms != [w.upper() for w in ref_words]:
        why = (f"word alignment {syms[:6]}... does not match the transcript "
               f"{list(ref_words)[:6]}...")
        return None, None, why, why
    starts = [float(it.start) for it in items]
    if any(not float(it.duration) > 0 for it in items):
        return starts, None, "", "word alignment has words of zero or negative duration"
    return starts, [float(it.start) + float(it.duration) for it in items], "", ""


def reference_word_times(supervision: Any, ref_words: Sequence[str]) -> Tuple[Optional[List[float]], str]:
    """Start times of the reference words: ``(starts, reason)`` of :func:`reference_word_spans`."""
    starts, _, why, _ = reference_word_spans(supervision, ref_words)
    return starts, why


@dataclass
class UtteranceTiming:
    """What the latency metrics need from one decoded utterance."""

    utt_id: str
    ref_words: List[str]
    ref_starts_s: Optional[List[float]]  # None: reference times unknown
    hyp: TimedWords
    ref_ends_s: Optional[List[float]] = None  # None: reference word ends unknown

    def __post_init__(self) -> None:
        for what, times in (("start", self.ref_starts_s), ("end", self.ref_ends_s)):
            if times is not None and len(times) != len(self.ref_words):
                raise ValueError(f"{self.utt_id}: {len(self.ref_words)} reference words but "
                                 f"{len(times)} {what} times")


@dataclass
class FirstTokenLatency:
    """First-token latency summary (ms); None fields come with ``reason``."""

    mean_ms: Optional[float]
    median_ms: Optional[float]
    p90_ms: Optional[float]
    num_utts: int  # utterances with a non-empty reference and known word times
    num_qualifying: int
    share_qualifying: Optional[float]
    share_inserted_before_first: Optional[float]
    share_anticipated: Optional[float]  # of qualifying utterances: a_1 < s_1
    reason: str = ""


@dataclass
class SymbolDelay:
    """Mean symbol delay (ms) over correctly recognised words."""

    emission_ms: Optional[float]
    availability_ms: Optional[float]
    num_words: int
    reason: str = ""


@dataclass
class WordEndLatency:
    """Percentiles (ms) of availability time − reference word end over correct words."""

    p50_ms: Optional[float]
    p90_ms: Optional[float]
    num_words: int
    num_utts: int  # utterances with a non-empty reference and known word ends
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


def _correct_pairs(u: UtteranceTiming) -> List[Tuple[int, int]]:
    """(reference index, hypothesis index) of every aligned pair whose words are equal."""
    return [(ri, hj) for ri, hj, r, h in _pairs_with_indices(u.ref_words, u.hyp.words)
            if ri >= 0 and hj >= 0 and r == h]


def _usable(utts: Sequence[UtteranceTiming]) -> List[UtteranceTiming]:
    return [u for u in utts if u.ref_words and u.ref_starts_s is not None]


def first_token_latency(utts: Sequence[UtteranceTiming]) -> FirstTokenLatency:
    """First-token latency over ``utts`` (see the module docstring for the definition)."""
    usable = _usable(utts)
    if not usable:
        reason = ("no utterance has reference word times" if utts else "no utterances")
        return FirstTokenLatency(None, None, None, 0, 0, None, None, None, reason)
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
        return FirstTokenLatency(None, None, None, n, 0, 0.0, inserted / n, None,
                                 "no utterance has its first reference word recognised")
    arr = np.asarray(lat, dtype=np.float64)
    return FirstTokenLatency(
        mean_ms=float(arr.mean()), median_ms=float(np.percentile(arr, 50)),
        p90_ms=float(np.percentile(arr, 90)), num_utts=n, num_qualifying=len(lat),
        share_qualifying=len(lat) / n, share_inserted_before_first=inserted / n,
        # L < 0 exactly when a_1 < s_1 (both in the same time base)
        share_anticipated=int(np.count_nonzero(arr < 0)) / len(lat))


def mean_symbol_delay(utts: Sequence[UtteranceTiming]) -> SymbolDelay:
    """Mean (hyp word time − ref word start) over correct words, both time kinds."""
    usable = _usable(utts)
    if not usable:
        reason = ("no utterance has reference word times" if utts else "no utterances")
        return SymbolDelay(None, None, 0, reason)
    emis: List[float] = []
    avail: List[float] = []
    for u in usable:
        for ri, hj in _correct_pairs(u):
            emis.append(u.hyp.emission_s[hj] - u.ref_starts_s[ri])
            avail.append(u.hyp.availability_s[hj] - u.ref_starts_s[ri])
    if not emis:
        return SymbolDelay(None, None, 0, "no reference word was recognised correctly")
    return SymbolDelay(1000.0 * math.fsum(emis) / len(emis), 1000.0 * math.fsum(avail) / len(avail),
                       len(emis))


def word_end_latency(utts: Sequence[UtteranceTiming]) -> WordEndLatency:
    """P50/P90 of ``a_j − (s_i + d_i)`` over correct aligned pairs, pooled over utterances.

    The pairs are those of :func:`mean_symbol_delay`; utterances without
    reference word ends (``ref_ends_s`` None) are left out.
    """
    usable = [u for u in utts if u.ref_words and u.ref_ends_s is not None]
    if not usable:
        reason = ("no utterance has reference word end times" if utts else "no utterances")
        return WordEndLatency(None, None, 0, 0, reason)
    lat: List[float] = []
    for u in usable:
        for ri, hj in _correct_pairs(u):
            lat.append(1000.0 * (u.hyp.availability_s[hj] - u.ref_ends_s[ri]))
    if not lat:
        return WordEndLatency(None, None, 0, len(usable), "no reference word was recognised correctly")
    arr = np.asarray(lat, dtype=np.float64)
    return WordEndLatency(float(np.percentile(arr, 50)), float(np.percentile(arr, 90)), len(lat),
                          len(usable))
