"""Every ``python -m asr_kd.bin.<tool>`` ends a user error the same way: one line, exit status 2.

Each tool runs as a real process (its ``__main__``), given a file that does
not exist; stderr must hold exactly one line, ``<tool>: error: ...`` naming
the missing file, and nothing else (no traceback, no second copy through a
log handler). Training also writes the line to its run log.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CASES = {
    "decode": ["--checkpoint", "nope.pt", "--cuts", "nope.jsonl.gz", "--out-dir", "d"],
    "export_onnx": ["--checkpoint", "nope.pt", "--out-dir", "d"],
    "train": ["--cuts-train", "nope.jsonl.gz", "--cuts-valid", "nope.jsonl.gz", "--bpe-model", "nope.model",
              "--exp-dir", "d"],
    "average": ["--checkpoints", "nope.pt", "--out", "o.pt"],
    "compare": ["nope.txt", "nope2.txt"],
    "results": ["--results-json", "nope.json", "--out-md", "o.md", "--out-png", "o.png", "--test-sets", "dev"],
    "compute_fbank": ["--cuts", "nope.jsonl.gz", "--out-cuts", "o.jsonl.gz", "--storage", "s"],
    "train_bpe": ["--transcripts", "nope.txt", "--out-dir", "d", "--vocab-size", "20"],
    "cache_teacher": ["--teacher-checkpoint", "nope.pt", "--cuts", "nope.jsonl.gz", "--out-dir", "d"],
}


@pytest.mark.parametrize("tool", sorted(CASES))
def test_user_error_is_one_line_and_status_2(tool: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", f"asr_kd.bin.{tool}", *CASES[tool]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    # training logs its start (INFO) to stderr before it reads its inputs: only the error lines count
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(f"{tool}: error: ") and "nope" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    if tool == "train":
        log = (tmp_path / "d" / "log" / "train-rank0.log").read_text()
        assert errors[0].removeprefix("train: error: ") in log
