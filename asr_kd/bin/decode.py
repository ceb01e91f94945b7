"""Decode a lhotse CutSet with a transducer checkpoint and score WER and latency.

Example (one row per chunk size: a WER-against-latency curve from one command)::

    python -m asr_kd.bin.decode --exp-dir exp/student --epoch 30 --avg 5 \\
        --cuts data/fbank/cuts_test.jsonl.gz --method greedy --mode streaming \\
        --chunk-sizes-ms 320 640 1280 --out-dir exp/student/decode --model-name student

Writes, per configuration, ``recogs-/errs-/wer-summary-<test_set>-<setting>-<model>.txt`` and ``timings-<test_set>-<setting>-<model>.jsonl``
into ``--out-dir`` and inserts/updates the matching row of ``results.json``
(``--results-json``, default ``<out-dir>/results.json``). See
``asr_kd.metrics.results`` for the row schema and ``asr_kd.decode.timing`` for
the time definitions. Decoding the same set twice gives byte-identical result
files; in ``results.json`` only ``rtf`` (wall clock) changes.

A cut whose audio cannot be read (missing or corrupt file) is named in a
warning, decoded as an empty hypothesis and counted in the row's
``num_empty_by_bad_audio``; ``--strict`` makes it an error instead.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from asr_kd.bin._entry import run_tool
from asr_kd.models.checkpoint import checkpoint_bpe_model, load_model
from asr_kd.models.units import FEATURE_MS, FRAME_MS, ms_to_frames

log = logging.getLogger("asr_kd.decode")


def get_parser() -> argparse.ArgumentParser:
    from asr_kd.options import add_refused_option, mapped_value

    # allow_abbrev=False: a prefix such as --left-context must not silently pick --left-context-ms
    p = argparse.ArgumentParser(prog="python -m asr_kd.bin.decode", description=__doc__.split("\n")[0],
                                allow_abbrev=False)
    g = p.add_argument_group("model")
    g.add_argument("--checkpoint", nargs="+", type=Path, default=None,
                   help="checkpoint file(s); several are averaged (default: none; give this or --exp-dir with --epoch)")
    g.add_argument("--exp-dir", type=Path, default=None,
                   help="with --epoch: use <exp-dir>/epoch-<n>.pt checkpoints (default: none)")
    g.add_argument("--epoch", type=int, default=None, help="last epoch to use (with --exp-dir; default: none)")
    g.add_argument("--avg", type=int, default=1,
                   help="average the checkpoints of epochs epoch-avg+1 .. epoch (with --exp-dir) (default: %(default)s)")
    g.add_argument("--bpe-model", type=Path, default=None,
                   help="sentencepiece model (default: the one recorded in the checkpoint)")
    g.add_argument("--model-name", default=None,
                   help="row name, also part of the output file names (default: exp dir / checkpoint stem)")
    g.add_argument("--device", default="auto",
                   help="auto | cpu | cuda[:n]; auto: cuda when a GPU is visible, else cpu (default: %(default)s)")
    g = p.add_argument_group("data")
    g.add_argument("--cuts", type=Path, required=True, help="lhotse CutSet manifest with audio (required)")
    g.add_argument("--test-set-name", default=None, help="test set name in rows and file names (default: the manifest's name)")
    g = p.add_argument_group("decoding")
    g.add_argument("--method", choices=("greedy", "modified_beam_search"), default="greedy",
                   help="search method (default: %(default)s)")
    g.add_argument("--decoding-method", dest="method",
                   type=mapped_value({"greedy_search": "greedy", "modified_beam_search": "modified_beam_search"},
                                     "--decoding-method"),
                   help="icefall's spelling of --method: greedy_search or modified_beam_search (default: --method's)")
    g.add_argument("--beam", "--beam-size", dest="beam", type=int, default=4,
                   help="beam size of modified_beam_search; --beam-size is icefall's spelling (default: %(default)s)")
    g.add_argument("--max-sym-per-frame", type=int, default=1, help="greedy: most tokens one frame may emit (default: %(default)s)")
    g.add_argument("--mode", choices=("offline", "simulated-streaming", "streaming"), default="offline",
                   help="offline (full context), simulated-streaming (chunk masks on whole utterances) or "
                        "streaming (chunk by chunk with caches) (default: %(default)s)")
    g.add_argument("--chunk-sizes-ms", nargs="+", default=None,
                   help="chunk sizes in ms (multiples of 40), e.g. 320 640 or 320,640; "
                        "(default: the model's first training chunk size)")
    g.add_argument("--left-context-ms", dest="left_context_ms", type=int, default=None,
                   help="left context in ms (multiple of 40; -1 = unlimited) (default: the model's first training "
                        "left context)")
    # the unit-less spellings (icefall's 20 ms frames, older training commands' 40 ms
    # encoder frames) would silently mean something else here
    add_refused_option(g, "--left-context", "decoding takes milliseconds: --left-context-ms MS "
                                            "(32 encoder frames = --left-context-ms 1280)")
    add_refused_option(g, "--chunk-size", "decoding takes milliseconds: --chunk-sizes-ms MS ... "
                                          "(8 encoder frames = --chunk-sizes-ms 320; icefall's --chunk-size 16 "
                                          "at 50 Hz = 320 ms)")
    g.add_argument("--max-duration", type=float, default=200.0,
                   help="offline/simulated: seconds of audio per batch (default: %(default)s)")
    g.add_argument("--num-streams", type=int, default=32, help="streaming: streams decoded together (default: %(default)s)")
    g.add_argument("--num-threads", type=int, default=1, help="torch threads, stated in the rows (default: %(default)s)")
    g = p.add_argument_group("latency references")
    g.add_argument("--align-checkpoint", nargs="+", type=Path, default=None,
                   help="fallback when the corpus has no word alignments: forced-align the "
                        "transcripts with this model (favours students copying its timing) (default: none, the "
                        "corpus alignments)")
    g = p.add_argument_group("output")
    g.add_argument("--out-dir", type=Path, required=True,
                   help="directory for the recogs/errs/wer-summary/timings files (required)")
    g.add_argument("--results-json", type=Path, default=None, help="results file to insert/update the rows in (default: <out-dir>/results.json)")
    g.add_argument("--no-progress", action="store_true", help="no tqdm progress bar (flag; default: off, the bar is shown)")
    g.add_argument("--strict", action="store_true",
                   help="stop at the first cut whose audio cannot be read (default: name it in the log, "
                        "decode it as an empty hypothesis and count it in num_empty_by_bad_audio)")
    return p


def parse_ms_list(values: Optional[Sequence[str]]) -> Optional[List[int]]:
    """['320', '640,1280'] -> [320, 640, 1280]."""
    if values is None:
        return None
    out = []
    for v in values:
        for part in str(v).split(","):
            if part.strip():
                out.append(int(part))
    return out


def checkpoint_paths(args: argparse.Namespace) -> List[Path]:
    if args.checkpoint and (args.exp_dir is not None or args.epoch is not None):
        raise ValueError("give either --checkpoint PATH [PATH ...] or --exp-dir D --epoch N [--avg K], not both")
    if args.checkpoint:
        paths = list(args.checkpoint)
    elif args.exp_dir is not None and args.epoch is not None:
        if args.avg < 1 or args.avg > args.epoch:
            raise ValueError(f"--avg must be in [1, --epoch={args.epoch}], got {args.avg}")
        paths = [args.exp_dir / f"epoch-{e}.pt" for e in range(args.epoch - args.avg + 1, args.epoch + 1)]
    else:
        raise ValueError("give --checkpoint PATH [PATH ...] or --exp-dir D --epoch N [--avg K]")
    for pth in paths:
        if not pth.is_file():
            raise FileNotFoundError(f"checkpoint not found: {pth}")
    return paths


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; anything else unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _manifest_name(path: Path) -> str:
    name = path.name
    for suf in (".gz", ".jsonl", ".json", ".yaml"):
        if name.endswith(suf):
            name = name[: -len(suf)]
    return name.removeprefix("cuts_").removeprefix("cuts-") or name


def setting_name(method: str, beam: int, mode: str, chunk_ms: Optional[int],
                 left_ms: Optional[int]) -> str:
    s = method if method == "greedy" else f"{method}_beam{beam}"
    s += f"-{mode}"
    if chunk_ms is not None:
        s += f"-chunk{chunk_ms}ms"
    if left_ms is not None:
        s += "-left" + ("inf" if left_ms < 0 else f"{left_ms}ms")
    return s


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The tool: decode and score; a user error is one line on stderr and exit status 2."""
    return run_tool("decode", _decode, argv)


