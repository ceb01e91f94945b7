"""Word error rate with kaldialign, and the icefall-format result files.

Definitions (per utterance ``i`` with reference words ``r_i`` and hypothesis
words ``h_i``; the alignment is kaldialign's minimum edit-distance alignment):

    E_i = ins_i + del_i + sub_i,     N_i = len(r_i)
    WER = 100 · Σ_i E_i / Σ_i N_i        (percent; 0 when Σ N_i = 0 and Σ E_i = 0)

Files written (the layout icefall's scoring tools and users expect; all lists
are sorted by utterance id so that decoding the same set twice gives the same
bytes):

* ``recogs-<tag>.txt``: two lines per utterance, ``<id>:\\tref=[...]`` and
  ``<id>:\\thyp=[...]`` (Python list literals, readable with ``ast``);
* ``errs-<tag>.txt``: ``%WER = x.xx``, the error counts, then sections
  ``PER-UTT DETAILS``, ``SUBSTITUTIONS``, ``DELETIONS``, ``INSERTIONS`` and
  ``PER-WORD STATS``;
* ``wer-summary-<tag>.txt``: ``settings\\tWER`` then one ``<setting>\\t<wer>`` line.
"""
from __future__ import annotations

import ast
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

import kaldialign

from asr_kd.atomic import atomic_write_text
from asr_kd.types import PathLike

__all__ = [
    "EPS",
    "ErrorCounts",
    "align_words",
    "utterance_errors",
    "corpus_wer",
    "write_recogs",
    "read_recogs",
    "write_errs",
    "write_wer_summary",
    "atomic_write_text",
]

#: The gap symbol in alignments (cannot be a word: words never contain '*'
#: alone after whitespace splitting of normal transcripts; checked anyway).
EPS = "*"


@dataclass(frozen=True)
class ErrorCounts:
    """Edit operations of one utterance (or of a whole set, after summing)."""

    ins: int = 0
    dels: int = 0
    subs: int = 0
    ref_len: int = 0

    @property
    def errors(self) -> int:
        return self.ins + self.dels + self.subs

    @property
    def correct(self) -> int:
        return self.ref_len - self.dels - self.subs

    @property
    def wer(self) -> float:
        """Percent WER; 0.0 for an empty reference with no insertion, inf with insertions."""
        if self.ref_len == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return 100.0 * self.errors / self.ref_len

    def __add__(self, other: "ErrorCounts") -> "ErrorCounts":
        return ErrorCounts(self.ins + other.ins, self.dels + other.dels,
                           self.subs + other.subs, self.ref_len + other.ref_len)


def _check_words(words: Sequence[str], what: str) -> None:
    for w in words:
        if w == EPS:
            raise ValueError(f"{what} contains the reserved alignment gap symbol {EPS!r}")


def align_words(ref: Sequence[str], hyp: Sequence[str]) -> List[Tuple[str, str]]:
    """kaldialign alignment as (ref_word, hyp_word) pairs; ``EPS`` marks a gap.

    ``(r, EPS)`` is a deletion, ``(EPS, h)`` an insertion, ``(r, h)`` with
    ``r != h`` a substitution and ``(w, w)`` a correct word.
    """
    _check_words(ref, "reference")
    _check_words(hyp, "hypothesis")
    if not ref and not hyp:
        return []
    return [(str(r), str(h)) for r, h in kaldialign.align(list(ref), list(hyp), EPS)]


def utterance_errors(ref: Sequence[str], hyp: Sequence[str]) -> ErrorCounts:
    """Insertions, deletions and substitutions of one utterance."""
    ins = dels = subs = 0
    for r, h in align_words(ref, hyp):
        if r == EPS:
            ins += 1
        elif h == EPS:
            dels += 1
        elif r != h:
            subs += 1
    return ErrorCounts(ins, dels, subs, len(ref))


def corpus_wer(pairs: Iterable[Tuple[Sequence[str], Sequence[str]]]) -> ErrorCounts:
    """Summed error counts over (ref_words, hyp_words) pairs; ``.wer`` is the corpus WER."""
    total = ErrorCounts()
    for ref, hyp in pairs:
        total = total + utterance_errors(ref, hyp)
    return total


Results = Mapping[str, Tuple[Sequence[str], Sequence[str]]]


def write_recogs(path: PathLike, results: Results) -> None:
    """``results``: utterance id -> (ref_words, hyp_words). Sorted by id."""
    lines = []
    for uid in sorted(results):
        ref, hyp = results[uid]
        lines.append(f"{uid}:\tref={list(map(str, ref))!r}\n")
        lines.append(f"{uid}:\thyp={list(map(str, hyp))!r}\n")
    atomic_write_text(path, "".join(lines))


