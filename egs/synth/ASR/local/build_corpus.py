#!/usr/bin/env python3
"""Build the synthetic multi-voice English corpus (audio + per-utterance metadata).

    python local/build_corpus.py --out-dir data/small/corpus \
        --train 4000 --dev 300 --test-seen 300 --test-heldout 300 --num-jobs 2

Writes under OUT_DIR:

* ``text/pool.jsonl.gz``: every normalised sentence of the Debian text sources
  (``synth_text``), with ``text/pool.json`` counting them per source;
* ``plan.jsonl``: one line per utterance (id, split, speaker, text) plus the
  babble sentences; a function of the pool, the sizes and the seed;
* ``babble_bank.flac``: 16 kHz synthetic speech used only as babble noise;
* ``wav/<split>/<utt_id>.flac`` (16 kHz mono 16-bit) and
  ``wav/<split>/<utt_id>.json`` (transcript, speaker, word times in the
  recording's time base, degradation parameters, ``spec_hash``);
* ``summary.json``: utterances, hours, speakers and voices per split, and
  ``failed.txt`` for utterances an engine could not render with timings.

Deterministic for a seed: each utterance's random choices come from its own
generator seeded by (seed, utt_id), so the audio does not depend on
``--num-jobs`` or on which utterances were built before. Idempotent: an
utterance whose JSON exists with the same ``spec_hash`` (its text, speaker,
seed, degradation settings, babble bank and builder version) and whose FLAC
has the recorded size in bytes and in samples is skipped; files are written under temporary names
and renamed, the JSON last.
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import logging
import os
import signal
import sys
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from asr_kd.atomic import atomic_write_bytes, atomic_write_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from closed_vocab import restrict_pool  # noqa: E402
from synth_degrade import DEGRADATION_LEVELS, TARGET_SR, DegradeConfig, degrade, run_sox, speech_bounds, utt_rng  # noqa: E402
from synth_engines import synthesize_many  # noqa: E402
from synth_text import Sentence, build_pool  # noqa: E402
from synth_voices import DEFAULT_HELD_OUT, SPLITS, Plan, UttSpec, VoiceSpec, make_plan  # noqa: E402

log = logging.getLogger("build_corpus")
BUILDER_VERSION = 2
MIN_POOL = 30000


# ---------------------------------------------------------------- small I/O helpers


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def write_flac(path: Path, audio: np.ndarray) -> None:
    import soundfile as sf

    atomic_write_file(path, lambda tmp: sf.write(str(tmp), audio, TARGET_SR, subtype="PCM_16", format="FLAC"))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- text pool


def load_or_build_pool(text_dir: Path) -> List[Sentence]:
    """The sentence pool, cached in ``text_dir/pool.jsonl.gz``."""
    path = text_dir / "pool.jsonl.gz"
    if path.exists():
        with gzip.open(path, "rt") as f:
            return [Sentence(**json.loads(line)) for line in f]
    t0 = time.time()
    pool = build_pool()
    counts: Dict[str, int] = {}
    for s in pool:
        counts[s.source] = counts.get(s.source, 0) + 1
    log.info("text pool: %d sentences %s (%.0f s)", len(pool), counts, time.time() - t0)
    if len(pool) < MIN_POOL:
        log.warning("only %d sentences (< %d): are fortunes, bible-kjv and wordnet-base installed?",
                    len(pool), MIN_POOL)
    lines = "".join(json.dumps({"source": s.source, "spoken": s.spoken, "transcript": s.transcript}) + "\n"
                    for s in pool)
    text_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, gzip.compress(lines.encode(), mtime=0))
    atomic_write_json(text_dir / "pool.json", {"sentences": len(pool), "per_source": counts})
    return pool


def write_plan(path: Path, plan: Plan) -> None:
    lines = [json.dumps(u.to_dict(), sort_keys=True) for u in plan.utts + plan.babble]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def read_plan(path: Path) -> Plan:
    plan = Plan(utts=[])
    with open(path) as f:
        for line in f:
            u = UttSpec.from_dict(json.loads(line))
            (plan.babble if u.split == "babble" else plan.utts).append(u)
    return plan


# ---------------------------------------------------------------- babble bank


def build_babble_bank(path: Path, utts: Sequence[UttSpec]) -> np.ndarray:
    """Clean 16 kHz speech of the babble sentences, each trimmed and RMS-normalised, concatenated."""
    if path.exists():
        import soundfile as sf

        return sf.read(str(path), dtype="float32")[0]
    parts = []
    for spec, (syn, err) in zip(utts, synthesize_many([(u.spoken, u.speaker) for u in utts])):
        if syn is None:
            log.warning("babble %s skipped: %s", spec.utt_id, err)
            continue
        s, e = speech_bounds(syn.samples, syn.sample_rate, syn.words)
        y = run_sox(syn.samples[s:e], syn.sample_rate, [])
        parts.append(y / (np.sqrt(np.mean(y ** 2)) + 1e-9) * 0.1)
    if not parts:
        raise RuntimeError("could not synthesise any babble sentence")
    bank = np.concatenate(parts).astype(np.float32)
    audio = np.clip(np.round(bank * 32767), -32768, 32767).astype(np.int16)
    write_flac(path, audio)
    return audio.astype(np.float32) / 32767.0


# ---------------------------------------------------------------- per utterance


def spec_hash(spec: UttSpec, seed: int, cfg: DegradeConfig, bank_sha: str) -> str:
    blob = json.dumps({"spec": spec.to_dict(), "seed": seed, "degrade": cfg.to_dict(), "bank": bank_sha,
                       "version": BUILDER_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def utt_paths(out_dir: Path, spec: UttSpec) -> Tuple[Path, Path]:
    d = out_dir / "wav" / spec.split
    return d / f"{spec.utt_id}.flac", d / f"{spec.utt_id}.json"


def is_done(out_dir: Path, spec: UttSpec, h: str) -> bool:
    """True if the utterance exists, was built from the same spec, and its audio is complete."""
    flac, meta = utt_paths(out_dir, spec)
    if not (flac.exists() and meta.exists()):
        return False
    try:
        info = json.loads(meta.read_text())
        import soundfile as sf

        return (info.get("spec_hash") == h and flac.stat().st_size == info["flac_bytes"]
                and sf.info(str(flac)).frames == info["num_samples"])
    except (ValueError, KeyError, RuntimeError):
        return False


_WORKER: Dict = {}


def _init_worker(out_dir: str, seed: int, cfg: DegradeConfig, bank_path: Optional[str], bank_sha: str,
                 ignore_sigint: bool = False) -> None:
    if ignore_sigint:  # Ctrl-C is handled by the parent, which terminates the pool
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    bank = None
    if bank_path:
        import soundfile as sf

        bank = sf.read(bank_path, dtype="float32")[0]
    _WORKER.update(out_dir=Path(out_dir), seed=seed, cfg=cfg, bank=bank, bank_sha=bank_sha)


def _render(specs: List[UttSpec]) -> List[Tuple[str, str, float]]:
    """Synthesise and degrade ``specs``; returns (utt_id, error or "", duration)."""
    w = _WORKER
    out = []
    for spec, (syn, err) in zip(specs, synthesize_many([(u.spoken, u.speaker) for u in specs])):
        if syn is None:
            out.append((spec.utt_id, err or "synthesis failed", 0.0))
            continue
        rng = utt_rng(w["seed"], spec.utt_id)
        audio, words, info = degrade(syn.samples, syn.sample_rate, syn.words, rng, w["cfg"], w["bank"])
        flac, meta = utt_paths(w["out_dir"], spec)
        write_flac(flac, audio)
        dur = len(audio) / TARGET_SR
        atomic_write_json(meta, {
            "utt_id": spec.utt_id, "split": spec.split, "speaker_id": spec.speaker.id,
            "voice_id": spec.speaker.voice_id, "speaker": spec.speaker.to_dict(), "source": spec.source,
            "spoken": spec.spoken, "transcript": spec.transcript,
            "words": [[wd, round(a, 5), round(b, 5)] for wd, (a, b) in zip(spec.transcript.split(), words)],
            "num_samples": int(len(audio)), "sample_rate": TARGET_SR, "duration": dur,
            "flac_bytes": flac.stat().st_size,
            "degradation": info, "spec_hash": spec_hash(spec, w["seed"], w["cfg"], w["bank_sha"]),
        })
        out.append((spec.utt_id, "", dur))
    return out


def make_tasks(specs: Sequence[UttSpec], festival_batch: int = 12, other_batch: int = 4) -> List[List[UttSpec]]:
    """Group utterances into tasks: festival ones by voice (one festival process per task)."""
    tasks: List[List[UttSpec]] = []
    fest: Dict[str, List[UttSpec]] = {}
    other: List[UttSpec] = []
    for s in specs:
        (fest.setdefault(s.speaker.voice, []) if s.speaker.engine == "festival" else other).append(s)
    for group in fest.values():
        tasks.extend(group[i:i + festival_batch] for i in range(0, len(group), festival_batch))
    tasks.extend(other[i:i + other_batch] for i in range(0, len(other), other_batch))
    # biggest tasks first keeps the pool busy until the end
    tasks.sort(key=lambda t: (-(t[0].speaker.engine == "festival"), t[0].utt_id))
    return tasks


def render_all(out_dir: Path, specs: Sequence[UttSpec], seed: int, cfg: DegradeConfig,
               bank_path: Optional[Path], num_jobs: int, progress: bool = True) -> Dict[str, str]:
    """Build every utterance of ``specs`` that is not done; returns {utt_id: error} of failures."""
    from tqdm import tqdm

    bank_sha = sha256_file(bank_path) if bank_path else ""
    todo = [s for s in specs if not is_done(out_dir, s, spec_hash(s, seed, cfg, bank_sha))]
    log.info("%d of %d utterances to synthesise (%d already done)", len(todo), len(specs), len(specs) - len(todo))
    failures: Dict[str, str] = {}
    if not todo:
        return failures
    init = (str(out_dir), seed, cfg, str(bank_path) if bank_path else None, bank_sha)
    tasks = make_tasks(todo)
    bar = tqdm(total=len(todo), desc="synthesis", unit="utt", disable=not progress)
    if num_jobs <= 1:
        _init_worker(*init)
        results: Iterable = map(_render, tasks)
        pool = None
    else:
        pool = Pool(num_jobs, initializer=_init_worker, initargs=init + (True,))
        results = pool.imap_unordered(_render, tasks)
    try:
        for res in results:
            for utt_id, err, _ in res:
                if err:
                    failures[utt_id] = err
            bar.update(len(res))
    except BaseException:
        if pool is not None:
            pool.terminate()  # finished utterances are kept; a rerun builds the rest
            pool.join()
        raise
    finally:
        bar.close()
    if pool is not None:
        pool.close()
        pool.join()
    return failures


def summarize(out_dir: Path, plan: Plan) -> Dict:
    """Per split: utterances, hours, speakers, voices (from the JSON files present)."""
    summary: Dict = {}
    for split in SPLITS:
        specs = [u for u in plan.utts if u.split == split]
        if not specs:
            continue
        dur, n, spk, voices, engines = 0.0, 0, set(), set(), {}
        for u in specs:
            meta = utt_paths(out_dir, u)[1]
            if not meta.exists():
                continue
            info = json.loads(meta.read_text())
            dur += info["duration"]
            n += 1
            spk.add(u.speaker.id)
            voices.add(u.speaker.voice_id)
            engines[u.speaker.engine] = engines.get(u.speaker.engine, 0) + 1
        summary[split] = {"utterances": n, "planned": len(specs), "hours": round(dur / 3600, 3),
                          "speakers": len(spk), "voices": sorted(voices), "per_engine": engines}
    return summary


def build_corpus(out_dir: Path, sizes: Dict[str, int], seed: int = 42, num_jobs: int = 1,
                 num_babble: int = 40, cfg: DegradeConfig = DegradeConfig(),
                 voices: Optional[Sequence[VoiceSpec]] = None, held_out: Sequence[str] = DEFAULT_HELD_OUT,
                 text_weights: Optional[Dict[str, float]] = None, pool: Optional[Sequence[Sentence]] = None,
                 progress: bool = True, vocab_size: int = 0, min_words: int = 4, max_words: int = 14,
                 train_reads: int = 1) -> Dict:
    """Library form of the CLI; returns the summary (also written to ``summary.json``).

    ``vocab_size > 0`` restricts every split to sentences of ``min_words..max_words``
    words inside the pool's ``vocab_size`` most frequent words (``closed_vocab``;
    the list is written to ``text/vocab.txt``); 0 keeps the open-vocabulary pool.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if pool is None:
        pool = load_or_build_pool(out_dir / "text")
    vocab_info: Dict = {"vocab_size": 0}
    if vocab_size > 0:
        pool, vocab = restrict_pool(pool, vocab_size, min_words, max_words)
        atomic_write_bytes(out_dir / "text" / "vocab.txt", ("\n".join(vocab) + "\n").encode())
        vocab_info = {"vocab_size": len(vocab), "min_words": min_words, "max_words": max_words,
                      "sentences_in_vocab": len(pool)}
        log.info("closed vocabulary: %d words, %d sentences of %d..%d words", len(vocab), len(pool),
                 min_words, max_words)
    plan = make_plan(pool, sizes, seed, voices=voices, held_out=held_out, text_weights=text_weights,
                     num_babble=num_babble, train_reads=train_reads)
    write_plan(out_dir / "plan.jsonl", plan)
    bank_path = None
    if plan.babble:
        bank_path = out_dir / "babble_bank.flac"
        build_babble_bank(bank_path, plan.babble)
    t0 = time.time()
    failures = render_all(out_dir, plan.utts, seed, cfg, bank_path, num_jobs, progress)
    elapsed = time.time() - t0
    summary = summarize(out_dir, plan)
    summary["_build"] = {"seed": seed, "num_jobs": num_jobs, "seconds_last_run": round(elapsed, 1),
                         "failed": len(failures), "degradation": cfg.to_dict(),
                         "held_out_voices": list(held_out), "text": dict(vocab_info, train_reads=train_reads)}
    atomic_write_bytes(out_dir / "failed.txt", "".join(f"{k}\t{v}\n" for k, v in sorted(failures.items())).encode())
    atomic_write_json(out_dir / "summary.json", summary)
    if failures:
        log.warning("%d utterances failed (see %s)", len(failures), out_dir / "failed.txt")
    planned = len(plan.utts)
    if planned and len(failures) > 0.02 * planned:
        raise RuntimeError(f"{len(failures)} of {planned} utterances failed; see {out_dir / 'failed.txt'}")
    return summary


