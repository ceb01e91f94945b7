"""WER, icefall-format files, results.json and the paired bootstrap."""
import json

import numpy as np
import pytest

from asr_kd.metrics.bootstrap import paired_bootstrap, paired_bootstrap_from_recogs
from asr_kd.metrics.results import REQUIRED_FIELDS, RtfMeter, update_results_json
from asr_kd.metrics.wer import (
    align_words,
    corpus_wer,
    read_recogs,
    utterance_errors,
    write_errs,
    write_recogs,
    write_wer_summary,
)

RESULTS = {
    "u2": (["A", "B", "C"], ["A", "X", "C", "D"]),  # 1 sub, 1 ins
    "u1": (["A", "B"], ["B"]),  # 1 del
    "u3": ([], []),
}


def test_counts_and_corpus_wer():
    e = utterance_errors(["A", "B", "C"], ["A", "X", "C", "D"])
    assert (e.ins, e.dels, e.subs, e.ref_len) == (1, 0, 1, 3)
    total = corpus_wer(RESULTS.values())
    assert total.errors == 3 and total.ref_len == 5
    assert total.wer == pytest.approx(60.0)
    assert align_words([], []) == []
    assert utterance_errors([], ["A"]).wer == float("inf")
    with pytest.raises(ValueError):
        align_words(["*"], ["A"])


def test_files_round_trip_and_are_deterministic(tmp_path):
    write_recogs(tmp_path / "recogs-x.txt", RESULTS)
    text = (tmp_path / "recogs-x.txt").read_text()
    assert text.splitlines()[0] == "u1:\tref=['A', 'B']"
    assert text.splitlines()[1] == "u1:\thyp=['B']"
    assert read_recogs(tmp_path / "recogs-x.txt") == {k: RESULTS[k] for k in sorted(RESULTS)}
    total = write_errs(tmp_path / "errs-x.txt", RESULTS)
    errs = (tmp_path / "errs-x.txt").read_text()
    assert errs.startswith("%WER = 60.00\n")
    assert "Errors: 1 insertions, 1 deletions, 1 substitutions, over 5 reference words (3 correct)" in errs
    assert "u2:\tA (B->X) C (*->D)" in errs
    assert "1   B -> X" in errs
    assert total.wer == pytest.approx(60.0)
    write_wer_summary(tmp_path / "wer-summary-x.txt", {"greedy": 60.0, "beam": 50.0})
    assert (tmp_path / "wer-summary-x.txt").read_text() == "settings\tWER\nbeam\t50.00\ngreedy\t60.00\n"
    first = errs
    write_errs(tmp_path / "errs-x.txt", dict(reversed(list(RESULTS.items()))))
    assert (tmp_path / "errs-x.txt").read_text() == first


def test_read_recogs_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        read_recogs(tmp_path / "nope.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("u1:\tref=['A']\n")
    with pytest.raises(ValueError, match="both"):
        read_recogs(bad)


def test_results_json_update(tmp_path):
    row = {k: None for k in REQUIRED_FIELDS}
    row.update(model="m", decoding="greedy", mode="streaming", chunk_ms=320, test_set="test",
               wer=10.0, beam=None, left_context_ms=None)
    path = tmp_path / "results.json"
    update_results_json(path, [row])
    update_results_json(path, [dict(row, wer=9.0), dict(row, chunk_ms=160)])
    rows = json.loads(path.read_text())
    assert [(r["chunk_ms"], r["wer"]) for r in rows] == [(160, 10.0), (320, 9.0)]
    with pytest.raises(ValueError, match="lacks"):
        update_results_json(path, [{"model": "m"}])
    m = RtfMeter()
    with m.timing():
        pass
    m.add_audio(2.0)
    assert 0 <= m.rtf < 0.1


def test_paired_bootstrap():
    rng = np.random.default_rng(0)
    n = 200
    nr = rng.integers(5, 15, size=n)
    ea = rng.binomial(nr, 0.10)
    eb = rng.binomial(nr, 0.20)
    r = paired_bootstrap(ea, eb, nr, num_samples=500, seed=1)
    assert r.diff == pytest.approx(100 * (ea.sum() - eb.sum()) / nr.sum())
    assert r.ci_low < r.diff < r.ci_high < 0  # A clearly better
    assert r.prob_a_better > 0.99
    assert paired_bootstrap(ea, eb, nr, num_samples=500, seed=1) == r  # seeded
    same = paired_bootstrap(ea, ea, nr, num_samples=100)
    assert same.ci_low == same.ci_high == 0.0
    assert "CI" in r.summary("student", "baseline")
    with pytest.raises(ValueError):
        paired_bootstrap([1], [1, 2], [3])
    a = {"u1": (["A", "B"], ["A", "B"]), "u2": (["C"], ["D"])}
    b = {"u1": (["A", "B"], ["A"]), "u2": (["C"], ["C"])}
    rr = paired_bootstrap_from_recogs(a, b, num_samples=50)
    assert rr.wer_a == pytest.approx(100 / 3) and rr.wer_b == pytest.approx(100 / 3)
    with pytest.raises(ValueError, match="different utterances"):
        paired_bootstrap_from_recogs(a, {"u1": b["u1"]})
    with pytest.raises(ValueError, match="references differ"):
        paired_bootstrap_from_recogs(a, {"u1": b["u1"], "u2": (["Z"], [])})
