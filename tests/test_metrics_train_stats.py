"""train_stats.json (per-epoch means of a run) and the "Stage-2 smoothing statistics" of RESULTS.md."""
from __future__ import annotations

import json
import math
from pathlib import Path

from asr_kd.metrics.train_stats import (
    STATS_FILE,
    read_train_stats,
    render_kd_section,
    summarize_kd_runs,
    update_train_stats,
)


def _kd(loss: float, hb: float, ha: float, alpha: float, at_min: float, cov: float) -> dict:
    return {"loss": loss + 1.0, "kd_output_loss": loss, "kd_teacher_entropy": hb, "kd_teacher_entropy_smoothed": ha,
            "kd_alpha_mean": alpha, "kd_alpha_min_share": at_min, "kd_smoothed_share": 0.5, "kd_coverage": cov}


def _write_run(d: Path, stage: str, epochs: dict, smoothing: str = "adaptive-power", target: float = 0.5) -> None:
    args = {"kd_stage": stage, "kd_smoothing": smoothing, "kd_target_entropy": target, "kd_alpha_min": 0.1,
            "kd_temperature": 2.0, "lr": 1e-3, "seed": 1}
    for e, train in epochs.items():
        update_train_stats(d, e, train, {"loss": 2.0}, run_id="r1", args=args, frames=100.0, batch_idx_train=10 * e)


def _results(tmp_path: Path) -> Path:
    rows = [dict(model=m, decoding="greedy", beam=None, mode="offline", chunk_ms=None, test_set="test", wer=w,
                 first_token_latency_ms=None, first_token_latency_p90_ms=None, mean_symbol_delay_ms=None,
                 mean_availability_delay_ms=None, rtf=0.1, num_threads=1) for m, w in (("teacher", 10.0),
                                                                                      ("stage2", 20.0))]
    p = tmp_path / "results.json"
    p.write_text(json.dumps(rows))
    return p


def test_update_replaces_epochs_and_other_runs(tmp_path) -> None:
    d = tmp_path / "run"
    update_train_stats(d, 2, {"loss": 1.0, "x": math.nan}, None, run_id="a", args={"kd_stage": "output", "lr": 1})
    update_train_stats(d, 1, {"loss": 3.0}, {"loss": 4.0}, run_id="a")
    update_train_stats(d, 2, {"loss": 0.5}, None, run_id="a")
    data = read_train_stats(d)
    assert list(data["epochs"]) == ["1", "2"] and data["epochs"]["2"]["train"] == {"loss": 0.5}
    assert data["args"] == {"kd_stage": "output"}  # only kd_* and a few run flags are kept
    update_train_stats(d, 1, {"loss": 9.0}, None, run_id="b")  # another run: replaced, not extended
    assert list(read_train_stats(d)["epochs"]) == ["1"] and read_train_stats(d)["run_id"] == "b"
    json.loads((d / STATS_FILE).read_text())  # strict JSON: NaN written as null
    assert "NaN" not in (d / STATS_FILE).read_text()


def test_summary_picks_output_kd_runs_only(tmp_path) -> None:
    _write_run(tmp_path / "stage2", "output", {3: _kd(2.0, 0.10, 0.52, 0.40, 0.05, 0.90),
                                               5: _kd(1.0, 0.08, 0.51, 0.35, 0.10, 0.95)})
    _write_run(tmp_path / "stage1", "hidden", {1: {"loss": 1.0, "kd_hidden_loss": 0.3}})
    _write_run(tmp_path / "joint", "joint", {1: _kd(3.0, 0.7, 0.705, 1.0, 0.0, 0.8)})
    (tmp_path / "baseline").mkdir()
    summaries = summarize_kd_runs(tmp_path)
    assert [s.model for s in summaries] == ["stage2", "joint"]  # recipe order; stage 1 and baseline left out
    s2, joint = summaries
    assert (s2.first_epoch, s2.last_epoch, s2.num_epochs) == (3, 5, 3)
    assert s2.engaged and abs(s2.entropy_change - 0.43) < 1e-9
    assert joint.engaged is False
    md = "\n".join(render_kd_section(summaries))
    assert "## Stage-2 smoothing statistics" in md
    row = next(x for x in md.splitlines() if x.startswith("| stage2 |"))
    assert "| output | adaptive-power | 3–5 | 2.000 → 1.000 | 0.100 → 0.080 | 0.520 → 0.510 | 0.50 |" in row
    assert "| 0.400 → 0.350 | 5.0% → 10.0% | 0.900 → 0.950 |" in row
    assert "**stage2** (epoch 5): smoothing raised the teacher's mean entropy by 0.430 nats" in md
    assert "10.0% of nodes held at α_min = 0.10" in md
    row = next(x for x in md.splitlines() if x.startswith("| joint |"))
    assert "| 1 | 3.000 |" in row  # one epoch: no arrow
    assert "changed the teacher's mean entropy by +0.005 nats (< 0.01 nats" in md
    assert "at this target (0.50 nats): it did not engage (mean α = 1.000" in md


def test_results_cli_section_and_side_json(tmp_path) -> None:
    from asr_kd.bin.results import main

    exp = tmp_path / "exp"
    _write_run(exp / "stage2", "output", {1: _kd(1.5, 0.2, 0.6, 0.5, 0.0, 0.9),
                                          2: _kd(1.2, 0.1, 0.55, 0.45, 0.02, 0.93)})
    _write_run(exp / "temperature", "output", {1: _kd(0.9, 0.2, 1.4, 0.5, 0.0, 0.9)}, smoothing="temperature")
    argv = ["--results-json", str(_results(tmp_path)), "--test-sets", "test", "--out-md", str(exp / "RESULTS.md"),
            "--out-png", str(exp / "p.png"), "--exp-dir", str(exp)]
    assert main(argv) == 0
    md = (exp / "RESULTS.md").read_text()
    assert md.index("## test") < md.index("## Stage-2 smoothing statistics")
    assert "| temperature | output | temperature | 1 |" in md and "τ = 2.00" in md
    assert "temperature smoothing raised" in md
    recs = json.loads((exp / "kd_stats.json").read_text())
    assert [r["model"] for r in recs] == ["stage2", "temperature"]
    r = recs[0]
    assert r["first_epoch"] == 1 and r["last_epoch"] == 2 and r["engaged"] is True
    assert r["last"]["kd_coverage"] == 0.93 and r["target_entropy"] == 0.5 and "**" not in r["sentence"]


def test_results_cli_omits_section_without_kd_models(tmp_path) -> None:
    from asr_kd.bin.results import main

    exp = tmp_path / "exp"
    update_train_stats(exp / "baseline", 1, {"loss": 1.0}, None, run_id="x", args={"kd_stage": None})
    out = tmp_path / "side.json"
    argv = ["--results-json", str(_results(tmp_path)), "--test-sets", "test", "--out-md", str(tmp_path / "R.md"),
            "--out-png", str(tmp_path / "p.png"), "--exp-dir", str(exp), "--kd-stats-json", str(out)]
    assert main(argv) == 0
    assert "smoothing statistics" not in (tmp_path / "R.md").read_text()
    assert json.loads(out.read_text()) == []
    # without --exp-dir: no section, no side file; --kd-stats-json alone is an error
    assert main(argv[:-4]) == 0 and "smoothing" not in (tmp_path / "R.md").read_text()
    assert main(argv[:-4] + ["--kd-stats-json", str(out)]) == 2
