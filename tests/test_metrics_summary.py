"""RESULTS.md math and rendering: relative reduction, gap closure, null latencies, plot."""
from __future__ import annotations

import pytest

from asr_kd.metrics.summary import compare_rows, gap_closure, relative_reduction, render_markdown, write_summary


def _row(model: str, wer: float, mode: str = "streaming", decoding: str = "greedy", test_set: str = "test",
         ftl=None, chunk=640) -> dict:
    return dict(model=model, decoding=decoding, beam=None if decoding == "greedy" else 4, mode=mode,
                chunk_ms=None if mode == "offline" else chunk, test_set=test_set, wer=wer,
                first_token_latency_ms=ftl, first_token_latency_p90_ms=None if ftl is None else ftl + 100,
                mean_symbol_delay_ms=None, mean_availability_delay_ms=None, rtf=0.01, num_threads=1,
                first_token_share_qualifying=None if ftl is None else 0.8)


def test_formulas() -> None:
    assert relative_reduction(20.0, 15.0) == pytest.approx(0.25)
    assert relative_reduction(0.0, 1.0) is None
    assert gap_closure(20.0, 15.0, 10.0) == pytest.approx(0.5)
    assert gap_closure(20.0, 25.0, 10.0) == pytest.approx(-0.5)
    assert gap_closure(10.0, 9.0, 12.0) is None  # teacher not better: undefined


def test_compare_rows_matches_settings() -> None:
    rows = [
        _row("teacher", 10.0, mode="offline"),
        _row("baseline", 20.0), _row("baseline", 22.0, mode="simulated-streaming"),
        _row("stage2", 15.0), _row("stage2", 16.5, mode="simulated-streaming"),
        _row("teacher", 9.0, mode="offline", decoding="modified_beam_search"),
        _row("baseline", 19.0, decoding="modified_beam_search"),
        _row("stage2", 14.0, decoding="modified_beam_search"),
        _row("stage2", 1.0, test_set="dev"),
    ]
    comps = {(c.row["model"], c.row["mode"], c.row["decoding"]): c for c in compare_rows(rows, "test")}
    assert len(comps) == 8
    c = comps[("stage2", "streaming", "greedy")]
    assert c.rel_reduction == pytest.approx(0.25) and c.closure == pytest.approx(0.5)
    c = comps[("stage2", "simulated-streaming", "greedy")]
    assert c.rel_reduction == pytest.approx(0.25) and c.closure == pytest.approx(5.5 / 12)
    c = comps[("stage2", "streaming", "modified_beam_search")]
    assert c.rel_reduction == pytest.approx(5 / 19) and c.closure == pytest.approx(0.5)
    assert comps[("baseline", "streaming", "greedy")].rel_reduction is None
    assert [c.row["model"] for c in compare_rows(rows, "test")][:1] == ["teacher"]


def test_render_and_write_with_null_latencies(tmp_path) -> None:
    rows = [_row("teacher", 10.0, mode="offline", ftl=900.0), _row("baseline", 20.0), _row("stage2", 15.0, ftl=700.0)]
    md = render_markdown(rows, ["test", "missing"], header_lines=["preset: x"])
    assert "## test" in md and "## missing" not in md and "preset: x" in md
    line = next(x for x in md.splitlines() if x.startswith("| baseline |"))
    assert "| – |" in line  # null latency shown as a dash
    line = next(x for x in md.splitlines() if x.startswith("| stage2 |"))
    assert "+25.0%" in line and "| 0.50 |" in line and "| 700 |" in line and "80%" in line
    out_md, png = write_summary(rows, ["test"], tmp_path / "R.md", tmp_path / "p.png",
                                bootstrap={"stage2 vs baseline": "A\nB"})
    assert out_md.read_text().count("- stage2 vs baseline: A; B") == 1
    assert png.stat().st_size > 1000
    _, png2 = write_summary([_row("baseline", 20.0)], ["test"], tmp_path / "R2.md", tmp_path / "p2.png")
    assert png2.stat().st_size > 1000  # "no latency" figure


def test_render_new_latency_columns_and_old_rows() -> None:
    new = _row("stage2", 15.0, ftl=-176.0)
    new.update(first_token_latency_median_ms=42.4, first_token_share_anticipated=0.371,
               word_end_latency_p50_ms=180.2, word_end_latency_p90_ms=455.0)
    old = _row("baseline", 20.0, ftl=300.0)  # a results.json row written before the new fields existed
    md = render_markdown([old, new], ["test"])
    header = next(x for x in md.splitlines() if x.startswith("| model |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[5:13] == ["FTL mean ms", "FTL median ms", "FTL P90 ms", "qual.", "antic.", "symbol delay ms",
                          "avail. delay ms", "word-end P50 / P90 ms"]
    sep = next(x for x in md.splitlines() if x.startswith("|---"))
    assert sep.count("---") == len(cols)

    def cells(model: str) -> list:
        line = next(x for x in md.splitlines() if x.startswith(f"| {model} |"))
        return dict(zip(cols, [c.strip() for c in line.strip("|").split("|")]))

    c = cells("stage2")
    assert (c["FTL mean ms"], c["FTL median ms"], c["FTL P90 ms"]) == ("-176", "42", "-76")
    assert (c["qual."], c["antic."], c["word-end P50 / P90 ms"]) == ("80%", "37%", "180 / 455")
    c = cells("baseline")
    assert c["FTL mean ms"] == "300" and c["qual."] == "80%"
    assert c["FTL median ms"] == c["antic."] == c["word-end P50 / P90 ms"] == "–"
    assert "antic. = share of qualifying utterances whose first word was available before it was spoken" in md
