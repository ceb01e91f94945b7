#!/usr/bin/env python3
"""Benchmark an exported streaming student: sherpa-onnx fp32 / int8 against PyTorch streaming.

Either encoder type: a Conformer export (sherpa-onnx model type
``conformer``) or a Zipformer export (``zipformer2``); the type, chunk and
left context are read from the export's encoder metadata.

Same setup on every side: one live stream at a time, audio fed in pieces of
--piece-ms, features computed incrementally (kaldi-native-fbank inside
sherpa-onnx; asr_kd's OnlineFbank in PyTorch), one thread, greedy search,
every utterance followed by --tail-silence-s of zeros (default: one chunk
+ the encoder's look-ahead beyond the chunk + 70 ms, i.e. chunk + 0.1 s for
the Conformer (30 ms look-ahead) and chunk + 0.2 s for the Zipformer
(130 ms)) and decoded with the
sherpa-onnx end-of-stream rule (PyTorch ``StreamingDecoder(tail="drop")``).

Reports, as JSON on stdout (and --out if given):

* rtf per runtime: wall-clock decoding time / seconds of audio fed
  (tail silence included);
* wer per runtime on the cuts' supervisions;
* identical_to_pytorch: utterances whose fp32 / int8 token sequence equals
  the PyTorch one;
* int8_vs_fp32: WER difference (points) and speed ratio.

Example::

    python tools/bench_onnx.py --checkpoint exp/student/pretrained.pt \\
        --cuts data/fbank/cuts_test.jsonl.gz --onnx-dir exp/student/onnx
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/bench_onnx.py", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="student checkpoint (required)")
    p.add_argument("--cuts", type=Path, required=True, help="lhotse cuts manifest with audio (required)")
    p.add_argument("--onnx-dir", type=Path, required=True,
                   help="export directory; exported here (fp32 + int8) when encoder.int8.onnx is missing (required)")
    p.add_argument("--bpe-model", type=Path, default=None,
                   help="sentencepiece model (default: the one recorded in the checkpoint)")
    p.add_argument("--chunk-ms", type=int, default=None,
                   help="chunk size for a fresh export, multiple of 40 (default: the model's)")
    p.add_argument("--left-context-ms", type=int, default=None,
                   help="left context for a fresh export, multiple of 40 (default: the model's)")
    p.add_argument("--piece-ms", type=int, default=100,
                   help="audio is fed to each stream in pieces of this many ms (default %(default)s)")
    p.add_argument("--tail-silence-s", type=float, default=None,
                   help="zeros appended to every utterance, on every side "
                        "(default: the exported chunk + the encoder's look-ahead + 70 ms, enough to decode "
                        "the speech at the end)")
    p.add_argument("--num-threads", type=int, default=1, help="threads for every runtime (default %(default)s)")
    p.add_argument("--max-cuts", type=int, default=None, help="use only the first N cuts (default: all)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON report here (default: none)")
    return p


def _machine() -> str:
    """CPU model and core count (Linux /proc/cpuinfo when readable)."""
    import os

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} logical cores, {platform.system()}"


def _timed(decode: Callable[[np.ndarray], list], waves: Sequence[np.ndarray]) -> tuple[list, float]:
    hyps, t0 = [], time.perf_counter()
    for w in waves:
        hyps.append(decode(w))
    return hyps, time.perf_counter() - t0


def run(args: argparse.Namespace) -> dict:
    import torch
    from lhotse import CutSet

    from asr_kd.data.tokenizer import Tokenizer
    from asr_kd.decode import StreamingDecoder
    from asr_kd.export import sherpa
    from asr_kd.export.metadata import read_metadata
    from asr_kd.metrics.wer import corpus_wer
    from asr_kd.export.checkpoint_export import export_checkpoint
    from asr_kd.models.checkpoint import checkpoint_bpe_model, load_model

    torch.set_num_threads(args.num_threads)
    if not args.cuts.is_file():
        raise FileNotFoundError(f"--cuts {args.cuts}: file not found")
    if not (args.onnx_dir / "encoder.int8.onnx").is_file():
        summary = export_checkpoint(args.checkpoint, args.onnx_dir, bpe_model=args.bpe_model, chunk_ms=args.chunk_ms,
                                    left_context_ms=args.left_context_ms, int8=True)
        if summary["kind"] != "streaming":
            raise ValueError(f"--checkpoint {args.checkpoint}: not a streaming student")
    meta = read_metadata(args.onnx_dir / "encoder.onnx")
    k, lc = int(meta["chunk_size_encoder_frames"]), int(meta["left_context_encoder_frames"])
    look_ahead_s = 0.01 * (int(meta["T"]) - int(meta["decode_chunk_len"]))  # feature frames beyond the chunk
    model = load_model(args.checkpoint)
    tok = Tokenizer(args.bpe_model or checkpoint_bpe_model(args.checkpoint))

    cuts = list(CutSet.from_file(args.cuts))[: args.max_cuts]
    tail_s = args.tail_silence_s if args.tail_silence_s is not None else 0.04 * k + look_ahead_s + 0.07
    tail = np.zeros(int(round(tail_s * 16000)), np.float32)
    waves = [np.concatenate([c.load_audio()[0].astype(np.float32), tail]) for c in cuts]
    refs = [" ".join(s.text for s in c.supervisions).split() for c in cuts]
    seconds = sum(w.size for w in waves) / 16000.0
    piece = int(args.piece_ms * 16)

    ids = sherpa.read_token_ids(args.onnx_dir / "tokens.txt")
    ours = StreamingDecoder(model, k, lc, tail="drop")
    runtimes: dict[str, Callable[[np.ndarray], list]] = {
        "pytorch": lambda w: ours.decode_waveforms([w], piece_samples=piece)[0].tokens,
    }
    for name, int8 in (("sherpa_fp32", False), ("sherpa_int8", True)):
        rec = sherpa.online_recognizer(args.onnx_dir, int8=int8, num_threads=args.num_threads)
        runtimes[name] = (lambda r: lambda w: sherpa.decode_online(r, w, ids, piece_samples=piece))(rec)

    report: dict = {
        "checkpoint": str(args.checkpoint), "model_type": meta["model_type"], "cuts": str(args.cuts),
        "num_cuts": len(cuts),
        "audio_s": round(seconds, 2), "chunk_ms": 40 * k, "left_context_ms": 40 * lc,
        "num_threads": args.num_threads, "piece_ms": args.piece_ms, "tail_silence_s": round(tail_s, 3),
        "machine": _machine(),
        "runtimes": {},
    }
    hyps_by = {}
    for name, decode in runtimes.items():
        decode(waves[0])  # warm-up (allocations, lazy initialisation)
        hyps, secs = _timed(decode, waves)
        hyps_by[name] = hyps
        wer = corpus_wer((r, tok.decode(h).split()) for r, h in zip(refs, hyps))
        report["runtimes"][name] = {"rtf": round(secs / seconds, 4), "wer": round(wer.wer, 2),
                                    "errors": wer.errors, "ref_words": wer.ref_len}
    for name in ("sherpa_fp32", "sherpa_int8"):
        same = sum(a == b for a, b in zip(hyps_by[name], hyps_by["pytorch"]))
        report["runtimes"][name]["identical_to_pytorch"] = f"{same}/{len(cuts)}"
    r = report["runtimes"]
    report["int8_vs_fp32"] = {
        "wer_diff_points": round(r["sherpa_int8"]["wer"] - r["sherpa_fp32"]["wer"], 2),
        "int8_rtf_over_fp32_rtf": round(r["sherpa_int8"]["rtf"] / max(r["sherpa_fp32"]["rtf"], 1e-9), 3),
        "int8_rtf_over_pytorch_rtf": round(r["sherpa_int8"]["rtf"] / max(r["pytorch"]["rtf"], 1e-9), 3),
    }
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        report = run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"bench_onnx: error: {e}", file=sys.stderr)
        return 1
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
