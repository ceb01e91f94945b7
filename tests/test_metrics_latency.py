"""Word times, first-token latency and mean symbol delay, checked by hand."""
import pytest
from lhotse import SupervisionSegment
from lhotse.supervision import AlignmentItem

from asr_kd.metrics.latency import (
    TimedWords,
    UtteranceTiming,
    first_token_latency,
    mean_symbol_delay,
    reference_word_times,
    tokens_to_words,
)

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


def _utt(uid, ref, starts, hyp, emis, avail):
    return UtteranceTiming(uid, ref, starts, TimedWords(hyp, emis, avail))


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
    assert ftl.p90_ms == pytest.approx(100 + 0.9 * 300)
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
