#!/usr/bin/env python3
"""Benchmark ``asr_kd.rnnt``: forward+backward time per function, the whole
pruned pipeline, and peak memory of the pruned pipeline vs the full loss.

Pipeline (what a pruned-transducer training step does with the losses)::

    simple, (px_grad, py_grad) = rnnt_loss_smoothed(lm, am, ..., lm_only_scale=0.25,
                                                    am_only_scale=0.0, return_grad=True)
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range)
    am_p, lm_p = do_rnnt_pruning(am, lm, ranges)
    pruned = rnnt_loss_pruned(am_p + lm_p, ...)            # additive joiner
    (0.5 * simple + pruned).backward()

Times are medians of ``--repeats`` runs after ``--warmup`` runs, on CPU at each
of ``--threads`` (torch intra-op threads) and on CUDA when available.  Peak
memory is measured in a fresh subprocess per variant: on CPU the rise of the
process's peak resident set (VmHWM, reset through /proc/self/clear_refs where
the kernel allows it) over the resident size just before the step, after a
small warm-up that loads libraries and compiles the numba kernel; on CUDA
``torch.cuda.max_memory_allocated`` above the allocation before the step.
Inputs (am, lm, symbols) exist before the baseline and are not counted.

Usage:  python tools/bench_rnnt.py [--batch 8 --frames 250 --symbols 60
        --vocab 500 --s-range 5 --threads 1,2 --repeats 10 --warmup 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import asr_kd.rnnt as rnnt  # noqa: E402
from asr_kd.rnnt import backend, mi_numba  # noqa: E402

BLANK = 0


@dataclass
class Sizes:
    """Benchmark problem size."""

    batch: int
    frames: int
    symbols: int
    vocab: int
    s_range: int


def make_inputs(sz: Sizes, device: torch.device, seed: int = 0):
    """am (B,T,V), lm (B,S+1,V) leaves, symbols (B,S) in [1,V), full-length boundary."""
    g = torch.Generator().manual_seed(seed)
    am = torch.randn(sz.batch, sz.frames, sz.vocab, generator=g).to(device).requires_grad_()
    lm = torch.randn(sz.batch, sz.symbols + 1, sz.vocab, generator=g).to(device).requires_grad_()
    symbols = torch.randint(1, sz.vocab, (sz.batch, sz.symbols), generator=g).to(device)
    boundary = torch.tensor([[0, 0, sz.symbols, sz.frames]] * sz.batch, device=device)
    return am, lm, symbols, boundary


def pruned_losses(am, lm, symbols, boundary, s_range: int):
    """Forward of the pruned pipeline; returns (simple, pruned) like a model's forward."""
    simple, (px_grad, py_grad) = rnnt.rnnt_loss_smoothed(
        lm, am, symbols, BLANK, lm_only_scale=0.25, am_only_scale=0.0, boundary=boundary,
        reduction="sum", return_grad=True)
    ranges = rnnt.get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range)
    am_p, lm_p = rnnt.do_rnnt_pruning(am, lm, ranges)
    pruned = rnnt.rnnt_loss_pruned(am_p + lm_p, symbols, ranges, BLANK, boundary,
                                   reduction="sum")
    return simple, pruned


def pruned_pipeline(am, lm, symbols, boundary, s_range: int) -> None:
    """The whole pruned pipeline: forward, then backward of 0.5 * simple + pruned.

    As in a training step, the forward's intermediates that autograd does not
    save (e.g. ``lm_pruned``) are released before the backward pass.
    """
    simple, pruned = pruned_losses(am, lm, symbols, boundary, s_range)
    (0.5 * simple + pruned).backward()


def full_losses(am, lm, symbols, boundary):
    """Forward of the full-lattice variant: additive joiner (B,T,S+1,V) + rnnt_loss."""
    logits = am.unsqueeze(2) + lm.unsqueeze(1)
    return rnnt.rnnt_loss(logits, symbols, BLANK, boundary, reduction="sum")


def full_pipeline(am, lm, symbols, boundary) -> None:
    """Full-lattice variant, forward then backward."""
    full_losses(am, lm, symbols, boundary).backward()


