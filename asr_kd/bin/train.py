"""Train a transducer: full-context teacher or chunk-wise streaming student.

Single process (CPU or one GPU)::

    python -m asr_kd.bin.train --exp-dir exp/teacher --cuts-train data/train.jsonl.gz \\
        --cuts-valid data/dev.jsonl.gz --bpe-model data/lang/bpe.model --model-size small --causal false

Streaming student with dynamic chunk training (chunk sizes and left contexts in ms, multiples of 40)::

    python -m asr_kd.bin.train ... --causal true --chunk-ms 640,320,1280 --left-context-ms 2560,1280,-1

Several processes (DDP; gloo on CPU, nccl on GPU)::

    torchrun --standalone --nproc_per_node 4 -m asr_kd.bin.train ...

Resume after an interruption: the same command plus ``--resume``.  See
``python -m asr_kd.bin.train --help`` for every flag.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from asr_kd.bin._entry import run_tool
from asr_kd.train.cli import build_parser, settings_from_args


def get_parser() -> argparse.ArgumentParser:
    return build_parser()


def train(argv: Optional[Sequence[str]] = None) -> None:
    """Parse ``argv`` and run the training; user errors raise (``main`` turns them into one line)."""
    from asr_kd.train.run import run_training  # local: --help need not load the training run (data, lhotse)

    run_training(settings_from_args(get_parser().parse_args(argv)))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The tool: a user error (bad argument, unusable file or exp dir, full disk) ends with ONE line
    ``train: error: ...`` on stderr (also written to the run's log file) and exit status 2."""
    return run_tool("train", train, argv)


if __name__ == "__main__":
    sys.exit(main())
