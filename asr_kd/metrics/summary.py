"""Experiment summary: ``results.json`` rows -> RESULTS.md tables and a WER/latency plot.

Definitions (per evaluation set, per decoding setting):

* relative WER reduction of a student against the streaming baseline decoded
  the same way (same method, mode and chunk size; a seed replicate
  ``<model>-seed<i>`` against ``baseline-seed<i>``)::

      rel = (WER_baseline - WER_student) / WER_baseline

* gap closure, against the full-context teacher decoded offline with the
  same search method::

      closure = (WER_baseline - WER_student) / (WER_baseline - WER_teacher)

  (undefined -- ``None`` -- when the teacher is not better than the baseline).

A latency that could not be computed is ``None`` in the rows and "–" in the
tables, as is a column whose field a row lacks (rows written before the
field existed). Row fields are those of :mod:`asr_kd.metrics.results`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from asr_kd.atomic import atomic_write_text

__all__ = ["relative_reduction", "gap_closure", "Comparison", "compare_rows", "render_markdown", "plot_wer_latency",
           "MODEL_ORDER"]

#: display order of the recipe's model names (others follow alphabetically)
MODEL_ORDER: Tuple[str, ...] = ("teacher", "baseline", "baseline-cont", "stage1", "stage2", "joint", "temperature",
                                "collapsed", "delay-penalty")

Row = Mapping[str, Any]


def relative_reduction(baseline: float, student: float) -> Optional[float]:
    """(baseline - student) / baseline; None when the baseline WER is 0."""
    if baseline == 0:
        return None
    return (baseline - student) / baseline


def gap_closure(baseline: float, student: float, teacher: float) -> Optional[float]:
    """(baseline - student) / (baseline - teacher); None unless the teacher beats the baseline."""
    if baseline - teacher <= 0:
        return None
    return (baseline - student) / (baseline - teacher)


@dataclass
class Comparison:
    """One row of a RESULTS.md table."""

    row: Row
    rel_reduction: Optional[float]
    closure: Optional[float]


def _model_rank(name: str) -> Tuple[int, str]:
    base = name.split("-seed")[0]
    return (MODEL_ORDER.index(base) if base in MODEL_ORDER else len(MODEL_ORDER), name)


def _setting(row: Row) -> Tuple[Any, ...]:
    return (row["decoding"], row.get("beam"), row["mode"], row.get("chunk_ms"))


def compare_rows(rows: Sequence[Row], test_set: str, baseline: str = "baseline",
                 teacher: str = "teacher") -> List[Comparison]:
    """The rows of ``test_set`` in display order, each with its reduction and gap closure."""
    mine = [r for r in rows if r["test_set"] == test_set]
    # a seed replicate (stage2-seed2) is compared with the baseline of the same seed (baseline-seed2)
    base_by_setting = {(r["model"], _setting(r)): r for r in mine
                       if r["model"] == baseline or r["model"].startswith(f"{baseline}-seed")}
    teacher_by_method = {(r["decoding"], r.get("beam")): r for r in mine
                         if r["model"] == teacher and r["mode"] == "offline"}
    out = []
    for r in sorted(mine, key=lambda r: (_model_rank(r["model"]), str(_setting(r)))):
        rel = clo = None
        seed = r["model"].partition("-seed")[2]
        ref_name = f"{baseline}-seed{seed}" if seed else baseline
        b = base_by_setting.get((ref_name, _setting(r)))
        t = teacher_by_method.get((r["decoding"], r.get("beam")))
        if b is not None and r["model"] not in (ref_name, teacher):
            rel = relative_reduction(b["wer"], r["wer"])
            if t is not None:
                clo = gap_closure(b["wer"], r["wer"], t["wer"])
        out.append(Comparison(r, rel, clo))
    return out


def _fmt(x: Any, nd: int = 1, pct: bool = False) -> str:
    if x is None:
        return "–"
    if pct:
        return f"{100 * x:+.1f}%"
    return f"{x:.{nd}f}"


def _share(x: Optional[float]) -> str:
    """A share in [0, 1] as a whole percentage ("–" when None)."""
    return "–" if x is None else f"{100 * x:.0f}%"


def _pair(a: Optional[float], b: Optional[float]) -> str:
    """Two latencies in one cell, "a / b" ("–" when both are None)."""
    return "–" if a is None and b is None else f"{_fmt(a, 0)} / {_fmt(b, 0)}"


def _setting_label(row: Row) -> str:
    s = row["decoding"] if row["decoding"] == "greedy" else f"beam{row.get('beam')}"
    s += f", {row['mode']}"
    if row.get("chunk_ms") is not None:
        s += f" {row['chunk_ms']} ms"
    return s


def render_markdown(rows: Sequence[Row], test_sets: Sequence[str], title: str = "Results",
                    header_lines: Iterable[str] = (), bootstrap: Optional[Mapping[str, str]] = None,
                    extra_lines: Iterable[str] = ()) -> str:
    """RESULTS.md: one table per evaluation set (WER, rel. reduction, closure, latencies, shares, RTF).

    ``extra_lines``: markdown appended at the end (e.g. ``asr_kd.metrics.train_stats.render_kd_section``).
    """
    lines = [f"# {title}", ""]
    lines += list(header_lines)
    lines += [
        "",
        "WER in %. *rel.* = relative WER reduction (baseline − student) / baseline, against the baseline "
        "row decoded the same way (same search, same mode -- simulated or true streaming -- and chunk); "
        "*closure* = (baseline − student) / (baseline − teacher) with the teacher decoded offline (full "
        "context) with the same search (greedy or beam). First-token latency (FTL) = availability time of the first hypothesis word − reference "
        "start of the first reference word, over utterances whose first word is recognised (*qual.* = "
        "their share); *FTL median* is the median of the same per-utterance values. "
        "antic. = share of qualifying utterances whose first word was available before it was spoken; "
        "a negative FTL comes from these, so judge first-token speed on the median and on antic. "
        "Symbol delay = mean(hypothesis word emission time − reference word start) over "
        "correct words; *avail.* uses availability time. *Word-end P50 / P90* = median and 90th "
        "percentile of (hypothesis word availability time − reference word end) over correct words, "
        "pooled over utterances: how long after a word has been fully spoken it is shown. "
        "RTF at the stated threads.",
        "",
    ]
    for ts in test_sets:
        comps = compare_rows(rows, ts)
        if not comps:
            continue
        lines += [f"## {ts}", "",
                  "| model | decoding | WER | rel. | closure | FTL mean ms | FTL median ms | FTL P90 ms | qual. "
                  "| antic. | symbol delay ms | avail. delay ms | word-end P50 / P90 ms | RTF (threads) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in comps:
            r = c.row
            # .get throughout: rows from older results.json files lack the newer fields
            lines.append(
                f"| {r['model']} | {_setting_label(r)} | {_fmt(r['wer'], 2)} | {_fmt(c.rel_reduction, pct=True)} | "
                f"{_fmt(c.closure, 2)} | {_fmt(r.get('first_token_latency_ms'), 0)} | "
                f"{_fmt(r.get('first_token_latency_median_ms'), 0)} | "
                f"{_fmt(r.get('first_token_latency_p90_ms'), 0)} | {_share(r.get('first_token_share_qualifying'))} | "
                f"{_share(r.get('first_token_share_anticipated'))} | {_fmt(r.get('mean_symbol_delay_ms'), 0)} | "
                f"{_fmt(r.get('mean_availability_delay_ms'), 0)} | "
                f"{_pair(r.get('word_end_latency_p50_ms'), r.get('word_end_latency_p90_ms'))} | "
                f"{_fmt(r.get('rtf'), 3)} ({r.get('num_threads')}) |")
        lines.append("")
    if bootstrap:
        lines += ["## Paired bootstrap (95% interval of the WER difference)", ""]
        lines += [f"- {k}: " + v.replace("\n", "; ") for k, v in bootstrap.items()]
        lines.append("")
    lines += list(extra_lines)
    return "\n".join(lines)


def plot_wer_latency(rows: Sequence[Row], test_sets: Sequence[str], out_png: Union[str, Path]) -> Path:
    """One panel per set: WER (y) against mean first-token latency (x), a point per model and setting.

    Rows without a first-token latency (no utterance had its first word
    recognised) cannot be placed; each panel names how many were left out, so
    an empty panel still says why it is empty. The PNG is always written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [ts for ts in test_sets if any(r["test_set"] == ts for r in rows)] or list(test_sets[:1])
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4.5), squeeze=False)
    markers = {"greedy": "o", "modified_beam_search": "s"}
    models = sorted({r["model"] for r in rows}, key=_model_rank)
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    for ax, ts in zip(axes[0], sets):
        left_out = 0
        for r in rows:
            if r["test_set"] != ts:
                continue
            # the median: a few first words shown before they are spoken (anticipation on a
            # predictable task) pull the mean down; rows from before the median existed use the mean
            x = r.get("first_token_latency_median_ms", r.get("first_token_latency_ms"))
            if x is None:
                left_out += 1
                continue
            hollow = r["mode"] == "simulated-streaming"
            ax.scatter(x, r["wer"], marker=markers.get(r["decoding"], "^"),
                       facecolors="none" if hollow else colours[r["model"]], edgecolors=colours[r["model"]], s=50)
            ax.annotate(r["model"], (x, r["wer"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if left_out:
            ax.text(0.02, 0.02, f"{left_out} row(s) without a first-token latency not shown",
                    transform=ax.transAxes, fontsize=7, color="grey")
        ax.set_title(ts)
        ax.set_xlabel("median first-token latency (ms)")
        ax.set_ylabel("WER (%)")
        ax.grid(alpha=0.3)
    fig.suptitle("WER against first-token latency (circle greedy, square beam; hollow = simulated streaming)",
                 fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    # savefig to a temporary name, then rename: a killed run never leaves half a PNG
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(out_png)
    return out_png


def write_summary(rows: Sequence[Row], test_sets: Sequence[str], out_md: Union[str, Path],
                  out_png: Union[str, Path], header_lines: Iterable[str] = (),
                  bootstrap: Optional[Dict[str, str]] = None, extra_lines: Iterable[str] = ()) -> Tuple[Path, Path]:
    """Write RESULTS.md (atomically) and the plot; returns their paths (``extra_lines``: see render_markdown)."""
    png = plot_wer_latency(rows, test_sets, out_png)
    header = list(header_lines)
    header.append(f"\n![WER against first-token latency]({Path(png).name})")
    md = render_markdown(rows, test_sets, header_lines=header, bootstrap=bootstrap, extra_lines=extra_lines)
    return atomic_write_text(out_md, md + "\n"), png
