"""DDP (gloo, CPU): 2 ranks == 1 process on the union of their batches; torchrun CLI smoke run.

The union test uses fixed hand-made batches (float64, dropout 0) so the
batches of each rank and their union are under control.  Rank r trains on
``batches[r][k]`` at step k; the single process on ``union(batches[0][k],
batches[1][k])``.  Because the loop rescales each rank's loss by
``frames_r * W / sum(frames)``, DDP's gradient mean equals the single
process's ``sum / frames`` gradient even though the ranks hold different
numbers of frames.  Step 2 has a NaN on rank 1 only: both ranks (and the
single process) must skip it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from asr_kd.models.checkpoint import load_checkpoint

V = 12
STEPS = 4
NAN_STEP = 2


def _batch(gen: torch.Generator, lens: list[int], ntok: list[int]) -> dict:
    t = max(lens)
    feats = torch.randn(len(lens), t, 80, generator=gen, dtype=torch.float64)
    for i, n in enumerate(lens):
        feats[i, n:] = 0.0
    tokens = [torch.randint(1, V, (k,), generator=gen).tolist() for k in ntok]
    return {"features": feats, "feature_lens": torch.tensor(lens), "tokens": tokens,
            "cut_ids": [f"u{i}" for i in range(len(lens))]}


def _make_batches() -> list[list[dict]]:
    g = torch.Generator().manual_seed(5)
    per_rank = [[], []]
    for k in range(STEPS):
        per_rank[0].append(_batch(g, [83, 67], [5, 3]))
        per_rank[1].append(_batch(g, [99, 75, 51], [6, 2, 4]))  # more frames than rank 0
    per_rank[1][NAN_STEP]["features"][1, 10:20] = float("nan")
    return per_rank


def _union(a: dict, b: dict) -> dict:
    t = max(a["features"].size(1), b["features"].size(1))

    def pad(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, 0, 0, t - x.size(1)))

    return {"features": torch.cat([pad(a["features"]), pad(b["features"])]),
            "feature_lens": torch.cat([a["feature_lens"], b["feature_lens"]]),
            "tokens": a["tokens"] + b["tokens"], "cut_ids": a["cut_ids"] + b["cut_ids"]}


def _trainer(dist_info, exp_dir):
    from asr_kd.models import build_transducer, preset_config
    from asr_kd.train.losses import TransducerLossComputer, TransducerLossConfig
    from asr_kd.train.optim import OptimConfig, WarmupDecaySchedule, build_optimizer
    from asr_kd.train.trainer import Trainer, TrainerConfig

    torch.manual_seed(0)
    cfg = preset_config("tiny", "student", V, dropout=0.0, chunk_sizes=(4,), left_contexts=(8,))
    model = build_transducer(cfg).double()
    lc = TransducerLossComputer(encode=None, cfg=TransducerLossConfig(warm_step=2))
    ocfg = OptimConfig(lr=2e-3, warmup_batches=1)
    opt = build_optimizer(model.parameters(), ocfg)
    return Trainer(model, lc, opt, WarmupDecaySchedule(opt, ocfg),
                   TrainerConfig(exp_dir=exp_dir, num_epochs=1, max_grad_norm=1.0, progress=False),
                   dist_info)


def _ddp_worker(rank: int, world: int, port: int, out_dir: str, batches: list[list[dict]]) -> None:
    from asr_kd.train.distributed import cleanup_distributed, setup_distributed

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    info = setup_distributed("cpu")
    assert info.backend == "gloo" and info.world_size == world
    tr = _trainer(info, Path(out_dir))
    skipped = [tr.train_step(b).skipped for b in batches[rank]]
    torch.save({"model": tr.model.state_dict(), "skipped": skipped}, Path(out_dir) / f"rank{rank}.pt")
    cleanup_distributed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_rank_ddp_equals_union(tmp_path) -> None:
    from asr_kd.train.distributed import DistInfo

    batches = _make_batches()
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), batches), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    expect_skips = [k == NAN_STEP for k in range(STEPS)]
    assert r0["skipped"] == r1["skipped"] == expect_skips
    for k, v in r0["model"].items():
        assert torch.equal(v, r1["model"][k]), k  # ranks hold identical parameters

    single = _trainer(DistInfo(0, 1, 0, torch.device("cpu"), None), tmp_path)
    init = {k: v.clone() for k, v in single.model.state_dict().items()}
    skipped = [single.train_step(_union(a, b)).skipped for a, b in zip(*batches)]
    assert skipped == expect_skips
    moved = 0
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(r0["model"][k], v, rtol=1e-9, atol=1e-11, msg=lambda m: f"{k}: {m}")
        moved += int(not torch.equal(v, init[k]))
    assert moved > 10  # the comparison is not vacuous


def test_torchrun_cli_two_ranks(small_corpus, tmp_path) -> None:
    cuts, bpe = small_corpus
    exp = tmp_path / "exp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "asr_kd.bin.train", "--exp-dir", str(exp), "--cuts-train", str(cuts), "--cuts-valid", str(cuts),
           "--bpe-model", str(bpe), "--model-size", "tiny", "--num-epochs", "1", "--max-duration", "3",
           "--num-buckets", "2", "--num-workers", "0", "--save-every-n", "2", "--progress", "false",
           "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (exp / "log" / "train-rank0.log").is_file() and (exp / "log" / "train-rank1.log").is_file()
    ck = load_checkpoint(exp / "epoch-1.pt")
    assert len(ck["rng"]) == 2  # every rank's RNG state
    assert ck["sampler"]["world_size"] == 2
    assert (exp / "pretrained.pt").is_file()
    assert not list(exp.glob(".*.tmp.*"))