def build_cases(sz: Sizes, device: torch.device) -> Dict[str, Callable[[], None]]:
    """Name -> closure running one forward+backward (or forward only for ranges)."""
    am, lm, symbols, boundary = make_inputs(sz, device)
    g = torch.Generator().manual_seed(1)
    px = torch.randn(sz.batch, sz.symbols, sz.frames + 1, generator=g).to(device)
    py = torch.randn(sz.batch, sz.symbols + 1, sz.frames, generator=g).to(device)
    px.requires_grad_()
    py.requires_grad_()
    with torch.no_grad():
        _, (px_grad, py_grad) = rnnt.rnnt_loss_smoothed(
            lm, am, symbols, BLANK, 0.25, 0.0, boundary, return_grad=True)
        ranges = rnnt.get_rnnt_prune_ranges(px_grad, py_grad, boundary, sz.s_range)
        pruned_logits = (am.unsqueeze(2) + lm[:, :1].unsqueeze(1)).expand(
            -1, -1, ranges.shape[2], -1).contiguous()
    pruned_logits.requires_grad_()
    leaves = [am, lm, px, py, pruned_logits]

    def clear():
        for x in leaves:
            x.grad = None

    def mi():
        rnnt.mutual_information_recursion(px, py, boundary).sum().backward()

    def simple():
        rnnt.rnnt_loss_simple(lm, am, symbols, BLANK, boundary, reduction="sum").backward()

    def smoothed():
        loss, _ = rnnt.rnnt_loss_smoothed(lm, am, symbols, BLANK, 0.25, 0.0, boundary,
                                          reduction="sum", return_grad=True)
        loss.backward()

    def prune_ranges():
        rnnt.get_rnnt_prune_ranges(px_grad, py_grad, boundary, sz.s_range)

    def joiner():
        am_p, lm_p = rnnt.do_rnnt_pruning(am, lm, ranges)
        (am_p + lm_p).sum().backward()

    def pruned():
        rnnt.rnnt_loss_pruned(pruned_logits, symbols, ranges, BLANK, boundary,
                              reduction="sum").backward()

    def wrap(fn):
        def run():
            clear()
            fn()
        return run

    cases = {
        "mutual_information_recursion": mi,
        "rnnt_loss_simple": simple,
        "rnnt_loss_smoothed (return_grad)": smoothed,
        "get_rnnt_prune_ranges (fwd only)": prune_ranges,
        "do_rnnt_pruning + additive joiner": joiner,
        "rnnt_loss_pruned": pruned,
        "PRUNED PIPELINE (0.5*simple+pruned)": lambda: pruned_pipeline(
            am, lm, symbols, boundary, sz.s_range),
        "full pipeline (joiner + rnnt_loss)": lambda: full_pipeline(am, lm, symbols, boundary),
    }
    return {name: wrap(fn) for name, fn in cases.items()}


def median_ms(fn: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time of ``fn`` in ms after ``warmup`` untimed calls."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def time_all(sz: Sizes, device: torch.device, warmup: int, repeats: int,
             full_repeats: int) -> Dict[str, float]:
    """Times for every case on ``device`` (current thread setting)."""
    results: Dict[str, float] = {}
    for name, fn in build_cases(sz, device).items():
        if name == "mutual_information_recursion" and device.type == "cpu" and mi_numba.AVAILABLE:
            for impl in ("numba", "torch"):
                os.environ[backend.RECURSION_ENV] = impl
                results[f"{name} [{impl}]"] = median_ms(fn, device, warmup, repeats)
            os.environ[backend.RECURSION_ENV] = "auto"
            continue
        reps = full_repeats if name.startswith("full") else repeats
        results[name] = median_ms(fn, device, min(warmup, reps), reps)
    return results


def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (VmRSS, VmHWM)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def memory_child(which: str, sz: Sizes, device_name: str) -> Dict[str, float]:
    """Peak extra memory (MiB) of one forward+backward of ``which`` (runs in a subprocess)."""
    torch.set_num_threads(1)
    device = torch.device(device_name)
    small = Sizes(2, 12, 4, 16, 3)
    for fn in (pruned_pipeline, full_pipeline):  # load libraries, compile numba
        args = make_inputs(small, device)
        fn(*args, small.s_range) if fn is pruned_pipeline else fn(*args)
    am, lm, symbols, boundary = make_inputs(sz, device)
    run = (lambda: pruned_pipeline(am, lm, symbols, boundary, sz.s_range)) if which == "pruned" \
        else (lambda: full_pipeline(am, lm, symbols, boundary))
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run()
        torch.cuda.synchronize()
        return {"peak_mib": (torch.cuda.max_memory_allocated() - base) / 2**20}
    # VmHWM, not getrusage's ru_maxrss: the latter also remembers the peak of
    # the parent's address space that this process was forked from.
    reset = _reset_peak_rss()
    base = _status_kib("VmRSS")
    run()
    return {"peak_mib": (_status_kib("VmHWM") - base) / 1024, "hwm_reset": reset}


