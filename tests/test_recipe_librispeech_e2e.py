"""End to end: ``bash egs/librispeech/ASR/run.sh --corpus-dir DIR --preset micro``
runs every stage (0-9) on a small corpus the test writes in LibriSpeech's exact
layout, and a rerun skips every stage.

The corpus: ``<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` and
``<speaker>-<chapter>.trans.txt`` for train-clean-100, dev-clean, test-clean and
test-other (a few dozen espeak-ng utterances at 16 kHz), plus
``<speaker>-<chapter>.alignment.txt`` word alignments (in the format of the public
LibriSpeech alignments) for test-clean only, under a separate --alignments-dir.
So test-clean's latency comes from the given alignments and the other sets' from
forced alignment with the teacher (decode_align=teacher in conf/micro.conf).

Selected and deselected with the other recipe tests by name (``-k e2e``,
``-k "not e2e"``). Needs espeak-ng and sox; takes about 3-4 minutes on 2 cores.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[1] / "egs" / "librispeech" / "ASR"
WORDS = ("THE QUICK BROWN FOX JUMPS OVER A LAZY DOG SHE SELLS SEA SHELLS BY SHORE "
         "WE WALKED HOME AFTER RAIN IT WAS COLD AND DARK BUT STARS WERE BRIGHT").split()
SUBSETS = {"train-clean-100": ((19, 198), (26, 495)), "dev-clean": ((84, 121),), "test-clean": ((1089, 134),),
           "test-other": ((1688, 142),)}
PER_CHAPTER = {"train-clean-100": 8, "dev-clean": 6, "test-clean": 6, "test-other": 6}

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                                reason="espeak-ng and sox are needed to write the test corpus")


def _say(text: str, flac: Path, voice: str) -> float:
    wav = flac.with_suffix(".wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", "170", "-w", str(wav), text], check=True, capture_output=True)
    subprocess.run(["sox", str(wav), "-r", "16000", "-c", "1", str(flac)], check=True, capture_output=True)
    wav.unlink()
    out = subprocess.run(["soxi", "-D", str(flac)], check=True, capture_output=True, text=True)
    return float(out.stdout)


def write_corpus(root: Path, ali_root: Path) -> None:
    rng = random.Random(3)
    for subset, chapters in SUBSETS.items():
        for spk, chap in chapters:
            d = root / subset / str(spk) / str(chap)
            d.mkdir(parents=True)
            trans, ali = [], []
            voice = "en-us" if spk % 2 else "en"
            for u in range(PER_CHAPTER[subset]):
                utt = f"{spk}-{chap}-{u:04d}"
                words = [rng.choice(WORDS) for _ in range(rng.randint(3, 6))]
                dur = _say(" ".join(words), d / f"{utt}.flac", voice)
                trans.append(f"{utt} {' '.join(words)}")
                # public alignment format: ",W1,W2," with '' = silence, and the end time of each item
                step = (dur - 0.2) / len(words)
                ends = [0.1] + [round(0.1 + step * (k + 1), 3) for k in range(len(words))] + [round(dur, 3)]
                ali.append(f'{utt} ",{",".join(words)}," "{",".join(f"{e:.3f}" for e in ends)}"')
            (d / f"{spk}-{chap}.trans.txt").write_text("\n".join(trans) + "\n")
            if subset == "test-clean":
                a = ali_root / subset / str(spk) / str(chap)
                a.mkdir(parents=True)
                (a / f"{spk}-{chap}.alignment.txt").write_text("\n".join(ali) + "\n")


def _run(corpus: Path, ali: Path, data: Path, exp: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHON=sys.executable)
    cmd = ["bash", str(RECIPE / "run.sh"), "--corpus-dir", str(corpus), "--alignments-dir", str(ali),
           "--preset", "micro", "--skip-setup", "true", "--data-dir", str(data), "--exp-dir", str(exp),
           "--num-jobs", "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"run.sh failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_librispeech_recipe_micro_end_to_end(tmp_path: Path):
    corpus, ali, data, exp = (tmp_path / n for n in ("LibriSpeech", "alignments", "data", "exp"))
    write_corpus(corpus, ali)
    _run(corpus, ali, data, exp)

    from lhotse import load_manifest_lazy

    n_train = len(SUBSETS["train-clean-100"]) * PER_CHAPTER["train-clean-100"]
    train = list(load_manifest_lazy(data / "fbank" / "cuts_train.jsonl.gz"))
    assert len(train) == 3 * n_train  # speed perturbation 0.9 and 1.1: precomputed copies
    assert all(c.has_features for c in train)
    clean = next(iter(load_manifest_lazy(data / "fbank" / "cuts_test-clean.jsonl.gz")))
    words = clean.supervisions[0].alignment["word"]
    assert [w.symbol for w in words] == clean.supervisions[0].text.split()  # silences dropped
    other = next(iter(load_manifest_lazy(data / "fbank" / "cuts_test-other.jsonl.gz")))
    assert not other.supervisions[0].alignment

    for name in ("teacher", "baseline", "stage1", "stage2"):
        assert (exp / name / "pretrained.pt").is_file(), name
    rows = json.loads((exp / "results.json").read_text())
    got = {(r["model"], r["test_set"], r["decoding"], r["mode"], r["chunk_ms"]) for r in rows}
    for s in ("test-clean", "test-other"):
        assert ("teacher", s, "modified_beam_search", "offline", None) in got, s
        for ms in (320, 640):
            assert ("stage2", s, "greedy", "streaming", ms) in got, (s, ms)
            assert ("baseline", s, "modified_beam_search", "streaming", ms) in got, (s, ms)
    # reference word times: the alignment files where given, else forced alignment with the teacher
    refs = {(r["test_set"], r["ref_times"]) for r in rows}
    assert refs == {("test-clean", "corpus"), ("test-other", "forced-alignment:pretrained.pt"),
                    ("dev-clean", "forced-alignment:pretrained.pt"),
                    ("train_subset", "forced-alignment:pretrained.pt")}, refs  # the teacher's learning check
    md = (exp / "RESULTS.md").read_text()
    assert "## test-clean" in md and "## test-other" in md and "model-aligned" in md
    assert (exp / "wer_vs_latency.png").read_bytes()[:4] == b"\x89PNG"

    before = {p: p.stat().st_mtime_ns for p in exp.rglob("*") if p.is_file()}
    t0 = time.monotonic()
    proc = _run(corpus, ali, data, exp)
    log = proc.stdout + proc.stderr
    assert "training" not in log and "decoding" not in log, log[-3000:]
    assert "stage 0: manifests already prepared" in log and "up to date" in log
    assert {p: p.stat().st_mtime_ns for p in exp.rglob("*") if p.is_file()} == before
    assert time.monotonic() - t0 < 60
