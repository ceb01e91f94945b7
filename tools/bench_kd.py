#!/usr/bin/env python3
"""Benchmarks of the distillation code (numbers for docs/method.md, not tests).

Parts (``--part``, repeatable; default: all that are available):

- ``smoothing``: wall time per call of ``smooth_teacher`` ("none",
  "temperature", "adaptive-power" with and without stats) on teacher logits
  of the pruned-lattice shape (B, T, R, V).
- ``kl``: wall time per call of ``output_kd_loss`` forward and
  forward+backward for each smoothing method and distribution, plus the
  student joiner forward+backward on the same pruned lattice as a yardstick.
- ``memory``: peak memory of pruned-lattice KD versus full-lattice KD at
  S symbols. The measured path is the whole KD term: teacher joiner (no
  grad) and student joiner on the lattice nodes, ``output_kd_loss``, and the
  backward pass. On CPU each variant runs in a fresh subprocess and the peak
  is the increase of the process's resident-set high-water mark
  (``VmHWM``, reset just before the call) over the resident set before it; on
  CUDA it is ``torch.cuda.max_memory_allocated`` minus the memory in use
  before the call. A tiny run of the same path goes first (one-off library
  and thread-pool costs), and on CPU the main figure is taken with glibc's
  mmap threshold fixed at 64 KiB, so freed tensors leave the resident set at
  once and the peak follows live tensor bytes; the default-allocator figure
  (which also counts heap fragmentation) is reported next to it.

- ``steps``: one training step (forward, loss, backward, AdamW) of the
  ``--model-size`` student on one synthetic batch: baseline (transducer loss
  only), stage 1 (+ hidden MSE, live teacher encoder) and stage 2 (+ KL over
  the pruned lattice with adaptive-power smoothing, live teacher), with the
  ratio to the baseline and a breakdown of the stage-2 extras (teacher
  encoder, teacher decoder + simple lattice, teacher joiner on the ranges,
  smoothing, KL forward+backward).

Logits are synthetic but shaped like a trained transducer's: every node has
one dominant entry (blank at most nodes) with a margin drawn from
[--margin-min, --margin-max] nats over Gaussian noise; ranges follow the
diagonal of the lattice (what a converged model's pruning gives).

Example:
  python tools/bench_kd.py --threads 2 --json bench_kd.json
  python tools/bench_kd.py --part steps --model-size small --batch 4 --frames 150 --num-symbols 36
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from asr_kd.distill import output_kd_loss, smooth_teacher, smooth_teacher_with_stats  # noqa: E402
from asr_kd.models.joiner import Joiner  # noqa: E402

# --------------------------------------------------------------------------- #
# Synthetic inputs
# --------------------------------------------------------------------------- #


def synthetic_logits(
    shape: tuple[int, ...],
    margin_min: float,
    margin_max: float,
    blank_share: float,
    generator: torch.Generator,
    noise: float = 2.0,
) -> torch.Tensor:
    """Logits (..., V) with one dominant entry per node (blank with prob. blank_share)."""
    vocab = shape[-1]
    z = torch.randn(shape, generator=generator) * noise
    lead = shape[:-1]
    margin = margin_min + (margin_max - margin_min) * torch.rand(lead, generator=generator)
    label = torch.randint(1, vocab, lead, generator=generator)
    is_blank = torch.rand(lead, generator=generator) < blank_share
    top = torch.where(is_blank, torch.zeros_like(label), label)
    z.scatter_add_(-1, top.unsqueeze(-1), margin.unsqueeze(-1))
    return z


def diagonal_ranges(batch: int, frames: int, num_symbols: int, prune_range: int) -> torch.Tensor:
    """(B, T, R) monotone ranges centred on the lattice diagonal (k2 layout)."""
    width = min(prune_range, num_symbols + 1)
    t = torch.arange(frames, dtype=torch.float64)
    centre = torch.round(t * num_symbols / max(frames - 1, 1)).to(torch.int64)
    start = (centre - width // 2).clamp(0, num_symbols + 1 - width)
    ranges = start.unsqueeze(-1) + torch.arange(width)
    return ranges.unsqueeze(0).expand(batch, frames, width).contiguous()


def full_ranges(batch: int, frames: int, num_symbols: int) -> torch.Tensor:
    """(B, T, S+1): every symbol position at every frame (the unpruned lattice)."""
    return torch.arange(num_symbols + 1).view(1, 1, -1).expand(batch, frames, -1).contiguous()


def joiner_on_ranges(joiner: Joiner, enc: torch.Tensor, dec: torch.Tensor, ranges: torch.Tensor) -> torch.Tensor:
    """enc (B,T,E), dec (B,S+1,D), ranges (B,T,R) -> logits (B,T,R,V).

    Projects once per frame / per symbol, gathers the decoder projections on
    the nodes, then applies the joiner (as ``Transducer.joint_on_ranges``).
    """
    enc_p = joiner.encoder_proj(enc)  # (B, T, J)
    dec_p = joiner.decoder_proj(dec)  # (B, S+1, J)
    b, t, r = ranges.shape
    idx = ranges.reshape(b, t * r, 1).expand(-1, -1, dec_p.shape[-1])
    dec_nodes = torch.gather(dec_p, 1, idx).view(b, t, r, -1)  # (B, T, R, J)
    return joiner(enc_p.unsqueeze(2), dec_nodes, project_input=False)


# --------------------------------------------------------------------------- #
# Timing helpers
# --------------------------------------------------------------------------- #


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> dict:
    """Wall time of fn() in ms: min and median over ``repeats`` runs."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"min_ms": round(min(times), 2), "median_ms": round(statistics.median(times), 2)}


