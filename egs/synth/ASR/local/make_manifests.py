#!/usr/bin/env python3
"""lhotse manifests of the synthetic corpus (one set per split).

    python local/make_manifests.py --corpus-dir data/small/corpus --out-dir data/small/manifests

For each split present in ``CORPUS_DIR/plan.jsonl`` writes, under OUT_DIR:

* ``recordings_<split>.jsonl.gz``: one ``Recording`` per utterance (FLAC file
  path as given by ``--corpus-dir``, so a relative corpus dir gives relative
  paths, resolved from the directory the recipe runs in);
* ``supervisions_<split>.jsonl.gz``: one ``SupervisionSegment`` covering the
  whole recording: ``text`` (upper case, apostrophes kept), ``speaker``
  (engine/voice/variant/speed/pitch id), ``language``, ``alignment["word"]``
  (``AlignmentItem(symbol, start, duration)`` per transcript word, seconds
  from the recording start), and ``custom``: ``voice``, ``engine``,
  ``text_source``, ``degradation``;
* ``cuts_<split>_raw.jsonl.gz``: the ``CutSet`` joining both (no features);
* ``transcripts_train.txt``: train transcripts, one per line (for the BPE model).

Everything is checked with lhotse's validators plus our own alignment checks
(one item per word, symbols equal the words, ordered, inside the recording)
before any file is written; files are written under temporary names and
renamed. Utterances missing from the corpus (listed in ``failed.txt``) are
skipped with a warning.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from asr_kd.atomic import move_into_place, temp_path_for

log = logging.getLogger("make_manifests")


def check_alignment(sup) -> None:
    """Raise ValueError unless ``sup``'s word alignment matches its text and lies inside it."""
    items = (sup.alignment or {}).get("word")
    words = sup.text.split()
    if not items or len(items) != len(words):
        raise ValueError(f"supervision {sup.id}: {len(items or [])} aligned words for {len(words)} words")
    prev_end = 0.0
    for k, (it, w) in enumerate(zip(items, words)):
        if it.symbol != w:
            raise ValueError(f"supervision {sup.id}: word {k} aligned symbol {it.symbol!r} != {w!r}")
        if it.duration <= 0 or it.start < prev_end - 1e-4 or it.start + it.duration > sup.duration + 1e-4:
            raise ValueError(f"supervision {sup.id}: word {k} {w!r} at [{it.start:.4f}, "
                             f"{it.start + it.duration:.4f}] is out of order or outside [0, {sup.duration:.4f}]")
        prev_end = it.start + it.duration


def split_manifests(corpus_dir: Path) -> Dict[str, Tuple[list, list]]:
    """Read the corpus; returns {split: (recordings, supervisions)} (lists, plan order)."""
    from lhotse import Recording, SupervisionSegment
    from lhotse.audio import AudioSource
    from lhotse.supervision import AlignmentItem

    plan_path = corpus_dir / "plan.jsonl"
    if not plan_path.exists():
        raise FileNotFoundError(f"{plan_path} not found: build the corpus first (local/build_corpus.py)")
    out: Dict[str, Tuple[list, list]] = {}
    missing = 0
    with open(plan_path) as f:
        for line in f:
            spec = json.loads(line)
            split = spec["split"]
            if split == "babble":
                continue
            wav_dir = corpus_dir / "wav" / split
            meta_path, flac = wav_dir / f"{spec['utt_id']}.json", wav_dir / f"{spec['utt_id']}.flac"
            if not (meta_path.exists() and flac.exists()):
                missing += 1
                continue
            m = json.loads(meta_path.read_text())
            if m["transcript"] != spec["transcript"]:
                raise ValueError(f"{meta_path}: transcript differs from plan.jsonl (stale corpus? rebuild it)")
            uid, n = m["utt_id"], int(m["num_samples"])
            rec = Recording(id=uid, sources=[AudioSource(type="file", channels=[0], source=str(flac))],
                            sampling_rate=int(m["sample_rate"]), num_samples=n,
                            duration=n / int(m["sample_rate"]))
            items = [AlignmentItem(symbol=w, start=a, duration=round(b - a, 5)) for w, a, b in m["words"]]
            sup = SupervisionSegment(
                id=uid, recording_id=uid, start=0.0, duration=rec.duration, channel=0, text=m["transcript"],
                language="English", speaker=m["speaker_id"], alignment={"word": items},
                custom={"voice": m["voice_id"], "engine": m["speaker"]["engine"], "text_source": m["source"],
                        "degradation": m["degradation"]})
            check_alignment(sup)
            recs, sups = out.setdefault(split, ([], []))
            recs.append(rec)
            sups.append(sup)
    if missing:
        log.warning("%d planned utterances are missing from %s (see failed.txt)", missing, corpus_dir)
    return out


def make_manifests(corpus_dir: Path, out_dir: Path) -> Dict[str, int]:
    """Write and validate the manifests of every split; returns {split: number of cuts}."""
    from lhotse import CutSet, RecordingSet, SupervisionSet, validate
    from lhotse.qa import validate_recordings_and_supervisions

    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    parts = split_manifests(corpus_dir)
    if not parts:
        raise ValueError(f"{corpus_dir}: no utterances")
    speakers = {s: {x.speaker for x in sups} for s, (_, sups) in parts.items()}
    for a in speakers:
        for b in speakers:
            if a < b and speakers[a] & speakers[b]:
                raise ValueError(f"splits {a} and {b} share speakers {sorted(speakers[a] & speakers[b])[:3]}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: List[Tuple[Path, Path]] = []
    counts = {}
    for split, (recs, sups) in sorted(parts.items()):
        recordings, supervisions = RecordingSet.from_recordings(recs), SupervisionSet.from_segments(sups)
        validate_recordings_and_supervisions(recordings, supervisions)
        cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
        validate(cuts)
        for name, manifest in (("recordings", recordings), ("supervisions", supervisions), ("cuts", cuts)):
            final = out_dir / (f"{name}_{split}.jsonl.gz" if name != "cuts" else f"cuts_{split}_raw.jsonl.gz")
            tmp = temp_path_for(final)
            manifest.to_file(tmp)
            written.append((tmp, final))
        counts[split] = len(cuts)
        if split == "train":
            final = out_dir / "transcripts_train.txt"
            tmp = temp_path_for(final)
            tmp.write_text("".join(s.text + "\n" for s in sups))
            written.append((tmp, final))
    for tmp, final in written:  # all validated: move into place
        move_into_place(tmp, final)
    return counts


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus-dir", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for split, n in make_manifests(args.corpus_dir, args.out_dir).items():
        log.info("%s: %d cuts", split, n)


if __name__ == "__main__":
    main()
