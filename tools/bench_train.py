#!/usr/bin/env python3
"""Training throughput (seconds of audio per second) of the transducer training step.

Times ``asr_kd.train.Trainer.train_step`` (forward, simple + pruned loss,
backward, clipping, AdamW step) on synthetic batches of realistic length
(default 8 utterances x 6 s = 600 feature frames, 30 tokens each, vocabulary
500) for the model size's full-context teacher and chunk-wise student; median
over ``--steps`` steps after ``--warmup`` steps.  CPU runs use ``--threads``
threads (default 2); CUDA runs (when available) use bf16 autocast unless
``--amp none``.

    python tools/bench_train.py                     # small teacher + student, CPU (2 threads) and CUDA
    python tools/bench_train.py --model-size tiny --devices cpu --steps 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr_kd.models import build_transducer, preset_config  # noqa: E402
from asr_kd.train.distributed import DistInfo  # noqa: E402
from asr_kd.train.losses import TransducerLossComputer, TransducerLossConfig  # noqa: E402
from asr_kd.train.optim import OptimConfig, WarmupDecaySchedule, build_optimizer  # noqa: E402
from asr_kd.train.trainer import Trainer, TrainerConfig  # noqa: E402


def make_batch(batch_size: int, seconds: float, tokens: int, vocab: int, seed: int = 0) -> dict:
    """Features (B, T, 80) with T = 100 frames/s, lengths spread over [0.8, 1] x T, random tokens."""
    g = torch.Generator().manual_seed(seed)
    t = int(round(seconds * 100))
    lens = torch.linspace(t, int(0.8 * t), batch_size).round().long()
    feats = torch.randn(batch_size, t, 80, generator=g)
    toks = [torch.randint(1, vocab, (max(1, int(tokens * int(n) / t)),), generator=g).tolist() for n in lens]
    return {"features": feats, "feature_lens": lens, "tokens": toks, "cut_ids": [f"b{i}" for i in range(batch_size)]}


def bench(preset: str, role: str, device: torch.device, amp: str, batch: dict, vocab: int,
          warmup: int, steps: int) -> tuple[float, float, int]:
    """(median step seconds, audio seconds per second, parameters) for one model."""
    torch.manual_seed(0)
    model = build_transducer(preset_config(preset, role, vocab)).to(device)
    lc = TransducerLossComputer(encode=None, cfg=TransducerLossConfig(warm_step=0))
    ocfg = OptimConfig(lr=1e-4, warmup_batches=1)
    opt = build_optimizer(model.parameters(), ocfg)
    tr = Trainer(model, lc, opt, WarmupDecaySchedule(opt, ocfg),
                 TrainerConfig(exp_dir=Path("."), num_epochs=1, amp=amp, progress=False),
                 DistInfo(0, 1, 0, device, None))
    model.train()
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        res = tr.train_step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if res.skipped:
            raise RuntimeError(f"bench step {i} was skipped (non-finite): {res.info}")
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    audio = float(batch["feature_lens"].sum()) / 100.0
    return med, audio / med, sum(p.numel() for p in model.parameters())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-size", dest="preset", default="small", choices=("tiny", "small", "full"),
                   help="Conformer model size (default: %(default)s)")
    p.add_argument("--roles", default="teacher,student")
    p.add_argument("--devices", default="cpu,cuda", help="comma list; cuda is skipped when unavailable")
    p.add_argument("--threads", type=int, default=2, help="torch threads for CPU runs")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seconds", type=float, default=6.0, help="utterance length (longest in the batch)")
    p.add_argument("--tokens", type=int, default=30, help="tokens of the longest utterance")
    p.add_argument("--vocab", type=int, default=500)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--cuda-steps", type=int, default=20)
    p.add_argument("--amp", default="bf16", choices=("none", "bf16", "fp16"), help="CUDA autocast")
    args = p.parse_args(argv)

    batch = make_batch(args.batch_size, args.seconds, args.tokens, args.vocab)
    audio = float(batch["feature_lens"].sum()) / 100.0
    print(f"batch: {args.batch_size} utterances, {audio:.1f} s of audio "
          f"(longest {args.seconds:.1f} s, {args.tokens} tokens), vocab {args.vocab}")
    rows = []
    for dev_name in args.devices.split(","):
        if dev_name == "cuda" and not torch.cuda.is_available():
            print("cuda: not available, skipped")
            continue
        device = torch.device(dev_name)
        if device.type == "cpu":
            torch.set_num_threads(args.threads)
            threads, amp, steps = f"{args.threads} thr", "none", args.steps
        else:
            threads, amp, steps = torch.cuda.get_device_name(device), args.amp, args.cuda_steps
        for role in args.roles.split(","):
            med, speed, n = bench(args.preset, role, device, amp, batch, args.vocab, args.warmup, steps)
            rows.append((f"{args.preset} {role}", f"{n / 1e6:.2f} M", dev_name, threads, amp,
                         f"{med:.3f}", f"{speed:.1f}"))
            print(f"  {rows[-1]}", flush=True)
    header = ("model", "params", "device", "threads/gpu", "amp", "step s (median)", "audio s / s")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print()
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
