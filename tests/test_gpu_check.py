"""tools/gpu_check.sh --dry-run runs every part of the GPU check on the CPU with tiny sizes."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_every_part(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_PORT="29547")
    proc = subprocess.run(["bash", "tools/gpu_check.sh", "--dry-run", str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] is True and set(report["seconds"]) == {"parity", "training", "decoding", "ddp"}
    for name in ("smoothed simple loss", "pruned loss", "stage-2 KL (adaptive-power)"):
        assert report["parity"][name]["rel_diff"] == 0.0  # CPU against CPU: the same numbers
    steps = [r for r in report["training"] if "error" not in r]
    assert {r["role"] for r in steps} >= {"teacher", "student"} and all(r["step_s"] > 0 for r in steps)
    assert report["decoding"]["rtf_1_streams"] > 0 and report["ddp"]["loss_finite"]
    md = (tmp_path / "gpu_check.md").read_text()
    assert "## Parity against the CPU" in md and "## Training step" in md


def test_gpu_check_refuses_to_run_without_a_gpu_unless_dry(tmp_path):
    proc = subprocess.run(["bash", "tools/gpu_check.sh", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "gpu_check.json").exists()
