"""Is system A really better than system B? Paired bootstrap on two recogs files.

    python -m asr_kd.bin.compare exp/kd/decode/recogs-test-greedy-streaming-chunk640ms-left2560ms-kd.txt \\
        exp/baseline/decode/recogs-test-greedy-streaming-chunk640ms-left2560ms-baseline.txt \\
        --name-a kd --name-b baseline

Both files must hold the same utterances with the same references (the
``recogs-*.txt`` written by ``asr_kd.bin.decode``). Prints both WERs, the
difference A − B in points and its 95% interval from a seeded paired
bootstrap over utterances (``asr_kd.metrics.bootstrap``); ``--json`` also
writes the numbers to a file. Exit status 0 (also when the difference is not
significant), 1 on bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from asr_kd.bin._entry import run_tool


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asr_kd.bin.compare", description=__doc__.split("\n")[0],
                                formatter_class=argparse.HelpFormatter)
    p.add_argument("recogs_a", type=Path, help="recogs-*.txt of system A (required)")
    p.add_argument("recogs_b", type=Path, help="recogs-*.txt of system B (required)")
    p.add_argument("--name-a", default="A", help="name of system A in the output (default: %(default)s)")
    p.add_argument("--name-b", default="B", help="name of system B in the output (default: %(default)s)")
    p.add_argument("--num-samples", type=int, default=1000, help="bootstrap replicates (default: %(default)s)")
    p.add_argument("--confidence", type=float, default=0.95,
                   help="confidence level of the interval (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap (default: %(default)s)")
    p.add_argument("--json", type=Path, default=None, help="also write the result as JSON here (default: none, print only)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The tool; a user error is one line on stderr (``compare: error: ...``) and exit status 2."""
    return run_tool("compare", _compare, argv)


def _compare(argv: Optional[Sequence[str]]) -> int:
    args = get_parser().parse_args(argv)
    from asr_kd.atomic import atomic_write_text
    from asr_kd.metrics.bootstrap import paired_bootstrap_from_recogs
    from asr_kd.metrics.wer import read_recogs

    a = read_recogs(args.recogs_a)
    b = read_recogs(args.recogs_b)
    res = paired_bootstrap_from_recogs(a, b, num_samples=args.num_samples,
                                       confidence=args.confidence, seed=args.seed)
    print(res.summary(args.name_a, args.name_b))
    if args.json is not None:
        d = res.to_dict()
        d.update(name_a=args.name_a, name_b=args.name_b, recogs_a=str(args.recogs_a),
                 recogs_b=str(args.recogs_b))
        atomic_write_text(args.json, json.dumps(d, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