def parse_weights(text: str) -> Dict[str, float]:
    out = {}
    for part in filter(None, text.split(",")):
        k, v = part.split("=")
        out[k.strip()] = float(v)
    return out


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, required=True)
    for split in SPLITS:
        p.add_argument(f"--{split.replace('_', '-')}", type=int, default=0, help=f"utterances in {split}")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--num-jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--num-babble", type=int, default=40, help="sentences synthesised for the babble bank")
    p.add_argument("--text-weights", default="fortunes=0.4,kjv=0.3,wordnet=0.3",
                   help="share of each text source, e.g. fortunes=0.4,kjv=0.3,wordnet=0.3")
    p.add_argument("--degradation", default="full", choices=sorted(DEGRADATION_LEVELS),
                   help="signal-chain level: full (default: reverb 30%%, telephone 10%%, EQ 40%%, "
                        "SNR 5-30 dB), mild (rarer effects, SNR 15-35 dB) or clean (noise floor only)")
    p.add_argument("--snr", default=None, help="additive-noise SNR range in dB: MIN,MAX "
                                               "(default: the --degradation level's)")
    p.add_argument("--held-out", default=",".join(DEFAULT_HELD_OUT),
                   help="voices kept out of training (test_heldout)")
    p.add_argument("--vocab-size", type=int, default=0,
                   help="closed vocabulary: keep only sentences whose words are all among the pool's "
                        "N most frequent (0 = open vocabulary; default 0)")
    p.add_argument("--min-words", type=int, default=4, help="closed vocabulary: fewest words per sentence (default 4)")
    p.add_argument("--max-words", type=int, default=14, help="closed vocabulary: most words per sentence (default 14)")
    p.add_argument("--train-reads", type=int, default=1,
                   help="speakers reading each training sentence (default 1)")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sizes = {s: getattr(args, s) for s in SPLITS}
    cfg = DEGRADATION_LEVELS[args.degradation]
    if args.snr is not None:
        lo, hi = (float(v) for v in args.snr.split(","))
        cfg = dataclasses.replace(cfg, snr_min=lo, snr_max=hi)
    summary = build_corpus(args.out_dir, sizes, seed=args.seed, num_jobs=args.num_jobs,
                           num_babble=args.num_babble, cfg=cfg,
                           held_out=tuple(filter(None, args.held_out.split(","))),
                           text_weights=parse_weights(args.text_weights), vocab_size=args.vocab_size,
                           min_words=args.min_words, max_words=args.max_words, train_reads=args.train_reads)
    for split, s in summary.items():
        if not split.startswith("_"):
            log.info("%-13s %5d utts %6.2f h %3d speakers, voices: %s", split, s["utterances"], s["hours"],
                     s["speakers"], " ".join(s["voices"]))
    log.info("synthesis took %.0f s with %d jobs", summary["_build"]["seconds_last_run"], args.num_jobs)


if __name__ == "__main__":
    main()
