"""Store a frozen teacher's encoder outputs per cut, for training with ``--teacher-cache``.

    python -m asr_kd.bin.cache_teacher --teacher-checkpoint exp/teacher/pretrained.pt \\
        --cuts data/fbank/cuts_train.jsonl.gz --cuts data/fbank/cuts_dev.jsonl.gz \\
        --out-dir exp/teacher/cache --layers -1

``--layers`` lists the *teacher* layers stage 1 maps (the teacher side of
``--kd-hidden-layers``; a Zipformer's stacks; -1, the encoder output, is always stored). The cache
is computed on clean features (no augmentation) and is resumable: rerunning
the same command skips finished shards. See ``asr_kd.distill.cache`` for the
layout and the limits.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

import torch

from asr_kd.bin._entry import run_tool

__all__ = ["get_parser", "main"]


def get_parser() -> argparse.ArgumentParser:
    from asr_kd.train.cli import int_list, str2bool

    p = argparse.ArgumentParser(prog="python -m asr_kd.bin.cache_teacher", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher-checkpoint", required=True, help="teacher checkpoint of asr_kd.train (required)")
    p.add_argument("--cuts", action="append", required=True,
                   help="CutSet manifest (repeat for several, e.g. train and dev; required)")
    p.add_argument("--out-dir", required=True, help="cache directory (required)")
    p.add_argument("--layers", type=int_list, default=(-1,),
                   help="teacher encoder layers to store (0-based, negatives from the end; -1 = encoder output; default: -1)")
    p.add_argument("--shard-size", type=int, default=500, help="cuts per shard file (default: %(default)s)")
    p.add_argument("--max-duration", type=float, default=200.0, help="seconds of audio per teacher batch (default: %(default)s)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"),
                   help="storage dtype (float16 halves the size, ~1e-3 relative error) (default: %(default)s)")
    p.add_argument("--on-the-fly-feats", type=str2bool, default=False,
                   help="true/false: compute fbank from audio (must match the training run's --on-the-fly-feats) "
                        "(default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda; auto: cuda when available, else cpu (default: %(default)s)")
    p.add_argument("--progress", type=str2bool, default=True, help="true/false: tqdm progress bar (default: %(default)s)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The tool; a user error is one line on stderr (``cache_teacher: error: ...``) and exit status 2."""
    return run_tool("cache_teacher", _cache_teacher, argv)


def _cache_teacher(argv: Optional[Sequence[str]]) -> None:
    from asr_kd.data.tokenizer import file_sha256
    from asr_kd.distill.cache import write_teacher_cache
    from asr_kd.models.encoders import layer_unit
    from asr_kd.train.kd import load_teacher
    from asr_kd.train.kd_config import resolve_layer

    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    teacher, _ = load_teacher(args.teacher_checkpoint, device)
    n = len(teacher.encoder.layers)
    layers = [resolve_layer(i, n, "teacher", layer_unit(teacher.encoder)) for i in args.layers]
    index = write_teacher_cache(
        teacher, args.cuts, args.out_dir, layers, args.teacher_checkpoint, file_sha256(args.teacher_checkpoint),
        shard_size=args.shard_size, max_duration=args.max_duration,
        dtype=torch.float16 if args.dtype == "float16" else torch.float32,
        on_the_fly_feats=args.on_the_fly_feats, progress=args.progress,
    )  # fmt: skip
    logging.info("teacher cache complete: %s", index)


if __name__ == "__main__":
    sys.exit(main())
