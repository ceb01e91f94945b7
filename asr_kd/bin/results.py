"""Summarise a recipe's ``results.json`` into RESULTS.md and a WER-against-latency plot.

Example (stage 9 of egs/synth/ASR/run.sh)::

    python -m asr_kd.bin.results --results-json exp/small/results.json \\
        --test-sets dev test_seen test_heldout --out-md exp/small/RESULTS.md \\
        --out-png exp/small/wer_vs_latency.png --exp-dir exp/small \\
        --bootstrap stage2:baseline --bootstrap-setting greedy-streaming \\
        --header "command: bash run.sh --preset small"

``--bootstrap A:B`` adds, for every test set, the paired-bootstrap 95%
interval of WER(A) - WER(B) from ``<exp-dir>/<model>/decode/recogs-<set>-<setting>*-<model>.txt``
(decoded with the same setting by stage 8).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

log = logging.getLogger("asr_kd.results")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asr_kd.bin.results", description=__doc__.split("\n")[0])
    p.add_argument("--results-json", type=Path, required=True)
    p.add_argument("--test-sets", nargs="+", required=True, help="evaluation sets, in table order")
    p.add_argument("--out-md", type=Path, required=True)
    p.add_argument("--out-png", type=Path, required=True)
    p.add_argument("--exp-dir", type=Path, default=None, help="where <model>/decode/recogs-* live (bootstrap)")
    p.add_argument("--bootstrap", nargs="*", default=[], help="model pairs A:B for the paired bootstrap")
    p.add_argument("--bootstrap-setting", default="greedy-streaming",
                   help="decoding setting prefix of the recogs files to compare (default %(default)s)")
    p.add_argument("--header", action="append", default=[], help="a line for the top of RESULTS.md (repeatable)")
    return p


def _recogs(exp_dir: Path, model: str, test_set: str, setting: str) -> Optional[Path]:
    found = sorted((exp_dir / model / "decode").glob(f"recogs-{test_set}-{setting}*.txt"))
    return found[0] if found else None


def bootstrap_lines(exp_dir: Path, pairs: Sequence[str], test_sets: Sequence[str], setting: str) -> Dict[str, str]:
    """'A vs B on set' -> summary line, for every pair and set whose recogs files exist."""
    from asr_kd.metrics.bootstrap import paired_bootstrap_from_recogs
    from asr_kd.metrics.wer import read_recogs

    out: Dict[str, str] = {}
    for pair in pairs:
        if ":" not in pair:
            raise ValueError(f"--bootstrap expects A:B model pairs, got {pair!r}")
        a, b = pair.split(":", 1)
        for ts in test_sets:
            fa, fb = _recogs(exp_dir, a, ts, setting), _recogs(exp_dir, b, ts, setting)
            if fa is None or fb is None:
                log.warning("bootstrap %s vs %s on %s: no %s recogs file (%s, %s); skipped", a, b, ts, setting, fa, fb)
                continue
            res = paired_bootstrap_from_recogs(read_recogs(fa), read_recogs(fb), num_samples=1000, seed=0)
            out[f"{a} vs {b}, {ts} ({fa.name.removeprefix(f'recogs-{ts}-').removesuffix('.txt')})"] = \
                res.summary(a, b)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from asr_kd.metrics.results import read_results_json
    from asr_kd.metrics.summary import write_summary

    try:
        rows: List[dict] = read_results_json(args.results_json)
        if not rows:
            raise ValueError(f"{args.results_json} holds no rows")
        boot = None
        if args.bootstrap:
            if args.exp_dir is None:
                raise ValueError("--bootstrap needs --exp-dir")
            boot = bootstrap_lines(args.exp_dir, args.bootstrap, args.test_sets, args.bootstrap_setting)
        md, png = write_summary(rows, args.test_sets, args.out_md, args.out_png, header_lines=args.header,
                                bootstrap=boot)
    except (ValueError, FileNotFoundError) as e:
        print(f"results: error: {e}", file=sys.stderr)
        return 1
    log.info("wrote %s and %s", md, png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
