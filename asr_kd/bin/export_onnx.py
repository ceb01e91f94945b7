"""Export a checkpoint to ONNX files that sherpa-onnx loads.

A chunk-wise (causal) student becomes a streaming model for
``sherpa_onnx.OnlineRecognizer.from_transducer`` (online model type
``conformer`` or ``zipformer2``, from the checkpoint's encoder type); a
full-context teacher becomes an offline model for
``sherpa_onnx.OfflineRecognizer.from_transducer``.  Written into --out-dir:
``encoder.onnx``, ``decoder.onnx``, ``joiner.onnx``, ``tokens.txt`` and, with
--int8, ``encoder.int8.onnx``, ``decoder.int8.onnx``, ``joiner.int8.onnx``.
See docs/deploy.md.

Example::

    python -m asr_kd.bin.export_onnx --checkpoint exp/student/pretrained.pt \\
        --out-dir exp/student/onnx --int8
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

log = logging.getLogger("asr_kd.export")

FRAME_MS = 40  # one encoder frame


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


def ms_to_frames(ms: int, option: str) -> int:
    """Milliseconds -> encoder frames; a clear error unless a positive multiple of 40."""
    if ms <= 0 or ms % FRAME_MS:
        raise ValueError(f"{option} must be a positive multiple of {FRAME_MS} ms, got {ms}")
    return ms // FRAME_MS


def _bpe_from_checkpoint(path: Path) -> Optional[Path]:
    import torch

    ck = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    bpe = ck.get("bpe_model") if isinstance(ck, dict) else None
    return Path(bpe) if bpe else None


def run(args: argparse.Namespace) -> dict:
    """Do the export; returns a summary dict (also written as export.json)."""
    import torch

    from asr_kd.export.metadata import write_tokens
    from asr_kd.export.onnx_offline import export_offline
    from asr_kd.export.onnx_streaming import export_streaming
    from asr_kd.export.onnx_zipformer import export_zipformer_streaming, required_multiple
    from asr_kd.export.quantize import quantize_int8
    from asr_kd.train.checkpoint import load_model

    torch.set_num_threads(1)
    if not args.checkpoint.is_file():
        raise FileNotFoundError(f"--checkpoint {args.checkpoint}: file not found")
    bpe = args.bpe_model or _bpe_from_checkpoint(args.checkpoint)
    if bpe is None:
        raise ValueError(f"--bpe-model not given and {args.checkpoint} records no BPE model")
    if not Path(bpe).is_file():
        raise FileNotFoundError(f"--bpe-model {bpe}: file not found")
    model = load_model(args.checkpoint)
    encoder_type = model.config.encoder_type
    cfg = model.encoder.cfg
    args.out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict = {"checkpoint": str(args.checkpoint), "bpe_model": str(bpe), "encoder_type": encoder_type}
    if cfg.causal:
        # the Zipformer's stacks need K and L divisible by their downsampling (160 ms for factors up to 8)
        step_ms = FRAME_MS * (required_multiple(cfg) if encoder_type == "zipformer" else 1)
        k = ms_to_frames(args.chunk_ms, "--chunk-ms") if args.chunk_ms is not None else (
            cfg.chunk_sizes[0] if cfg.chunk_sizes else 0)
        if k <= 0:
            raise ValueError(f"{args.checkpoint}: the model has no default chunk size; pass --chunk-ms")
        if args.left_context_ms is not None:
            if args.left_context_ms == -1:
                raise ValueError("--left-context-ms -1 (unlimited) cannot be exported: "
                                 "sherpa-onnx needs fixed-size caches")
            lc = ms_to_frames(args.left_context_ms, "--left-context-ms")
        else:
            lc = cfg.left_contexts[0] if cfg.left_contexts else -1
            if lc < 0:
                raise ValueError(f"{args.checkpoint}: the student was trained with unlimited left context, "
                                 f"which cannot be exported; pass --left-context-ms (a multiple of {step_ms})")
        export = export_zipformer_streaming if encoder_type == "zipformer" else export_streaming
        paths = export(model, args.out_dir, k, lc)
        summary.update(kind="streaming", chunk_ms=k * FRAME_MS, left_context_ms=lc * FRAME_MS)
    else:
        if args.chunk_ms is not None or args.left_context_ms is not None:
            raise ValueError("--chunk-ms / --left-context-ms apply to streaming exports only "
                             f"({args.checkpoint} is exported offline)")
        paths = export_offline(model, args.out_dir)
        summary.update(kind="offline")
    write_tokens(bpe, args.out_dir / "tokens.txt", int(model.vocab_size))
    files = [p.name for p in paths.values()] + ["tokens.txt"]
    if args.int8:
        files += [quantize_int8(p).name for p in paths.values()]
    summary["files"] = files
    (args.out_dir / "export.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        summary = run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"export_onnx: error: {e}", file=sys.stderr)
        return 1
    log.info("wrote %s into %s", ", ".join(summary["files"]), args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
