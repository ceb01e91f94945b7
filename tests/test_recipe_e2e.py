"""End to end: ``bash egs/synth/ASR/run.sh --preset micro`` runs every stage (0-9)
on a few dozen synthetic utterances into a temporary directory, and a rerun
skips every stage.

This is the recipe's own code path (the same run.sh, the same entry points),
only smaller: conf/micro.conf (30 train utterances, 6 per evaluation set, the
tiny model, 1-2 epochs). The models learn nothing in that budget; the test
checks that every stage produces its outputs and that the markers work.

Needs the Debian TTS tools of stage 0 (espeak-ng, flite, sox); without them it
is skipped with that reason, as in tests/test_synth_corpus.py. Takes about
3-4 minutes on 2 shared cores.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest

RECIPE = Path(__file__).resolve().parents[1] / "egs" / "synth" / "ASR"
sys.path.insert(0, str(RECIPE / "local"))

EVAL_SETS = ("dev", "test_seen", "test_heldout")
TEST_SETS = ("test_seen", "test_heldout")
ROW_KEYS = ("model", "decoding", "mode", "chunk_ms", "test_set", "wer", "first_token_latency_ms",
            "first_token_latency_p90_ms", "mean_symbol_delay_ms", "mean_availability_delay_ms", "rtf",
            "num_threads")


def _tts_missing() -> str:
    from synth_engines import engines_available

    have = engines_available()
    missing = [n for n in ("espeak", "flite") if not have[n]]
    if shutil.which("sox") is None:
        missing.append("sox")
    return ", ".join(missing)


_MISSING = _tts_missing()
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"Debian TTS tools missing: {_MISSING} "
                                "(apt-get install sox espeak-ng flite); stage 0 cannot synthesise the corpus")


def _conf_value(preset: str, name: str) -> str:
    """A variable of conf/<preset>.conf as bash sees it (the conf is a bash file)."""
    out = subprocess.run(["bash", "-c", f'. "conf/{preset}.conf"; echo "${{{name}:-}}"'], cwd=RECIPE,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _run(data: Path, exp: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHON=sys.executable)
    cmd = ["bash", "run.sh", "--preset", "micro", "--skip-setup", "true", "--data-dir", str(data),
           "--exp-dir", str(exp), "--num-jobs", "2"]
    proc = subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"run.sh failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_recipe_micro_end_to_end(tmp_path: Path):
    data, exp = tmp_path / "data", tmp_path / "exp"
    _run(data, exp)

    # stages 0-2: corpus, manifests with features and word alignments, BPE model
    for part in ("train",) + EVAL_SETS:
        cuts_path = data / "fbank" / f"cuts_{part}.jsonl.gz"
        assert cuts_path.is_file(), cuts_path
    from lhotse import load_manifest_lazy

    cut = next(iter(load_manifest_lazy(data / "fbank" / "cuts_test_seen.jsonl.gz")))
    assert cut.has_features and cut.supervisions[0].text
    assert cut.supervisions[0].alignment and cut.supervisions[0].alignment.get("word")
    from asr_kd.data.tokenizer import Tokenizer

    bpe = next(data.glob("lang_bpe_*/bpe.model"))
    tok = Tokenizer(bpe)
    assert tok.blank_id == 0 and tok.vocab_size == int(_conf_value("micro", "bpe_vocab"))

    # stages 3-7: one averaged model per name
    students: List[str] = ["baseline", "stage1", "stage2"] + (_conf_value("micro", "ablations") + " "
                                                               + _conf_value("micro", "controls")).split()
    for name in ["teacher"] + students:
        assert (exp / name / "pretrained.pt").is_file(), name

    # stage 8: every model, every set, the required decodings, all in one results.json
    rows = json.loads((exp / "results.json").read_text())
    for row in rows:
        missing = [k for k in ROW_KEYS if k not in row]
        assert not missing, (row["model"], missing)
    have: Dict[str, set] = {}
    for r in rows:
        have.setdefault(r["model"], set()).add((r["test_set"], r["decoding"], r["mode"]))
    assert set(have) == {"teacher", *students}
    assert ("train_subset", "greedy", "offline") in have["teacher"]  # the learning sanity row
    for s in EVAL_SETS:
        assert (s, "greedy", "offline") in have["teacher"]
        for name in students:
            assert {(s, "greedy", "simulated-streaming"), (s, "greedy", "streaming")} <= have[name], name
    for name, got in have.items():  # beam search on the test sets only
        beam_sets = {s for s, d, _ in got if d == "modified_beam_search"}
        assert beam_sets == set(TEST_SETS), (name, beam_sets)

    # training learnt something: the baseline's training loss fell from its first epoch to its last
    stats = json.loads((exp / "baseline" / "train_stats.json").read_text())["epochs"]
    first, last = stats[min(stats, key=int)]["train"]["loss"], stats[max(stats, key=int)]["train"]["loss"]
    assert len(stats) >= 2 and last < first, (first, last)
    # stage 2 continued stage 1's run (schedule, optimiser state): its epochs follow stage 1's
    s1 = int(_conf_value("micro", "stage1_epochs"))
    assert (exp / "stage2" / f"epoch-{s1 + 1}.pt").is_file()

    # stage 9: the summary, the plot and the paired bootstrap
    md = (exp / "RESULTS.md").read_text()
    for s in EVAL_SETS:
        assert f"## {s}" in md
    assert "| stage2 |" in md and "Paired bootstrap" in md and "stage2 vs baseline" in md
    assert (exp / "wer_vs_latency.png").read_bytes()[:4] == b"\x89PNG"

    # a rerun finds every marker and redoes nothing
    before = {p: p.stat().st_mtime_ns for p in exp.rglob("*") if p.is_file()}
    t0 = time.monotonic()
    proc = _run(data, exp)
    took = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    assert "training" not in log and "decoding" not in log and "synthesising" not in log, log[-3000:]
    for n in (0, 1, 2):
        assert f"stage {n}: " in log and "already" in log
    assert "stage 9: " in log and "up to date" in log
    after = {p: p.stat().st_mtime_ns for p in exp.rglob("*") if p.is_file()}
    assert after == before
    assert took < 60, f"a rerun that does nothing took {took:.0f} s"
