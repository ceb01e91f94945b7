#!/usr/bin/env python3
"""Benchmark true streaming decoding: RTF at a given thread count, and the latency the
streaming pipeline itself adds to the first token.

    python tools/bench_decode.py                        # default student (model size "small"), random init
    python tools/bench_decode.py --checkpoint exp/student/epoch-30.pt --num-streams 1 8

Measured (one process, ``torch.set_num_threads(--num-threads)``):

* RTF = wall time of (online fbank + encoder.streaming_forward + greedy search)
  / audio seconds, for 1 stream fed in ``--piece-ms`` pieces (what a server pays
  per live connection) and for N streams decoded as one batch;
* per-chunk compute time of a single stream (mean, P90): the delay computation
  adds before a chunk's tokens can be shown.

Stated (from the definitions in ``asr_kd/decode/timing.py``):

* look-ahead: a chunk ending at ``(c+1)·K·40 ms`` of audio is only decodable
  ``37.5 ms`` later (3 feature frames of subsampling look-ahead minus one hop,
  plus half a hop and half a 25 ms window);
* a word starting at a uniformly random time inside a chunk waits on average
  half a chunk for the chunk to end.

So the pipeline's own first-token latency overhead is
``K·40/2 + 37.5 + compute`` ms on average (the model's own emission delay comes
on top and is what ``first_token_latency_ms`` in ``results.json`` measures).

A random-init model's emission rate is not a trained model's: ``--token-rate``
biases the joiner's blank logit so that about that fraction of frames emit a
token (greedy search work grows with emissions); the rate actually obtained is
printed. Timings on shared 2-core machines are noisy: run ``--repeat`` times and
the best run is reported along with the spread.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr_kd.decode.streaming import StreamingDecoder  # noqa: E402
from asr_kd.decode.timing import chunk_latency_overhead_ms  # noqa: E402


def synthetic_audio(seconds: float, seed: int) -> np.ndarray:
    """Tone bursts in noise, 16 kHz float32 (content does not matter for speed)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000.0
    f = 200 + 600 * (np.floor(t * 3) % 5) / 5
    x = 0.2 * np.sin(2 * np.pi * f * t) * (np.sin(2 * np.pi * 1.5 * t) > -0.3)
    return (x + 0.01 * rng.standard_normal(n)).astype(np.float32)


def build_model(args: argparse.Namespace) -> torch.nn.Module:
    if args.checkpoint:
        from asr_kd.models.checkpoint import load_model

        return load_model([Path(p) for p in args.checkpoint], "cpu")  # several: their average
    from asr_kd.models import build_transducer, preset_config

    torch.manual_seed(0)
    return build_transducer(preset_config(args.preset, "student", vocab_size=args.vocab_size)).eval()


@torch.no_grad()
def calibrate_blank(model: torch.nn.Module, audio: np.ndarray, chunk: int, left: int, rate: float) -> None:
    """Shift the blank bias so that greedy emits on about ``rate`` of the frames."""
    from asr_kd.data.features import compute_online_fbank

    feats = compute_online_fbank(audio[: 16000 * 10])[None]
    enc = model.encoder(feats, torch.tensor([feats.size(1)]), chunk_size=chunk, left_context=left).out[0]
    ctx = torch.zeros(1, model.decoder.context_size, dtype=torch.int64)
    dec = model.joiner.decoder_proj(model.decoder(ctx, need_pad=False)[:, 0])
    z = model.joiner(model.joiner.encoder_proj(enc), dec, project_input=False)
    margin = z[:, model.blank_id] - z[:, 1:].max(-1).values
    model.joiner.output_linear.bias[model.blank_id] -= torch.quantile(margin, rate)