def read_recogs(path: PathLike) -> Dict[str, Tuple[List[str], List[str]]]:
    """Parse a ``recogs-*.txt`` file back into id -> (ref_words, hyp_words)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recogs file not found: {path}")
    refs: Dict[str, List[str]] = {}
    hyps: Dict[str, List[str]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        uid, sep, rest = line.partition(":\t")
        if not sep or not (rest.startswith("ref=") or rest.startswith("hyp=")):
            raise ValueError(f"{path}:{n}: not a recogs line (expected '<id>:\\tref=[...]'): {line!r}")
        try:
            words = ast.literal_eval(rest[4:])
        except (ValueError, SyntaxError) as e:
            raise ValueError(f"{path}:{n}: cannot parse the word list: {e}") from e
        if not isinstance(words, list):
            raise ValueError(f"{path}:{n}: expected a list of words")
        target = refs if rest.startswith("ref=") else hyps
        if uid in target:
            raise ValueError(f"{path}:{n}: utterance {uid!r} appears twice")
        target[uid] = [str(w) for w in words]
    if set(refs) != set(hyps):
        missing = sorted(set(refs) ^ set(hyps))[:5]
        raise ValueError(f"{path}: utterances without both ref and hyp lines, e.g. {missing}")
    return {uid: (refs[uid], hyps[uid]) for uid in sorted(refs)}


def write_errs(path: PathLike, results: Results) -> ErrorCounts:
    """Write the detailed error report; returns the corpus error counts."""
    total = ErrorCounts()
    per_utt: List[str] = []
    subs: Counter = Counter()
    dels: Counter = Counter()
    ins: Counter = Counter()
    # word -> [correct, errors, count_in_ref, count_in_hyp]
    words: Dict[str, List[int]] = {}

    def stat(w: str) -> List[int]:
        return words.setdefault(w, [0, 0, 0, 0])

    for uid in sorted(results):
        ref, hyp = results[uid]
        ali = align_words(ref, hyp)
        total = total + utterance_errors(ref, hyp)
        parts = []
        for r, h in ali:
            if r == h:
                parts.append(r)
                stat(r)[0] += 1
            else:
                parts.append(f"({r}->{h})")
                if r == EPS:
                    ins[h] += 1
                    stat(h)[1] += 1
                elif h == EPS:
                    dels[r] += 1
                    stat(r)[1] += 1
                else:
                    subs[(r, h)] += 1
                    stat(r)[1] += 1
                    stat(h)[1] += 1
        for r in ref:
            stat(r)[2] += 1
        for h in hyp:
            stat(h)[3] += 1
        per_utt.append(f"{uid}:\t{' '.join(parts)}\n")

    def by_count(c: Counter) -> List[Tuple[object, int]]:
        return sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))

    out = [
        f"%WER = {total.wer:.2f}\n",
        f"Errors: {total.ins} insertions, {total.dels} deletions, {total.subs} substitutions, "
        f"over {total.ref_len} reference words ({total.correct} correct)\n",
        "Search below for sections starting with PER-UTT DETAILS:, SUBSTITUTIONS:, "
        "DELETIONS:, INSERTIONS:, PER-WORD STATS:\n",
        "\nPER-UTT DETAILS: corr or (ref->hyp)  \n",
        *per_utt,
        "\nSUBSTITUTIONS: count ref -> hyp\n",
        *[f"{n}   {r} -> {h}\n" for (r, h), n in by_count(subs)],
        "\nDELETIONS: count ref\n",
        *[f"{n}   {w}\n" for w, n in by_count(dels)],
        "\nINSERTIONS: count hyp\n",
        *[f"{n}   {w}\n" for w, n in by_count(ins)],
        "\nPER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp\n",
        *[f"{w}   {c} {e} {nr} {nh}\n"
          for w, (c, e, nr, nh) in sorted(words.items(), key=lambda kv: (-kv[1][1], kv[0]))],
    ]
    atomic_write_text(path, "".join(out))
    return total


def write_wer_summary(path: PathLike, wers: Mapping[str, float]) -> None:
    """``settings\\tWER`` header then one line per setting, best WER first."""
    rows = sorted(wers.items(), key=lambda kv: (kv[1], kv[0]))
    atomic_write_text(path, "settings\tWER\n" + "".join(f"{k}\t{v:.2f}\n" for k, v in rows))