def _lattice_inputs(args: argparse.Namespace, device: torch.device):
    g = torch.Generator().manual_seed(args.seed)
    shape = (args.batch, args.frames, args.prune_range, args.vocab)
    teacher = synthetic_logits(shape, args.margin_min, args.margin_max, args.blank_share, g).to(device)
    student = synthetic_logits(shape, args.margin_min, args.margin_max, args.blank_share, g).to(device)
    ranges = diagonal_ranges(args.batch, args.frames, args.num_symbols, args.prune_range).to(device)
    boundary = torch.tensor([[0, 0, args.num_symbols, args.frames]] * args.batch, device=device)
    symbols = torch.randint(1, args.vocab, (args.batch, args.num_symbols), generator=g).to(device)
    return student, teacher, ranges, boundary, symbols


# --------------------------------------------------------------------------- #
# Parts
# --------------------------------------------------------------------------- #


def bench_smoothing(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    _, teacher, _, _, _ = _lattice_inputs(args, device)
    target = args.target_entropy
    out: dict = {"shape": list(teacher.shape)}
    out["none"] = time_call(lambda: smooth_teacher(teacher, "none"), device, args.repeats)
    out["temperature"] = time_call(
        lambda: smooth_teacher(teacher, "temperature", temperature=args.temperature), device, args.repeats
    )
    out["adaptive-power"] = time_call(
        lambda: smooth_teacher(teacher, "adaptive-power", target_entropy=target), device, args.repeats
    )
    out["adaptive-power+stats"] = time_call(
        lambda: smooth_teacher_with_stats(teacher, "adaptive-power", target_entropy=target), device, args.repeats
    )
    _, st = smooth_teacher_with_stats(teacher, "adaptive-power", target_entropy=target)
    out["teacher_stats"] = {
        "target_entropy": target,
        "entropy_before_mean": round(float(st.entropy_before.mean()), 4),
        "entropy_after_mean": round(float(st.entropy_after.mean()), 4),
        "share_below_target": round(float((st.entropy_before < target).float().mean()), 4),
        "alpha_mean": round(float(st.alpha.mean()), 4),
        "share_at_alpha_min": round(float(st.at_alpha_min.float().mean()), 4),
    }
    return out


def bench_kl(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    student, teacher, ranges, boundary, symbols = _lattice_inputs(args, device)
    settings = {
        "none": {},
        "temperature": {"temperature": args.temperature},
        "adaptive-power": {"target_entropy": args.target_entropy},
    }
    out: dict = {"shape": list(student.shape)}
    for distribution in ("full", "collapsed"):
        for name, opts in settings.items():
            kw = dict(smoothing=name, symbols=symbols, distribution=distribution, **opts)
            leaf = student.clone().requires_grad_(True)

            def fwd() -> None:
                with torch.no_grad():
                    output_kd_loss(leaf, teacher, ranges, boundary, **kw)

            def fwd_bwd() -> None:
                leaf.grad = None
                output_kd_loss(leaf, teacher, ranges, boundary, **kw).backward()

            out[f"{distribution}/{name}"] = {
                "forward": time_call(fwd, device, args.repeats),
                "forward+backward": time_call(fwd_bwd, device, args.repeats),
            }

    # Yardstick: the student's joiner on the same pruned lattice, forward+backward.
    g = torch.Generator().manual_seed(args.seed + 1)
    joiner = Joiner(args.encoder_dim, args.decoder_dim, args.joiner_dim, args.vocab).to(device)
    enc = torch.randn(args.batch, args.frames, args.encoder_dim, generator=g).to(device)
    dec = torch.randn(args.batch, args.num_symbols + 1, args.decoder_dim, generator=g).to(device)

    def joiner_step() -> None:
        joiner.zero_grad(set_to_none=True)
        joiner_on_ranges(joiner, enc, dec, ranges).float().logsumexp(-1).sum().backward()

    out["yardstick/student_joiner_pruned_fwd_bwd"] = time_call(joiner_step, device, args.repeats)
    return out


def _memory_path(args: argparse.Namespace, variant: str, device: torch.device) -> Callable[[], None]:
    """Build inputs for one memory variant and return the measured call."""
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    student_joiner = Joiner(args.encoder_dim, args.decoder_dim, args.joiner_dim, args.vocab).to(device)
    teacher_joiner = Joiner(args.encoder_dim, args.decoder_dim, args.joiner_dim, args.vocab).to(device)
    teacher_joiner.requires_grad_(False)
    b, t, s = args.batch, args.frames, args.num_symbols
    enc_s = torch.randn(b, t, args.encoder_dim, generator=g).to(device).requires_grad_(True)
    dec_s = torch.randn(b, s + 1, args.decoder_dim, generator=g).to(device).requires_grad_(True)
    enc_t = torch.randn(b, t, args.encoder_dim, generator=g).to(device)
    dec_t = torch.randn(b, s + 1, args.decoder_dim, generator=g).to(device)
    if variant == "pruned":
        ranges = diagonal_ranges(b, t, s, args.prune_range).to(device)
    elif variant == "full":
        ranges = full_ranges(b, t, s).to(device)
    else:
        raise ValueError(f"bench_kd: unknown memory variant {variant!r}")
    boundary = torch.tensor([[0, 0, s, t]] * b, device=device)
    opts = {"target_entropy": args.target_entropy}

    def run() -> None:
        with torch.no_grad():
            teacher_logits = joiner_on_ranges(teacher_joiner, enc_t, dec_t, ranges)
        student_logits = joiner_on_ranges(student_joiner, enc_s, dec_s, ranges)
        loss = output_kd_loss(student_logits, teacher_logits, ranges, boundary, smoothing="adaptive-power", **opts)
        loss.backward()

    return run


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"bench_kd: {field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (VmHWM) to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _release_freed_memory() -> None:
    """Return glibc's cached free heap memory to the OS (no-op elsewhere)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def memory_worker(args: argparse.Namespace) -> dict:
    """Runs in a fresh process: peak memory of one variant."""
    device = torch.device(args.device)
    # Warm up on a tiny lattice first, so one-off costs (kernel libraries,
    # thread pools, allocator arenas) are not counted as the variant's peak.
    tiny = argparse.Namespace(**{**vars(args), "batch": 1, "frames": 8, "num_symbols": 4, "prune_range": 2})
    _memory_path(tiny, args.memory_worker, device)()
    _release_freed_memory()
    run = _memory_path(args, args.memory_worker, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        how = "cuda max_memory_allocated minus memory allocated before the call"
    else:
        _release_freed_memory()
        base = _status_kib("VmRSS") * 1024
        if _reset_peak_rss():
            run()
            peak = _status_kib("VmHWM") * 1024 - base
            how = "CPU resident-set high-water mark (VmHWM, reset before the call) minus RSS before the call"
        else:
            run()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
            how = "ru_maxrss minus RSS before the call (VmHWM reset unavailable: upper bound)"
    return {"variant": args.memory_worker, "peak_mib": round(peak / 2**20, 1), "method": how}


def bench_memory(args: argparse.Namespace) -> dict:
    out: dict = {
        "batch": args.batch,
        "frames": args.frames,
        "num_symbols": args.num_symbols,
        "prune_range": args.prune_range,
        "vocab": args.vocab,
        "joiner_dim": args.joiner_dim,
    }
    # On CPU, glibc keeps freed blocks below its (adaptive) mmap threshold in
    # the heap, so RSS also counts fragmentation. Fixing the threshold at
    # 64 KiB returns every freed tensor to the OS at once: RSS then follows the
    # live tensor bytes. The default-allocator figure is reported as well.
    allocators = {"": {"MALLOC_MMAP_THRESHOLD_": "65536"}}
    if args.device == "cpu":
        allocators["_default_malloc"] = {}
    for variant in ("pruned", "full"):
        for suffix, extra_env in allocators.items():
            cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", variant] + _shape_argv(args)
            env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
            env.update(extra_env)
            res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
            if res.returncode != 0:
                raise RuntimeError(f"bench_kd: memory worker {variant!r} failed:\n{res.stderr}")
            out[variant + suffix] = json.loads(res.stdout.strip().splitlines()[-1])
    for suffix in allocators:
        ratio = out["pruned" + suffix]["peak_mib"] / max(out["full" + suffix]["peak_mib"], 1e-9)
        out["pruned_over_full" + suffix] = round(ratio, 4)
    return out


def bench_steps(args: argparse.Namespace) -> dict:
    """Training step on one synthetic batch: baseline student, stage 1, stage 2 (+ breakdown).

    Student (causal) and teacher (full context) of ``--model-size`` with random
    weights; B = --batch utterances of --frames encoder frames (4 * frames + 3
    feature frames) and --num-symbols labels. A step is forward, loss,
    backward and an AdamW update. The stage-2 breakdown times the teacher
    parts (encoder, decoder + simple lattice, joiner on the student's ranges),
    the smoothing and the KL (forward + backward) separately on the same data.
    """
    from asr_kd.distill import output_kd_loss, smooth_teacher
    from asr_kd.models import build_transducer, preset_config
    from asr_kd.train.kd import KDLossComputer
    from asr_kd.train.kd_config import KDConfig
    from asr_kd.train.losses import TransducerLossComputer, TransducerLossConfig

    device = torch.device(args.device)
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    student = build_transducer(preset_config(args.preset, "student", args.vocab)).to(device)
    teacher = build_transducer(preset_config(args.preset, "teacher", args.vocab)).to(device)
    nf = 4 * args.frames + 3
    batch = {
        "features": torch.randn(args.batch, nf, 80, generator=g),
        "feature_lens": torch.full((args.batch,), nf, dtype=torch.int64),
        "tokens": torch.randint(1, args.vocab, (args.batch, args.num_symbols), generator=g).tolist(),
    }
    batch["clean_features"] = batch["features"].clone()
    loss_cfg = TransducerLossConfig(warm_step=0, prune_range=args.prune_range)
    smooth = {"smoothing": "adaptive-power", "target_entropy": args.target_entropy}

    def computer(stage: Optional[str]):
        base = TransducerLossComputer(lambda texts: [], loss_cfg)
        if stage is None:
            return base
        cfg = KDConfig(stage=stage, teacher_checkpoint="(in memory)", target_entropy=args.target_entropy)
        return KDLossComputer(base, teacher, cfg, student)

    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    student.train()
    out: dict = {"preset": args.preset, "batch": args.batch, "frames": args.frames, "num_symbols": args.num_symbols,
                 "vocab": args.vocab, "prune_range": args.prune_range, "steps": {}, "stage2_breakdown": {}}
    variants = {"baseline": None, "stage1_hidden": "hidden", "stage2_output": "output"}
    steps = {}
    for name, stage in variants.items():
        lc = computer(stage)

        def step(lc=lc) -> None:
            loss, _ = lc(student, batch, 10_000)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        steps[name] = step
        step()  # one-off costs (JIT, allocator, optimiser state) before any timing
    for name, step in steps.items():
        out["steps"][name] = time_call(step, device, args.repeats)
    base_ms = out["steps"]["baseline"]["min_ms"]
    for name in ("stage1_hidden", "stage2_output"):
        out["steps"][name]["ratio_to_baseline"] = round(out["steps"][name]["min_ms"] / base_ms, 3)

    # Breakdown of the stage-2 extras on the same batch.
    kd = computer("output")
    feats, lens = batch["features"].to(device), batch["feature_lens"].to(device)
    with torch.no_grad():
        s_out = kd.base.forward_model(student, batch, 0)
    t_enc = teacher.encoder(feats, lens).out.detach()
    bd = {}

    def teacher_encoder() -> None:
        with torch.no_grad():
            teacher.encoder(feats, lens)

    def teacher_lattice() -> None:
        kd.teacher_lattice(t_enc, s_out.symbols, s_out.boundary)

    t_dec, _, _ = kd.teacher_lattice(t_enc, s_out.symbols, s_out.boundary)

    def teacher_joiner() -> None:
        with torch.no_grad():
            teacher.joint_on_ranges(t_enc, t_dec, s_out.ranges)

    with torch.no_grad():
        t_logits = teacher.joint_on_ranges(t_enc, t_dec, s_out.ranges)
    s_logits = s_out.logits.detach().requires_grad_(True)

    def smoothing() -> None:
        smooth_teacher(t_logits, "adaptive-power", target_entropy=args.target_entropy)

    def kl() -> None:
        output_kd_loss(s_logits, t_logits, s_out.ranges, s_out.boundary, **smooth).backward()

    for name, fn in (("teacher_encoder", teacher_encoder), ("teacher_decoder_simple_lattice", teacher_lattice),
                     ("teacher_joiner_on_ranges", teacher_joiner), ("smoothing_adaptive_power", smoothing),
                     ("kl_fwd_bwd_incl_smoothing", kl)):
        bd[name] = time_call(fn, device, args.repeats)
    out["stage2_breakdown"] = bd
    return out


PARTS: dict[str, Callable[[argparse.Namespace], dict]] = {
    "steps": bench_steps,
    "smoothing": bench_smoothing,
    "kl": bench_kl,
    "memory": bench_memory,
}

# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #

_SHAPE_FLAGS = (
    "batch", "frames", "num_symbols", "prune_range", "vocab", "encoder_dim", "decoder_dim", "joiner_dim",
    "target_entropy", "temperature", "margin_min", "margin_max", "blank_share", "seed", "threads", "device",
)  # fmt: skip


def _shape_argv(args: argparse.Namespace) -> list[str]:
    argv: list[str] = []
    for name in _SHAPE_FLAGS:
        argv += ["--" + name.replace("_", "-"), str(getattr(args, name))]
    return argv


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", action="append", choices=sorted(PARTS), help="parts to run (default: all)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads on CPU")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=250, help="encoder frames T (40 ms each: 250 = 10 s)")
    p.add_argument("--num-symbols", type=int, default=60, help="S, labels per utterance")
    p.add_argument("--prune-range", type=int, default=5, help="R")
    p.add_argument("--vocab", type=int, default=500)
    p.add_argument("--encoder-dim", type=int, default=256)
    p.add_argument("--decoder-dim", type=int, default=256)
    p.add_argument("--joiner-dim", type=int, default=512)
    p.add_argument("--target-entropy", type=float, default=1.0)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--margin-min", type=float, default=4.0)
    p.add_argument("--margin-max", type=float, default=20.0)
    p.add_argument("--blank-share", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-size", dest="preset", default="small", choices=("tiny", "small", "full"),
                   help="Conformer model size of the steps part (default: %(default)s)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--memory-worker", choices=("pruned", "full"), default=None, help=argparse.SUPPRESS)
    return p


def main(argv: Optional[list[str]] = None) -> dict:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_worker is not None:
        res = memory_worker(args)
        print(json.dumps(res))
        return res
    parts = args.part or list(PARTS)
    results: dict = {
        "device": args.device,
        "threads": args.threads if args.device == "cpu" else None,
        "torch": torch.__version__,
    }
    for name in parts:
        results[name] = PARTS[name](args)
        print(json.dumps({name: results[name]}, indent=1), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