def run_single(dec: StreamingDecoder, audio: np.ndarray, piece: int) -> Dict[str, float]:
    s = dec.create_stream("bench")
    chunk_times: List[float] = []
    t0 = time.perf_counter()
    for start in range(0, audio.size, piece):
        s.accept_waveform(audio[start:start + piece])
        while True:
            c0 = time.perf_counter()
            if not dec.step([s]):
                break
            chunk_times.append(time.perf_counter() - c0)
    s.input_finished()
    dec.decode_ready([s])
    wall = time.perf_counter() - t0
    res = s.result()
    frames = s.encoder_frames
    return {
        "rtf": wall / (audio.size / 16000.0),
        "chunk_ms_mean": 1000 * statistics.fmean(chunk_times),
        "chunk_ms_p90": 1000 * float(np.percentile(chunk_times, 90)),
        "tokens": len(res.tokens),
        "token_frame_rate": len(set(res.frames)) / max(frames, 1),
    }


def run_batch(dec: StreamingDecoder, audios: List[np.ndarray]) -> float:
    t0 = time.perf_counter()
    dec.decode_waveforms(audios, piece_samples=16000)
    wall = time.perf_counter() - t0
    return wall / (sum(a.size for a in audios) / 16000.0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-size", dest="preset", default="small", help="student model size when no --checkpoint (default: small)")
    p.add_argument("--vocab-size", type=int, default=500)
    p.add_argument("--checkpoint", nargs="+", default=None)
    p.add_argument("--chunk-ms", type=int, default=None, help="default: the model's chunk")
    p.add_argument("--left-context-ms", type=int, default=None, help="default: the model's")
    p.add_argument("--seconds", type=float, default=30.0, help="audio per stream")
    p.add_argument("--piece-ms", type=int, default=100, help="single stream: audio piece size")
    p.add_argument("--num-streams", type=int, nargs="+", default=[8])
    p.add_argument("--num-threads", type=int, default=1)
    p.add_argument("--token-rate", type=float, default=0.3, help="random model: frames emitting")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    torch.set_num_threads(args.num_threads)
    model = build_model(args)
    cfg = model.encoder.cfg
    chunk = args.chunk_ms // 40 if args.chunk_ms else cfg.chunk_sizes[0]
    left = (args.left_context_ms // 40 if args.left_context_ms not in (None, -1) else
            -1 if args.left_context_ms == -1 else cfg.left_contexts[0])
    audio = synthetic_audio(args.seconds, 0)
    if not args.checkpoint:
        calibrate_blank(model, audio, chunk, left, args.token_rate)
    dec = StreamingDecoder(model, chunk, left, "greedy")
    dec.decode_waveforms([audio[:16000]])  # warm-up
    singles = [run_single(dec, audio, int(args.piece_ms * 16)) for _ in range(args.repeat)]
    best = min(singles, key=lambda r: r["rtf"])
    batch = {n: [run_batch(dec, [synthetic_audio(args.seconds, i) for i in range(n)])
                 for _ in range(args.repeat)] for n in args.num_streams}
    params = sum(p.numel() for p in model.parameters())
    lookahead = chunk_latency_overhead_ms(chunk, encoder=model.encoder)
    out = {
        "model": args.checkpoint or f"{args.preset} student (random init, {params / 1e6:.2f} M params)",
        "chunk_ms": chunk * 40, "chunk_feature_frames": chunk * 4, "left_context_ms": left * 40 if left >= 0 else -1,
        "num_threads": args.num_threads, "audio_s_per_stream": args.seconds,
        "single_stream_rtf_best": round(best["rtf"], 4),
        "single_stream_rtf_all": [round(r["rtf"], 4) for r in singles],
        "chunk_compute_ms_mean": round(best["chunk_ms_mean"], 2),
        "chunk_compute_ms_p90": round(best["chunk_ms_p90"], 2),
        "token_frame_rate": round(best["token_frame_rate"], 3),
        "batched_rtf_best": {str(n): round(min(v), 4) for n, v in batch.items()},
        "lookahead_ms": lookahead,
        "mean_wait_for_chunk_end_ms": chunk * 40 / 2,
        "first_token_pipeline_overhead_ms": round(chunk * 40 / 2 + lookahead + best["chunk_ms_mean"], 1),
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
