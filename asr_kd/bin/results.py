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

With ``--exp-dir``, every run directory ``<exp-dir>/<model>`` trained with
output KD (``--kd-stage output`` or ``joint``) gets a row in the section
"Stage-2 smoothing statistics": KD loss per frame, teacher entropy before and
after smoothing, target entropy, mean alpha, share at alpha_min and coverage,
first -> last epoch, from ``<model>/train_stats.json`` (or, for older runs, the
``train_metrics`` of its epoch checkpoints), plus a sentence per model saying
whether smoothing changed the teacher's entropy. The same numbers go to
``--kd-stats-json`` (default ``<out-md dir>/kd_stats.json``; a JSON list, one
object per KD model; written whenever ``--exp-dir`` is given, ``[]`` when no
KD model exists, and the section is then omitted). Format and definitions:
``asr_kd.metrics.train_stats``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from asr_kd.bin._entry import run_tool

log = logging.getLogger("asr_kd.results")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asr_kd.bin.results", description=__doc__.split("\n")[0],
                                epilog=__doc__.split("\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results-json", type=Path, required=True,
                   help="results.json written by asr_kd.bin.decode (required)")
    p.add_argument("--test-sets", nargs="+", required=True, help="evaluation sets, in table order (required)")
    p.add_argument("--out-md", type=Path, required=True, help="output RESULTS.md (required)")
    p.add_argument("--out-png", type=Path, required=True,
                   help="output WER-against-latency plot, PNG (required)")
    p.add_argument("--exp-dir", type=Path, default=None,
                   help="where the model directories live: <model>/decode/recogs-* (bootstrap) and "
                        "<model>/train_stats.json (Stage-2 smoothing statistics of output-KD models); "
                        "default: none (no bootstrap, no statistics section)")
    p.add_argument("--kd-stats-json", type=Path, default=None,
                   help="where the output-KD training statistics go as JSON (needs --exp-dir; "
                        "default: kd_stats.json next to --out-md)")
    p.add_argument("--bootstrap", nargs="*", default=[], help="model pairs A:B for the paired bootstrap (needs --exp-dir; default: none)")
    p.add_argument("--bootstrap-setting", default="greedy-streaming",
                   help="decoding setting prefix of the recogs files to compare (default: %(default)s)")
    p.add_argument("--header", action="append", default=[], help="a line for the top of RESULTS.md (repeatable; default: none)")
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


def kd_section(exp_dir: Path, out_json: Path) -> List[str]:
    """Markdown lines of "Stage-2 smoothing statistics" ([] without KD models); writes ``out_json``."""
    import json

    from asr_kd.atomic import atomic_write_text
    from asr_kd.metrics.train_stats import kd_stats_records, render_kd_section, summarize_kd_runs

    if not exp_dir.is_dir():
        raise FileNotFoundError(f"--exp-dir {exp_dir} is not a directory")
    summaries = summarize_kd_runs(exp_dir)
    atomic_write_text(out_json, json.dumps(kd_stats_records(summaries), indent=1) + "\n")
    log.info("output-KD statistics of %d model(s) (%s) -> %s", len(summaries),
             ", ".join(s.model for s in summaries) or "none", out_json)
    return render_kd_section(summaries)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The tool; a user error is one line on stderr (``results: error: ...``) and exit status 2."""
    return run_tool("results", _results, argv)


def _results(argv: Optional[Sequence[str]]) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from asr_kd.metrics.results import read_results_json
    from asr_kd.metrics.summary import write_summary

    rows: List[dict] = read_results_json(args.results_json)
    if not rows:
        raise ValueError(f"{args.results_json} holds no rows")
    boot = None
    if args.bootstrap:
        if args.exp_dir is None:
            raise ValueError("--bootstrap needs --exp-dir")
        boot = bootstrap_lines(args.exp_dir, args.bootstrap, args.test_sets, args.bootstrap_setting)
    extra: List[str] = []
    if args.exp_dir is not None:
        extra = kd_section(args.exp_dir, args.kd_stats_json or args.out_md.with_name("kd_stats.json"))
    elif args.kd_stats_json is not None:
        raise ValueError("--kd-stats-json needs --exp-dir")
    md, png = write_summary(rows, args.test_sets, args.out_md, args.out_png, header_lines=args.header,
                            bootstrap=boot, extra_lines=extra)
    log.info("wrote %s and %s", md, png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
