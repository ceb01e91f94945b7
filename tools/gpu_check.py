#!/usr/bin/env python3
"""One prepared check for a lent GPU: parity, training speed and memory, decoding, DDP.

    python tools/gpu_check.py OUT_DIR            # on a CUDA machine (<= 8 minutes on one GPU)
    python tools/gpu_check.py OUT_DIR --dry-run  # the same code paths on the CPU, tiny sizes

Writes ``OUT_DIR/gpu_check.json`` (every figure) and ``OUT_DIR/gpu_check.md``
(the tables), each part as soon as it is done, so a cut-off keeps what ran:

1. **parity**: the smoothed simple loss, the pruned loss and the stage-2 KL
   (adaptive-power smoothing over the pruned lattice) on random inputs, on
   the device against the CPU: relative difference of the value and largest
   absolute difference of the gradients (the pruned loss and the KL get the
   CPU's pruning ranges, so both sides see the same lattice);
2. **training**: ``Trainer.train_step`` of the LibriSpeech presets' models
   (medium: ``full``, large: ``large``; teacher and streaming student) on a
   synthetic batch of ~400 s of audio (44 utterances up to 10 s) under fp32,
   bf16 and fp16 autocast: median seconds per step, hours of audio per
   GPU-hour, peak memory; plus the frozen teacher's encoder forward pass that
   a stage-2 step adds (no grad);
3. **decoding**: true-streaming greedy RTF of the large student (random
   weights) for 1 and for 32 streams decoded together (320 ms chunks);
4. **DDP**: one training step of a DistributedDataParallel tiny model over
   NCCL (gloo with --dry-run), world size 1 in this process.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS.parent))
sys.path.insert(0, str(TOOLS))

from bench_decode import synthetic_audio  # noqa: E402
from bench_train import bench as bench_train_step, make_batch  # noqa: E402

from asr_kd import rnnt  # noqa: E402
from asr_kd.atomic import atomic_write_text  # noqa: E402
from asr_kd.distill import output_kd_loss  # noqa: E402
from asr_kd.models import build_transducer, preset_config  # noqa: E402

# (recipe preset, model preset) of the GPU recipes
GPU_MODELS = (("medium", "full"), ("large", "large"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _with_grads(fn: Callable[..., torch.Tensor], leaves: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
    leaves = [x.detach().clone().requires_grad_(True) for x in leaves]
    value = fn(*leaves)
    value.backward()
    return float(value.detach()), [x.grad.detach().cpu() for x in leaves]


def parity(device: torch.device, dry: bool) -> dict[str, Any]:
    """Loss values and gradients on ``device`` against the CPU, random inputs."""
    b, t, s, v, r = (2, 12, 4, 16, 3) if dry else (4, 150, 40, 500, 5)
    g = torch.Generator().manual_seed(0)
    am, lm = torch.randn(b, t, v, generator=g), torch.randn(b, s + 1, v, generator=g)
    symbols = torch.randint(1, v, (b, s), generator=g)
    boundary = torch.tensor([[0, 0, s, t]] * b)

    def simple(am_, lm_, dev=torch.device("cpu")):
        return rnnt.rnnt_loss_smoothed(lm=lm_, am=am_, symbols=symbols.to(dev), termination_symbol=0,
                                       lm_only_scale=0.25, am_only_scale=0.0, boundary=boundary.to(dev),
                                       reduction="sum")

    _, (px, py) = rnnt.rnnt_loss_smoothed(lm=lm, am=am, symbols=symbols, termination_symbol=0, lm_only_scale=0.25,
                                          am_only_scale=0.0, boundary=boundary, reduction="sum", return_grad=True)
    ranges = rnnt.get_rnnt_prune_ranges(px, py, boundary, r)
    logits, teacher = torch.randn(b, t, ranges.size(-1), v, generator=g), 3 * torch.randn(b, t, ranges.size(-1), v, generator=g)

    def pruned(x, dev=torch.device("cpu")):
        return rnnt.rnnt_loss_pruned(logits=x, symbols=symbols.to(dev), ranges=ranges.to(dev), termination_symbol=0,
                                     boundary=boundary.to(dev), reduction="sum")

    def kl(x, dev=torch.device("cpu")):
        return output_kd_loss(x, teacher.to(dev), ranges.to(dev), boundary.to(dev), smoothing="adaptive-power",
                              symbols=symbols.to(dev), target_entropy=0.5)

    out: dict[str, Any] = {"shape": {"B": b, "T": t, "S": s, "V": v, "R": int(ranges.size(-1))}}
    for name, fn, leaves in (("smoothed simple loss", simple, [am, lm]), ("pruned loss", pruned, [logits]),
                             ("stage-2 KL (adaptive-power)", kl, [logits])):
        ref, ref_grads = _with_grads(fn, leaves)
        val, grads = _with_grads(lambda *x: fn(*x, dev=device), [x.to(device) for x in leaves])
        out[name] = {"cpu": ref, "device": val, "rel_diff": abs(val - ref) / max(abs(ref), 1e-12),
                     "grad_max_abs_diff": max(float((a - c).abs().max()) for a, c in zip(grads, ref_grads))}
    return out


def training(device: torch.device, dry: bool) -> list[dict[str, Any]]:
    """Seconds per step, audio hours per device-hour and peak memory of each GPU preset's models."""
    rows = []
    models = (("micro", "tiny"),) if dry else GPU_MODELS
    batch = make_batch(2, 2.0, 10, 60) if dry else make_batch(44, 10.0, 60, 500)
    vocab = 60 if dry else 500
    audio_s = float(batch["feature_lens"].sum()) / 100.0
    amps = ("none",) if device.type == "cpu" else ("none", "bf16", "fp16")
    warmup, steps = (1, 2) if dry else (2, 5)
    for recipe, model in models:
        for role in ("teacher", "student"):
            for amp in amps:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                try:
                    sec, speed, n = bench_train_step(model, role, device, amp, batch, vocab, warmup, steps)
                    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
                    rows.append({"recipe preset": recipe, "model": model, "role": role, "amp": amp,
                                 "params_M": round(n / 1e6, 2), "batch_audio_s": round(audio_s, 1),
                                 "step_s": round(sec, 4), "audio_h_per_device_h": round(speed, 1),
                                 "peak_mem_GiB": None if peak is None else round(peak, 2)})
                except (RuntimeError, torch.cuda.OutOfMemoryError) as e:  # one failed setting: say so, go on
                    rows.append({"recipe preset": recipe, "model": model, "role": role, "amp": amp,
                                 "error": str(e).splitlines()[0][:200]})
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
        teacher = build_transducer(preset_config(model, "teacher", vocab)).to(device).eval()
        feats, lens = batch["features"].to(device), batch["feature_lens"].to(device)
        times = []
        with torch.no_grad():
            for i in range(warmup + steps):
                _sync(device)
                t0 = time.perf_counter()
                teacher.encoder(feats, lens)
                _sync(device)
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
        rows.append({"recipe preset": recipe, "model": model, "role": "stage-2 teacher forward (no grad, fp32)",
                     "amp": "none", "step_s": round(statistics.median(times), 4)})
        del teacher
    return rows


