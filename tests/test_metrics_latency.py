"""Word times, first-token latency, symbol delay and word-end latency, checked by hand."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
from lhotse import SupervisionSegment
from lhotse.supervision import AlignmentItem

from asr_kd.metrics.latency import (
    TimedWords,
    UtteranceTiming,
    first_token_latency,
    mean_symbol_delay,
    reference_word_spans,
    reference_word_times,
    tokens_to_words,
    word_end_latency,
)
from asr_kd.metrics.report import score_and_write

W = "\u2581"


def test_tokens_to_words_uses_first_token_times():
    pieces = ["HE", "LLO", W + "WOR", "LD", W, "X", W]
    tw = tokens_to_words(pieces, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [1, 1, 2, 2, 3, 3, 4])
    assert tw.words == ["HELLO", "WORLD", "X"]
    assert tw.emission_s == [0.0, 0.2, 0.4]
    assert tw.availability_s == [1.0, 2.0, 3.0]
    assert tokens_to_words([], [], []).words == []
    with pytest.raises(ValueError):
        tokens_to_words(["A"], [], [])


def _utt(uid, ref, starts, hyp, emis, avail, ends=None):
    return UtteranceTiming(uid, ref, starts, TimedWords(hyp, emis, avail), ref_ends_s=ends)


def test_first_token_latency_and_symbol_delay():
    utts = [
        # first ref word correct: latency = 0.50 - 0.10 = 400 ms
        _utt("a", ["A", "B"], [0.10, 0.50], ["A", "B"], [0.20, 0.60], [0.50, 0.90]),
        # first ref word substituted: does not qualify
        _utt("b", ["A", "B"], [0.10, 0.50], ["X", "B"], [0.20, 0.70], [0.40, 0.80]),
        # inserted word before the first ref word: qualifies, latency uses h_1 (0.30 - 0.20)
        _utt("c", ["A"], [0.20], ["Z", "A"], [0.25, 0.30], [0.30, 0.60]),
        # empty reference: ignored
        _utt("d", [], [], ["Q"], [0.0], [0.1]),
        # no reference times: ignored
        _utt("e", ["A"], None, ["A"], [0.0], [0.1]),
    ]
    ftl = first_token_latency(utts)
    assert ftl.num_utts == 3 and ftl.num_qualifying == 2
    assert ftl.share_qualifying == pytest.approx(2 / 3)
    assert ftl.share_inserted_before_first == pytest.approx(1 / 3)
    assert ftl.mean_ms == pytest.approx((400 + 100) / 2)
    assert ftl.median_ms == pytest.approx(250)
    assert ftl.p90_ms == pytest.approx(100 + 0.9 * 300)
    assert ftl.share_anticipated == 0.0
    msd = mean_symbol_delay(utts)
    # correct words: a/A 0.1, a/B 0.1, b/B 0.2, c/A 0.1 (emission); avail 0.4, 0.4, 0.3, 0.4
    assert msd.num_words == 4
    assert msd.emission_ms == pytest.approx(1000 * (0.1 + 0.1 + 0.2 + 0.1) / 4)
    assert msd.availability_ms == pytest.approx(1000 * (0.4 + 0.4 + 0.3 + 0.4) / 4)


def test_latency_none_with_reason():
    ftl = first_token_latency([_utt("e", ["A"], None, ["A"], [0.0], [0.1])])
    assert ftl.mean_ms is None and "reference word times" in ftl.reason
    miss = first_token_latency([_utt("a", ["A"], [0.0], [], [], [])])
    assert miss.mean_ms is None and miss.share_qualifying == 0.0 and miss.reason
    assert miss.median_ms is None and miss.share_anticipated is None  # none qualify
    assert mean_symbol_delay([]).emission_ms is None


def test_reference_word_times_from_supervision():
    ali = [AlignmentItem("", 0.0, 0.1), AlignmentItem("hello", 0.1, 0.3),
           AlignmentItem("world", 0.45, 0.3)]
    sup = SupervisionSegment("s", "r", 0.0, 1.0, text="HELLO WORLD", alignment={"word": ali})
    times, why = reference_word_times(sup, ["HELLO", "WORLD"])
    assert times == [0.1, 0.45] and why == ""
    times, why = reference_word_times(sup, ["HELLO"])
    assert times is None and "does not match" in why
    bare = SupervisionSegment("s", "r", 0.0, 1.0, text="HELLO")
    assert reference_word_times(bare, ["HELLO"])[0] is None


def test_anticipated_share_and_median():
    utts = [
        # available 0.10 s before the first word starts: anticipated, L = -100 ms
        _utt("early", ["AND", "B"], [0.30, 0.60], ["AND", "B"], [0.10, 0.70], [0.20, 0.80]),
        # available after the start: not anticipated, L = +250 ms
        _utt("late", ["AND", "B"], [0.30, 0.60], ["AND", "B"], [0.40, 0.70], [0.55, 0.80]),
        # available exactly at the start: a_1 < s_1 is false, L = 0
        _utt("same", ["THE"], [0.20], ["THE"], [0.10], [0.20]),
        # early but the first word is wrong: not qualifying, so in neither count
        _utt("wrong", ["THE"], [0.50], ["A"], [0.10], [0.10]),
        # inserted word before the first: qualifies; h_1 (the insertion) is early, L = -300 ms
        _utt("ins", ["THE", "B"], [0.40, 0.80], ["UH", "THE", "B"], [0.05, 0.45, 0.85], [0.10, 0.50, 0.90]),
    ]
    ftl = first_token_latency(utts)
    lat = [-100.0, 250.0, 0.0, -300.0]
    assert ftl.num_utts == 5 and ftl.num_qualifying == 4
    assert ftl.share_anticipated == pytest.approx(2 / 4)
    assert ftl.median_ms == pytest.approx(float(np.percentile(lat, 50)))
    assert ftl.median_ms == pytest.approx(-50.0)  # linear: halfway between -100 and 0
    assert ftl.mean_ms == pytest.approx(np.mean(lat))
    assert ftl.share_inserted_before_first == pytest.approx(1 / 5)


def test_word_end_latency_over_correct_words_only():
    utts = [
        # ref A B C, hyp A X C: B substituted (left out); A and C correct
        _utt("u1", ["A", "B", "C"], [0.1, 0.5, 0.9], ["A", "X", "C"], [0.3, 0.7, 1.1], [0.40, 0.80, 1.20],
             ends=[0.35, 0.80, 1.30]),
        # insertion Z before B (one edit; any other alignment costs two): A, B correct
        _utt("u2", ["A", "B"], [0.0, 0.4], ["A", "Z", "B"], [0.2, 0.5, 0.6], [0.25, 0.60, 0.70],
             ends=[0.30, 0.65]),
        # ends unknown: left out of the word-end metric (still in the symbol delay)
        _utt("u3", ["A"], [0.0], ["A"], [0.5], [0.9]),
    ]
    want = [1000 * (0.40 - 0.35), 1000 * (1.20 - 1.30),  # u1: A, C
            1000 * (0.25 - 0.30), 1000 * (0.70 - 0.65)]  # u2: A, B (the insertion Z has no pair)
    wel = word_end_latency(utts)
    assert wel.num_words == 4 and wel.num_utts == 2 and wel.reason == ""
    assert wel.p50_ms == pytest.approx(float(np.percentile(want, 50)))
    assert wel.p90_ms == pytest.approx(float(np.percentile(want, 90)))
    assert wel.p50_ms == pytest.approx(0.0) and wel.p90_ms == pytest.approx(50.0)
    assert mean_symbol_delay(utts).num_words == 5


def test_word_end_latency_none_with_reason():
    no_ends = word_end_latency([_utt("a", ["A"], [0.0], ["A"], [0.1], [0.2])])
    assert no_ends.p50_ms is None and no_ends.p90_ms is None and "end times" in no_ends.reason
    wrong = word_end_latency([_utt("a", ["A"], [0.0], ["B"], [0.1], [0.2], ends=[0.3])])
    assert wrong.p50_ms is None and wrong.num_utts == 1 and "recognised" in wrong.reason
    assert word_end_latency([]).reason == "no utterances"
    with pytest.raises(ValueError, match="end times"):
        _utt("a", ["A", "B"], [0.0, 0.5], ["A"], [0.1], [0.2], ends=[0.3])


def test_reference_word_ends_from_supervision():
    ali = [AlignmentItem("", 0.0, 0.1), AlignmentItem("hello", 0.1, 0.3),
           AlignmentItem("world", 0.45, 0.3)]
    sup = SupervisionSegment("s", "r", 0.0, 1.0, text="HELLO WORLD", alignment={"word": ali})
    starts, ends, why, ends_why = reference_word_spans(sup, ["HELLO", "WORLD"])
    assert starts == [0.1, 0.45] and ends == pytest.approx([0.4, 0.75]) and why == ends_why == ""
    zero = SupervisionSegment("s", "r", 0.0, 1.0, text="HELLO",
                              alignment={"word": [AlignmentItem("hello", 0.1, 0.0)]})
    starts, ends, why, ends_why = reference_word_spans(zero, ["HELLO"])
    assert starts == [0.1] and ends is None and why == "" and "duration" in ends_why
    starts, ends, why, ends_why = reference_word_spans(sup, ["HELLO"])
    assert starts is None and ends is None and "does not match" in ends_why


def _record(uid, ref, starts, ends, hyp, avail, ends_why=""):
    return SimpleNamespace(cut_id=uid, ref_words=ref, ref_starts_s=starts, ref_times_reason="",
                           ref_ends_s=ends, ref_ends_reason=ends_why, tokens=[], frames=[],
                           hyp=TimedWords(hyp, list(avail), list(avail)), note="")


def test_score_and_write_new_fields_and_reasons(tmp_path):
    utts = [_record("a", ["AND", "B"], [0.3, 0.6], [0.5, 0.9], ["AND", "B"], [0.2, 1.0]),
            _record("b", ["THE"], [0.2], [0.4], ["THE"], [0.6])]
    m = score_and_write(utts, tmp_path, "t", "s")
    assert m["first_token_share_anticipated"] == 0.5  # a: 0.2 < 0.3; b: 0.6 > 0.2
    assert m["first_token_latency_median_ms"] == pytest.approx(np.percentile([-100, 400], 50))
    assert m["num_word_end_words"] == 3
    assert m["word_end_latency_p50_ms"] == pytest.approx(np.percentile([-300, 100, 200], 50))
    assert m["word_end_latency_p90_ms"] == pytest.approx(np.percentile([-300, 100, 200], 90))
    assert m["latency_reasons"] == []
    line = json.loads((tmp_path / "timings-t-s.jsonl").read_text().splitlines()[0])
    assert line["ref_start_s"] == [0.3, 0.6] and line["ref_end_s"] == [0.5, 0.9]
    # starts without ends (e.g. forced alignment): word-end latency null, both reasons recorded
    why = "forced alignment gives word starts only"
    m = score_and_write([_record("a", ["A"], [0.1], None, ["A"], [0.3], why)], tmp_path, "t", "s")
    assert m["word_end_latency_p50_ms"] is None and m["word_end_latency_p90_ms"] is None
    assert m["num_word_end_words"] == 0 and m["first_token_latency_median_ms"] == pytest.approx(200)
    assert any(why in r for r in m["latency_reasons"])
    assert any(r.startswith("word-end latency:") for r in m["latency_reasons"])
