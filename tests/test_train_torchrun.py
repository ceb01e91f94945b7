"""A real ``torchrun`` launch (c10d rendezvous on localhost, gloo, 2 CPU
processes) of ``asr_kd.bin.train`` with the tiny model: both ranks end with
identical parameters, each rank trains on its own share of the batches, only
rank 0 writes checkpoints; ``--resume`` after the launch ends continues the
run, and a resume under another world size stops with an error naming it.

The launched script is asr_kd.bin.train itself, wrapped so that every rank
saves its final parameters and the cut ids it trained on (a checkpoint holds
rank 0's only)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

WRAPPER = """
import os, sys, torch
from asr_kd.train import trainer as T
out = os.environ["RANK_DUMP_DIR"]
seen = []
step = T.Trainer.train_step
def train_step(self, batch, *a, **k):
    seen.extend(batch["cut_ids"])
    return step(self, batch, *a, **k)
fit = T.Trainer.fit
def fit_and_dump(self, *a, **k):
    r = fit(self, *a, **k)
    m = getattr(self.model, "module", self.model)
    torch.save({"model": {n: v.detach().cpu() for n, v in m.state_dict().items()}, "cut_ids": seen},
               os.path.join(out, "rank%s.pt" % os.environ["RANK"]))
    return r
T.Trainer.train_step = train_step
T.Trainer.fit = fit_and_dump
from asr_kd.bin.train import main
sys.exit(main(sys.argv[1:]))
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp: Path, corpus, nproc: int, epochs: int, dump: Path) -> subprocess.CompletedProcess:
    cuts, bpe = corpus
    dump.mkdir(parents=True, exist_ok=True)
    script = tmp / "train_and_dump.py"
    script.write_text(WRAPPER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{_port()}", "--rdzv-id", "test",
           str(script), "--device", "cpu", "--exp-dir", str(tmp / "exp"), "--resume",
           "--cuts-train", str(cuts), "--bpe-model", str(bpe), "--model-size", "tiny", "--num-epochs", str(epochs),
           "--max-duration", "4", "--num-buckets", "2", "--num-workers", "0", "--progress", "false",
           "--avg", "1", "--seed", "3"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), RANK_DUMP_DIR=str(dump))
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_two_cpu_ranks_identical_and_resumable(small_corpus, tmp_path):
    corpus = small_corpus
    proc = _launch(tmp_path, corpus, 2, 1, tmp_path / "run1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0 = torch.load(tmp_path / "run1" / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "run1" / "rank1.pt", weights_only=True)
    assert r0["cut_ids"] and r1["cut_ids"]
    assert not set(r0["cut_ids"]) & set(r1["cut_ids"])  # each rank its own share of the batches
    for k, v in r0["model"].items():
        assert torch.equal(v, r1["model"][k]), k
    exp = tmp_path / "exp"
    assert (exp / "epoch-1.pt").is_file() and (exp / "pretrained.pt").is_file()
    assert sorted(p.name for p in (exp / "log").iterdir()) == ["train-rank0.log", "train-rank1.log"]

    # a restart with --resume and one more epoch continues from epoch 1, still in step
    before = torch.load(exp / "epoch-1.pt", weights_only=False)["model"]
    proc = _launch(tmp_path, corpus, 2, 2, tmp_path / "run2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "resuming from" in proc.stderr and (exp / "epoch-2.pt").is_file()
    a = torch.load(tmp_path / "run2" / "rank0.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "run2" / "rank1.pt", weights_only=True)["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    assert any(not torch.equal(v, before[k]) for k, v in a.items())  # it trained on

    # the same run under another world size: a clear error, nothing rewritten
    mtime = (exp / "epoch-2.pt").stat().st_mtime_ns
    proc = _launch(tmp_path, corpus, 1, 3, tmp_path / "run3")
    assert proc.returncode != 0
    assert "world_size=2" in proc.stderr and "world_size=1" in proc.stderr, proc.stderr[-3000:]
    assert (exp / "epoch-2.pt").stat().st_mtime_ns == mtime and not (exp / "epoch-3.pt").exists()
