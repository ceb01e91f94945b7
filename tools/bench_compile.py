#!/usr/bin/env python3
"""Does ``torch.compile`` make the encoder's training step cheaper on the CPU?

Times forward + backward of the default preset's encoder (the ``small``
Conformer, ``--num-layers 4``, front-end output scaled by sqrt(d_model), no
dropout) on random batches shaped like the recipe's (``--batch-size``
utterances of 9-10 s, 100 feature frames per second, so ~40 s of audio per
batch as with ``--max-duration 40``), each batch a new length as in training.
Three ways to run it:

* ``eager``: today's training;
* ``compile``: ``torch.compile(encoder, dynamic=True)``;
* ``compile-layers``: the front end and each block compiled on their own
  (``dynamic=True``), which keeps the encoder's input checks (a graph break
  in ``compile``) out of the compiled graphs.

Prints the first batch's seconds (compilation included), the median of the
batches after ``--warmup``, and the total. The loss is the mean square of
the encoder output, which exercises the same backward graph as training.

    python tools/bench_compile.py --mode eager
    python tools/bench_compile.py --mode compile-layers --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr_kd.models import build_transducer  # noqa: E402
from asr_kd.train.cli import build_parser, settings_from_args  # noqa: E402
from asr_kd.train.run import build_model_config  # noqa: E402


def default_encoder(causal: bool, num_layers: int) -> torch.nn.Module:
    """The default preset's encoder, built through the training CLI's own flags."""
    flags = ["--exp-dir", "unused", "--bpe-model", "unused", "--cuts-train", "unused", "--cuts-valid", "unused",
             "--model-size", "small", "--num-layers", str(num_layers), "--frontend-scale", "sqrt-d",
             "--dropout", "0"]
    if causal:
        flags += ["--causal", "true", "--chunk-ms", "320,160,640,1280", "--left-context-ms", "1280"]
    settings = settings_from_args(build_parser().parse_args(flags))
    return build_transducer(build_model_config(settings.model, 256)).encoder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--mode", choices=("eager", "compile", "compile-layers"), default="eager",
                   help="how the encoder runs (see the module docstring)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--batches", type=int, default=14, help="batches timed in all")
    p.add_argument("--warmup", type=int, default=4, help="first batches left out of the median")
    p.add_argument("--batch-size", type=int, default=4, help="utterances per batch")
    p.add_argument("--num-layers", type=int, default=4, help="Conformer blocks (the default preset's: 4)")
    p.add_argument("--causal", action="store_true", help="the chunk-wise student (dynamic chunks) instead of the teacher")
    args = p.parse_args()
    if args.batches <= args.warmup:
        p.error(f"--batches {args.batches} must exceed --warmup {args.warmup}")
    if not 1 <= args.batch_size <= 10:  # utterance k is 50 k frames shorter than the padded length (>= 900)
        p.error(f"--batch-size {args.batch_size} must be 1..10")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    encoder = default_encoder(args.causal, args.num_layers)
    if args.mode == "compile":
        encoder = torch.compile(encoder, dynamic=True)
    elif args.mode == "compile-layers":
        for i, layer in enumerate(encoder.layers):
            encoder.layers[i] = torch.compile(layer, dynamic=True)
        encoder.subsampling = torch.compile(encoder.subsampling, dynamic=True)

    lengths = torch.Generator().manual_seed(1)
    seconds = []
    start = time.perf_counter()
    for i in range(args.batches):
        frames = 900 + int(100 * torch.rand((), generator=lengths).item())  # a new padded length per batch
        features = torch.randn(args.batch_size, frames, 80)
        feature_lens = torch.tensor([frames - 50 * k for k in range(args.batch_size)])
        t = time.perf_counter()
        encoder(features, feature_lens).out.pow(2).mean().backward()
        seconds.append(time.perf_counter() - t)
        if i == 0:
            print(f"{args.mode}: first batch {seconds[0]:.1f} s (compilation included)", flush=True)
    print(f"{args.mode} ({'student' if args.causal else 'teacher'}, {args.threads} thread(s)): median forward + "
          f"backward {1000 * statistics.median(seconds[args.warmup:]):.0f} ms per batch over batches "
          f"{args.warmup + 1}-{args.batches}; {time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
