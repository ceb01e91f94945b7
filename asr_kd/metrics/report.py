"""Score one decoded set: result files and the numbers of a ``results.json`` row.

Input: utterance records with the attributes of
``asr_kd.decode.pipeline.UtteranceOutput`` (``cut_id``, ``ref_words``,
``ref_starts_s``, ``ref_times_reason``, ``ref_ends_s``, ``ref_ends_reason``,
``hyp`` (:class:`TimedWords`), ``tokens``, ``frames``, ``note``).

Files (``<tag>`` = ``<test_set>-<setting>-<model>``, or ``<test_set>-<setting>``
when no model name is given; the model name keeps two models decoded into one
directory from overwriting each other's files):
``recogs-<tag>.txt``, ``errs-<tag>.txt``, ``wer-summary-<tag>.txt`` (icefall
format, see :mod:`.wer`) and ``timings-<tag>.jsonl`` (one JSON object per
utterance, sorted by id: hypothesis words with emission and availability
times, reference start and end times, the note of degenerate audio), from
which every latency number can be recomputed.
"""
from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from .latency import UtteranceTiming, first_token_latency, mean_symbol_delay, word_end_latency
from .wer import atomic_write_text, write_errs, write_recogs, write_wer_summary

__all__ = ["file_tag", "score_and_write"]

log = logging.getLogger(__name__)


def _r(x: Any, nd: int = 3) -> Any:
    return None if x is None else round(float(x), nd)


def file_tag(test_set: str, setting: str, model: Optional[str] = None) -> str:
    """``<test_set>-<setting>[-<model>]``, with characters unsafe in file names in the model name as "_"."""
    tag = f"{test_set}-{setting}"
    if model:
        tag += "-" + re.sub(r"[^A-Za-z0-9._+=-]", "_", model)
    return tag


def score_and_write(utts: Sequence[Any], out_dir: Union[str, Path], test_set: str,
                    setting: str, model: Optional[str] = None) -> Dict[str, Any]:
    """Write the files and return the metric fields of the row.

    Returned keys: wer, num_utts, num_ref_words, ins, del, sub,
    first_token_latency_ms, first_token_latency_median_ms,
    first_token_latency_p90_ms, first_token_share_qualifying,
    first_token_share_inserted_before, first_token_share_anticipated,
    mean_symbol_delay_ms, mean_availability_delay_ms, num_symbol_delay_words,
    word_end_latency_p50_ms, word_end_latency_p90_ms, num_word_end_words,
    num_empty_by_bad_audio, latency_reasons (list of str: why a latency is
    null or covers fewer utterances).
    """
    out_dir = Path(out_dir)
    tag = file_tag(test_set, setting, model)
    pairs = {u.cut_id: (list(u.ref_words), list(u.hyp.words)) for u in utts}
    write_recogs(out_dir / f"recogs-{tag}.txt", pairs)
    total = write_errs(out_dir / f"errs-{tag}.txt", pairs)
    write_wer_summary(out_dir / f"wer-summary-{tag}.txt", {setting: total.wer})

    lines: List[str] = []
    timings: List[UtteranceTiming] = []
    missing = Counter()
    missing_ends = Counter()  # starts known, ends not: the word-end latency leaves these out
    for u in sorted(utts, key=lambda x: x.cut_id):
        timings.append(UtteranceTiming(u.cut_id, list(u.ref_words), u.ref_starts_s, u.hyp,
                                       ref_ends_s=u.ref_ends_s))
        if u.ref_starts_s is None and u.ref_words:
            missing[u.ref_times_reason] += 1
        elif u.ref_ends_s is None and u.ref_words:
            missing_ends[u.ref_ends_reason] += 1
        lines.append(json.dumps({
            "id": u.cut_id,
            "ref": list(u.ref_words),
            "ref_start_s": u.ref_starts_s,
            "ref_end_s": u.ref_ends_s,
            "hyp": list(u.hyp.words),
            "hyp_emission_s": [round(t, 4) for t in u.hyp.emission_s],
            "hyp_availability_s": [round(t, 4) for t in u.hyp.availability_s],
            "tokens": list(u.tokens),
            "frames": list(u.frames),
            "note": u.note,
        }, ensure_ascii=False) + "\n")
    atomic_write_text(out_dir / f"timings-{tag}.jsonl", "".join(lines))

    reasons: List[str] = []
    for why, n in sorted(missing.items()):
        msg = f"{n} utterance(s) without reference word times: {why}"
        log.warning("%s: %s", tag, msg)
        reasons.append(msg)
    for why, n in sorted(missing_ends.items()):
        msg = f"{n} utterance(s) with reference word starts but no word ends: {why}"
        log.warning("%s: %s", tag, msg)
        reasons.append(msg)
    ftl = first_token_latency(timings)
    msd = mean_symbol_delay(timings)
    wel = word_end_latency(timings)
    if ftl.mean_ms is None:
        log.warning("%s: first-token latency is null: %s", tag, ftl.reason)
        reasons.append(f"first-token latency: {ftl.reason}")
    if msd.emission_ms is None:
        log.warning("%s: mean symbol delay is null: %s", tag, msd.reason)
        reasons.append(f"mean symbol delay: {msd.reason}")
    if wel.p50_ms is None:
        log.warning("%s: word-end latency is null: %s", tag, wel.reason)
        reasons.append(f"word-end latency: {wel.reason}")
    return {
        "wer": round(total.wer, 4),
        "num_utts": len(utts),
        "num_ref_words": total.ref_len,
        "ins": total.ins,
        "del": total.dels,
        "sub": total.subs,
        "first_token_latency_ms": _r(ftl.mean_ms, 1),
        "first_token_latency_median_ms": _r(ftl.median_ms, 1),
        "first_token_latency_p90_ms": _r(ftl.p90_ms, 1),
        "first_token_share_qualifying": _r(ftl.share_qualifying, 4),
        "first_token_share_inserted_before": _r(ftl.share_inserted_before_first, 4),
        "first_token_share_anticipated": _r(ftl.share_anticipated, 4),
        "mean_symbol_delay_ms": _r(msd.emission_ms, 1),
        "mean_availability_delay_ms": _r(msd.availability_ms, 1),
        "num_symbol_delay_words": msd.num_words,
        "word_end_latency_p50_ms": _r(wel.p50_ms, 1),
        "word_end_latency_p90_ms": _r(wel.p90_ms, 1),
        "num_word_end_words": wel.num_words,
        "num_empty_by_bad_audio": sum(1 for u in utts if u.note),
        "latency_reasons": reasons,
    }
