"""Export a checkpoint to ONNX files that sherpa-onnx loads.

A chunk-wise (causal) student becomes a streaming model for
``sherpa_onnx.OnlineRecognizer.from_transducer`` (online model type
``conformer`` or ``zipformer2``, from the checkpoint's encoder type); a
full-context teacher becomes an offline model for
``sherpa_onnx.OfflineRecognizer.from_transducer``.  Written into --out-dir:
``encoder.onnx``, ``decoder.onnx``, ``joiner.onnx``, ``tokens.txt`` and, with
--int8, ``encoder.int8.onnx``, ``decoder.int8.onnx``, ``joiner.int8.onnx``.
The work is ``asr_kd.export.checkpoint_export.export_checkpoint``; see docs/deploy.md.

Example::

    python -m asr_kd.bin.export_onnx --checkpoint exp/student/pretrained.pt \\
        --out-dir exp/student/onnx --int8
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from asr_kd.bin._entry import run_tool

log = logging.getLogger("asr_kd.export")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asr_kd.bin.export_onnx", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="checkpoint file (training, epoch-N.pt or pretrained.pt); required")
    p.add_argument("--out-dir", type=Path, required=True,
                   help="output directory (created if missing); required")
    p.add_argument("--bpe-model", type=Path, default=None,
                   help="sentencepiece model for tokens.txt (default: the one recorded in the checkpoint)")
    p.add_argument("--chunk-ms", type=int, default=None,
                   help="streaming students: chunk size in ms, a positive multiple of 40 "
                        "(Zipformer: of 160 with downsampling factors up to 8) "
                        "(default: the model's first training chunk size)")
    p.add_argument("--left-context-ms", type=int, default=None,
                   help="streaming students: attention left context in ms, a positive multiple of 40 "
                        "(Zipformer: of 160 with downsampling factors up to 8) "
                        "(default: the model's first training left context; unlimited (-1) cannot be exported)")
    p.add_argument("--int8", action="store_true",
                   help="also write dynamically quantised *.int8.onnx copies (default: off)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The tool: export, log what was written; a user error is one line on stderr and exit status 2."""
    return run_tool("export_onnx", _export, argv)


def _export(argv: Optional[Sequence[str]]) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from asr_kd.export.checkpoint_export import export_checkpoint  # local: --help stays fast (no torch)

    summary = export_checkpoint(args.checkpoint, args.out_dir, bpe_model=args.bpe_model, chunk_ms=args.chunk_ms,
                                left_context_ms=args.left_context_ms, int8=args.int8)
    log.info("wrote %s into %s", ", ".join(summary["files"]), args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