def decoding(device: torch.device, dry: bool) -> dict[str, Any]:
    """True-streaming greedy RTF for 1 and 32 streams decoded together (random large student)."""
    from asr_kd.decode.streaming import StreamingDecoder

    torch.manual_seed(0)
    model = build_transducer(preset_config("tiny" if dry else "large", "student", 60 if dry else 500)).to(device).eval()
    dec = StreamingDecoder(model, 8, 32, "greedy", device=device)
    seconds = 2.0 if dry else 20.0
    dec.decode_waveforms([synthetic_audio(1.0, 0)])  # warm-up
    out: dict[str, Any] = {"chunk_ms": 320, "left_context_ms": 1280, "seconds_per_stream": seconds}
    for n in (1, 4) if dry else (1, 32):
        audios = [synthetic_audio(seconds, i) for i in range(n)]
        _sync(device)
        t0 = time.perf_counter()
        dec.decode_waveforms(audios, piece_samples=16000)
        _sync(device)
        out[f"rtf_{n}_streams"] = round((time.perf_counter() - t0) / (n * seconds), 5)
    return out


def ddp_step(device: torch.device, dry: bool) -> dict[str, Any]:
    """One DDP forward/backward/step of a tiny model, world size 1 (NCCL on CUDA, gloo on CPU)."""
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        model = build_transducer(preset_config("tiny", "student", 60)).to(device)
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index or 0] if device.type == "cuda" else None)
        batch = make_batch(2, 2.0, 10, 60)
        opt = torch.optim.AdamW(ddp.parameters(), lr=1e-4)
        t0 = time.perf_counter()
        out = ddp(batch["features"].to(device), batch["feature_lens"].to(device), batch["tokens"])
        (out.simple_loss + out.pruned_loss).backward()
        opt.step()
        _sync(device)
        return {"backend": backend, "step_s": round(time.perf_counter() - t0, 3), "loss_finite":
                bool(torch.isfinite(out.simple_loss + out.pruned_loss))}
    finally:
        dist.destroy_process_group()


def _markdown(report: dict[str, Any]) -> str:
    lines = [f"# GPU check ({report['device']})", "", f"torch {report['torch']}; dry run: {report['dry_run']}", ""]
    if "parity" in report:
        lines += ["## Parity against the CPU", "", "| loss | CPU value | device value | rel. diff | max abs grad diff |",
                  "|---|---|---|---|---|"]
        for k, v in report["parity"].items():
            if k != "shape":
                lines.append(f"| {k} | {v['cpu']:.6g} | {v['device']:.6g} | {v['rel_diff']:.2e} | {v['grad_max_abs_diff']:.2e} |")
        lines.append("")
    if "training" in report:
        lines += ["## Training step (synthetic batch)", "", "| preset | model | role | amp | s / step | audio h / device h | peak GiB |",
                  "|---|---|---|---|---|---|---|"]
        for r in report["training"]:
            lines.append(f"| {r['recipe preset']} | {r['model']} | {r['role']} | {r['amp']} | {r.get('step_s', r.get('error'))} | "
                         f"{r.get('audio_h_per_device_h', '–')} | {r.get('peak_mem_GiB') or '–'} |")
        lines.append("")
    for part in ("decoding", "ddp"):
        if part in report:
            lines += [f"## {part}", "", "```", json.dumps(report[part], indent=2), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/gpu_check.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", type=Path, help="where gpu_check.json and gpu_check.md go (required)")
    p.add_argument("--dry-run", action="store_true", help="CPU and tiny sizes: checks the code paths (default: off)")
    args = p.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        p.error("no CUDA device visible to torch: run on a GPU machine, or pass --dry-run")
    device = torch.device("cpu" if args.dry_run else "cuda:0")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                              "torch": torch.__version__, "dry_run": args.dry_run}
    for part, fn in (("parity", parity), ("training", training), ("decoding", decoding), ("ddp", ddp_step)):
        t0 = time.perf_counter()
        report[part] = fn(device, args.dry_run)
        report.setdefault("seconds", {})[part] = round(time.perf_counter() - t0, 1)
        atomic_write_text(args.out_dir / "gpu_check.json", json.dumps(report, indent=2) + "\n")
        atomic_write_text(args.out_dir / "gpu_check.md", _markdown(report))
        print(f"[gpu_check] {part} done in {report['seconds'][part]} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
