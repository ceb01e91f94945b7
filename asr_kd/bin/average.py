"""Average model checkpoints into one model file.

The last N epoch checkpoints of an experiment::

    python -m asr_kd.bin.average --exp-dir exp/teacher --epoch 30 --avg 5 --out exp/teacher/avg-26-30.pt

or explicit files::

    python -m asr_kd.bin.average --checkpoints a.pt b.pt c.pt --out avg.pt

Floating-point parameters and buffers are averaged element-wise (float64
accumulation); integer buffers are taken from the last file.  The output has
the model file format (``asr_kd.models.checkpoint``) and loads with
``asr_kd.models.checkpoint.load_model``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from asr_kd.bin._entry import run_tool
from asr_kd.models.checkpoint import save_averaged
from asr_kd.train.checkpoint import epoch_checkpoints


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asr_kd.bin.average", description=__doc__.split("\n\n")[0])
    p.add_argument("--exp-dir", default=None, help="experiment directory holding epoch-<e>.pt (default: none; give exactly one of --exp-dir or --checkpoints)")
    p.add_argument("--epoch", type=int, default=None, help="last epoch to average (default: the newest epoch-<e>.pt in --exp-dir)")
    p.add_argument("--avg", type=int, default=1, help="number of epochs to average, ending at --epoch (default: %(default)s)")
    p.add_argument("--checkpoints", nargs="+", default=None, help="explicit checkpoint files (instead of --exp-dir; default: none)")
    p.add_argument("--out", required=True, help="output file (required)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The tool; a user error is one line on stderr (``average: error: ...``) and exit status 2."""
    return run_tool("average", _average, argv)


def _average(argv: Optional[Sequence[str]]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = get_parser().parse_args(argv)
    if (args.checkpoints is None) == (args.exp_dir is None):
        raise ValueError("give exactly one of --exp-dir or --checkpoints")
    paths = [Path(p) for p in args.checkpoints] if args.checkpoints else epoch_checkpoints(
        args.exp_dir, args.epoch, args.avg)
    out = save_averaged(paths, args.out)
    logging.info("wrote %s (average of %s)", out, ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    sys.exit(main())