def measure_memory(sz: Sizes, device_name: str) -> Dict[str, Optional[float]]:
    """Run :func:`memory_child` for both variants in fresh interpreters."""
    out: Dict[str, Optional[float]] = {}
    for which in ("pruned", "full"):
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", which,
               "--device", device_name, "--batch", str(sz.batch), "--frames", str(sz.frames),
               "--symbols", str(sz.symbols), "--vocab", str(sz.vocab),
               "--s-range", str(sz.s_range)]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            out[which] = None
            continue
        out[which] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_mib"]
    return out


def print_table(columns: List[str], rows: Dict[str, Dict[str, float]],
                memory: Dict[str, Dict[str, Optional[float]]]) -> None:
    """One table: time rows (ms) per column, then memory rows (MiB)."""
    names = list(next(iter(rows.values())).keys())
    width = max(len(n) for n in names + ["peak memory, full rnnt_loss step (MiB)"]) + 2
    head = "".join(f"{c:>14}" for c in columns)
    print(f"{'fwd+bwd median (ms)':<{width}}{head}")
    print("-" * (width + 14 * len(columns)))
    for name in names:
        cells = "".join(f"{rows[c].get(name, float('nan')):>14.1f}" for c in columns)
        print(f"{name:<{width}}{cells}")
    print("-" * (width + 14 * len(columns)))

    # Memory is measured once per device (fresh subprocess, 1 thread): shown
    # under the first CPU column and the CUDA column.
    first_cpu = next((c for c in columns if c.startswith("cpu")), None)

    def mem_of(col: str) -> Dict[str, Optional[float]]:
        if col.startswith("cuda"):
            return memory.get("cuda", {})
        return memory.get("cpu", {}) if col == first_cpu else {}

    for key, label in (("pruned", "peak memory, pruned pipeline (MiB)"),
                       ("full", "peak memory, full rnnt_loss step (MiB)")):
        cells = ""
        for c in columns:
            value = mem_of(c).get(key)
            cells += f"{value:>14.1f}" if value is not None else f"{'':>14}"
        print(f"{label:<{width}}{cells}")
    cells = ""
    for c in columns:
        m = mem_of(c)
        ok = m.get("pruned") and m.get("full")
        cells += f"{m['full'] / m['pruned']:>13.1f}x" if ok else f"{'':>14}"
    print(f"{'full / pruned memory':<{width}}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--symbols", type=int, default=60)
    parser.add_argument("--vocab", type=int, default=500)
    parser.add_argument("--s-range", type=int, default=5)
    parser.add_argument("--threads", default="1,2", help="comma-separated CPU thread counts")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--full-repeats", type=int, default=3,
                        help="repeats for the (slow) full-lattice pipeline")
    parser.add_argument("--no-cuda", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-child", choices=("pruned", "full"), help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sz = Sizes(args.batch, args.frames, args.symbols, args.vocab, args.s_range)
    os.environ.setdefault(backend.BACKEND_ENV, "torch")  # benchmark our implementation

    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, sz, args.device)))
        return

    rows: Dict[str, Dict[str, float]] = {}
    columns: List[str] = []
    for n in (int(x) for x in args.threads.split(",") if x):
        torch.set_num_threads(n)
        col = f"cpu {n} thr"
        columns.append(col)
        rows[col] = time_all(sz, torch.device("cpu"), args.warmup, args.repeats,
                             args.full_repeats)
    use_cuda = torch.cuda.is_available() and not args.no_cuda
    if use_cuda:
        columns.append("cuda")
        rows["cuda"] = time_all(sz, torch.device("cuda"), args.warmup, args.repeats,
                                args.full_repeats)
    memory: Dict[str, Dict[str, Optional[float]]] = {}
    if not args.no_memory:
        memory["cpu"] = measure_memory(sz, "cpu")
        if use_cuda:
            memory["cuda"] = measure_memory(sz, "cuda")

    print(f"asr_kd.rnnt benchmark: B={sz.batch} T={sz.frames} S={sz.symbols} V={sz.vocab} "
          f"R={sz.s_range} float32; torch {torch.__version__}; backend "
          f"{rnnt.rnnt_backend()}; recursion on CPU: "
          f"{'numba' if mi_numba.AVAILABLE else 'torch'}; median of {args.repeats} "
          f"after {args.warmup} warm-up ({args.full_repeats} for the full pipeline)")
    print_table(columns, rows, memory)
    print("memory: peak resident-set rise over the pre-step baseline (CPU, fresh process, "
          "1 thread) / max_memory_allocated rise (CUDA); inputs not counted.")


if __name__ == "__main__":
    main()