def _decode(argv: Optional[Sequence[str]]) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


def run(args: argparse.Namespace) -> int:
    from lhotse import CutSet
    from tqdm import tqdm

    from asr_kd.data.tokenizer import Tokenizer
    from asr_kd.decode.pipeline import DecodeSettings, decode_cuts, forced_alignment_times
    from asr_kd.metrics.report import score_and_write
    from asr_kd.metrics.results import RtfMeter, update_results_json
    from asr_kd.models.encoders import default_chunk

    torch.set_num_threads(args.num_threads)
    try:
        torch.set_num_interop_threads(args.num_threads)
    except RuntimeError:
        pass
    paths = checkpoint_paths(args)
    args.device = resolve_device(args.device)
    model = load_model(paths, args.device)  # several paths: their average
    bpe = args.bpe_model or checkpoint_bpe_model(paths[-1])
    if bpe is None:
        raise ValueError("no --bpe-model given and the checkpoint records none")
    tokenizer = Tokenizer(bpe)
    if tokenizer.vocab_size != model.vocab_size:
        raise ValueError(f"{bpe} has {tokenizer.vocab_size} pieces but the model outputs {model.vocab_size}")
    if not args.cuts.is_file():
        raise FileNotFoundError(f"cuts manifest not found: {args.cuts}")
    cuts = CutSet.from_file(args.cuts)
    test_set = args.test_set_name or _manifest_name(args.cuts)
    model_name = args.model_name or (args.exp_dir.name if args.exp_dir else paths[-1].stem)

    causal = bool(model.encoder.cfg.causal)
    trained_chunk, trained_left = default_chunk(model.encoder.cfg)  # the first training chunk / left context
    chunk_list = parse_ms_list(args.chunk_sizes_ms)
    if args.mode == "offline":
        if chunk_list:
            log.warning("--chunk-sizes-ms is ignored in offline mode")
        chunk_list = [None]
    elif not causal:
        raise ValueError(f"mode {args.mode} needs a chunk-wise (causal) model; {paths[-1]} is full-context")
    elif not chunk_list:
        if trained_chunk <= 0:
            raise ValueError(f"{paths[-1]} was trained with full-context chunks first; pass --chunk-sizes-ms")
        chunk_list = [trained_chunk * FRAME_MS]
    default_left = trained_left if causal else None
    if args.left_context_ms is not None:
        if args.mode == "offline":
            raise ValueError("--left-context-ms applies to the streaming modes only")
        left = ms_to_frames(args.left_context_ms, "--left-context-ms", allow_unlimited=True)
    else:
        left = default_left
    left_ms = None if left is None else (left * FRAME_MS if left >= 0 else -1)

    ref_override = None
    ref_source = "corpus"
    if args.align_checkpoint:
        aligner = load_model(list(args.align_checkpoint), args.device)
        log.info("forced alignment with %s for cuts without word alignments (these reference times "
                 "favour students that copy that model's timing)", args.align_checkpoint)
        ref_override = forced_alignment_times(aligner, tokenizer, cuts, args.device)
        ref_source = f"forced-alignment:{args.align_checkpoint[-1].name}"
        del aligner

    rows = []
    for chunk_ms in chunk_list:
        chunk = None if chunk_ms is None else ms_to_frames(chunk_ms, "chunk size")
        settings = DecodeSettings(method=args.method, mode=args.mode, beam=args.beam,
                                  max_symbols_per_frame=args.max_sym_per_frame, chunk_size=chunk,
                                  left_context=left if args.mode != "offline" else None,
                                  max_duration=args.max_duration, num_streams=args.num_streams,
                                  device=args.device, strict=args.strict)
        setting = setting_name(args.method, args.beam, args.mode, chunk_ms,
                               left_ms if args.mode != "offline" else None)
        rtf = RtfMeter()
        bar = tqdm(total=len(cuts), desc=setting, disable=args.no_progress, file=sys.stderr)
        utts = decode_cuts(model, tokenizer.id_to_piece, cuts, settings, rtf, progress=bar.update)
        bar.close()
        used = set()
        if ref_override is not None:
            for u in utts:
                if u.ref_starts_s is None and u.cut_id in ref_override:
                    u.ref_starts_s, why = ref_override[u.cut_id]
                    u.ref_times_reason = why or u.ref_times_reason
                    if u.ref_starts_s is not None:
                        used.add(u.cut_id)
                        # the aligner gives starts only: ends stay None, and the
                        # word-end latency names this as the reason it skips them
                        u.ref_ends_s = None
                        u.ref_ends_reason = "forced alignment gives word starts only"
        have_corpus = any(u.ref_starts_s is not None and u.cut_id not in used for u in utts)
        source = ("mixed:corpus+" + ref_source if used and have_corpus else ref_source if used
                  else "corpus" if have_corpus else None)
        metrics = score_and_write(utts, args.out_dir, test_set, setting, model=model_name)
        row = {
            "model": model_name,
            "decoding": args.method,
            "mode": args.mode,
            "chunk_ms": chunk_ms,
            "test_set": test_set,
            "wer": metrics["wer"],
            "first_token_latency_ms": metrics["first_token_latency_ms"],
            "first_token_latency_p90_ms": metrics["first_token_latency_p90_ms"],
            "mean_symbol_delay_ms": metrics["mean_symbol_delay_ms"],
            "mean_availability_delay_ms": metrics["mean_availability_delay_ms"],
            "rtf": round(rtf.rtf, 5),
            "num_threads": args.num_threads,
            "beam": args.beam if args.method == "modified_beam_search" else None,
            "max_sym_per_frame": args.max_sym_per_frame if args.method == "greedy" else 1,
            "chunk_frames": None if chunk_ms is None else chunk_ms // FEATURE_MS,
            "left_context_ms": left_ms if args.mode != "offline" else None,
            "encoder_context": ("full" if not causal else
                                f"chunk {trained_chunk * FRAME_MS} ms (trained default)"
                                if args.mode == "offline" else "chunk-wise"),
            "ref_times": source,
            "checkpoints": [str(p) for p in paths],
            "device": args.device,
            "audio_s": round(rtf.audio_s, 3),
        }
        for k in ("first_token_latency_median_ms", "first_token_share_qualifying",
                  "first_token_share_inserted_before", "first_token_share_anticipated", "num_utts",
                  "num_ref_words", "ins", "del", "sub", "num_symbol_delay_words",
                  "word_end_latency_p50_ms", "word_end_latency_p90_ms", "num_word_end_words",
                  "num_empty_by_bad_audio", "latency_reasons"):
            row[k] = metrics[k]
        rows.append(row)
        log.info("%s %s: WER %.2f%%, first-token latency %s ms (median %s, P90 %s, anticipated share %s), "
                 "symbol delay %s ms (availability %s), word-end latency P50/P90 %s/%s ms, RTF %.4f at %d "
                 "thread(s)", test_set, setting, row["wer"], row["first_token_latency_ms"],
                 row["first_token_latency_median_ms"], row["first_token_latency_p90_ms"],
                 row["first_token_share_anticipated"], row["mean_symbol_delay_ms"],
                 row["mean_availability_delay_ms"], row["word_end_latency_p50_ms"],
                 row["word_end_latency_p90_ms"], row["rtf"], args.num_threads)
    results = args.results_json or (args.out_dir / "results.json")
    update_results_json(results, rows)
    log.info("wrote %d row(s) to %s", len(rows), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
