#!/usr/bin/env python3
"""lhotse manifests of a local LibriSpeech copy (stage 0 of the LibriSpeech recipe).

    python local/prepare.py --corpus-dir /data/LibriSpeech --out-dir data/micro/manifests \
        --train-subsets "train-clean-100" --eval-subsets "dev-clean test-clean test-other"

CORPUS_DIR holds LibriSpeech's subset folders (``train-clean-100/``,
``dev-clean/``, ...), each ``<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac``
plus ``<speaker>-<chapter>.trans.txt``. lhotse's ``prepare_librispeech`` reads
them; nothing is downloaded unless ``--download true`` (then lhotse's
downloader fetches the missing subsets into the parent of CORPUS_DIR, which
must be named ``LibriSpeech``).

Word alignments: ``--alignments-dir`` (default: CORPUS_DIR) mirrors the
corpus layout with ``<speaker>-<chapter>.alignment.txt`` files (the public
MFA-derived LibriSpeech alignments, in the format lhotse parses); an utterance
with one gets ``alignment["word"]`` (silences dropped), the others none.

Writes, under OUT_DIR:

* ``cuts_<subset>_raw.jsonl.gz`` for every evaluation subset (LibriSpeech's names);
* ``cuts_train_raw.jsonl.gz``: the training subsets together;
* ``transcripts_train.txt``: the training transcripts, one per line (BPE);
* ``lhotse/``: lhotse's own recording/supervision manifests (cached: a rerun
  reuses them).

Transcripts are LibriSpeech's (upper case, apostrophes kept), the spelling the
BPE model is trained on. Files are written under temporary names and renamed.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Dict, List, Optional

from asr_kd.atomic import atomic_write_file, atomic_write_text

log = logging.getLogger("prepare")


def _bool(text: str) -> bool:
    if text not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text == "true"


def _write_cuts(cuts, path: Path) -> None:
    atomic_write_file(path, cuts.to_file)  # the temporary name keeps .jsonl.gz: lhotse picks the format from it


def _drop_silences(sup):
    """Keep the word items of ``sup``'s alignment (lhotse keeps LibriSpeech's silences as '')."""
    items = (sup.alignment or {}).get("word")
    if items:
        words = [it for it in items if it.symbol.strip()]
        sup.alignment = {"word": words} if words else None
    return sup


def part_cuts(manifests: Dict, part: str):
    from lhotse import CutSet

    m = manifests.get(part)
    if not m or len(m["recordings"]) == 0:
        raise FileNotFoundError(f"--corpus-dir: subset {part} has no utterances (missing or empty folder)")
    sups = m["supervisions"].map(_drop_silences)
    return CutSet.from_manifests(recordings=m["recordings"], supervisions=sups)


def prepare(corpus_dir: Path, out_dir: Path, train_subsets: List[str], eval_subsets: List[str],
            alignments_dir: Optional[Path], num_jobs: int, download: bool) -> None:
    from lhotse.recipes import download_librispeech, prepare_librispeech

    parts = train_subsets + [p for p in eval_subsets if p not in train_subsets]
    missing = [p for p in parts if not (corpus_dir / p).is_dir()]
    if missing and download:
        if corpus_dir.name != "LibriSpeech":
            raise ValueError(f"--download true: --corpus-dir must end in LibriSpeech (lhotse downloads into "
                             f"<parent>/LibriSpeech), got {corpus_dir}")
        log.info("downloading %s into %s", missing, corpus_dir.parent)
        download_librispeech(target_dir=corpus_dir.parent, dataset_parts=missing)
    elif missing:
        raise FileNotFoundError(f"--corpus-dir {corpus_dir}: no subset folder {', '.join(missing)} "
                                "(give the folder holding them, or --download true)")
    if alignments_dir is not None and not alignments_dir.is_dir():
        raise FileNotFoundError(f"--alignments-dir {alignments_dir}: no such directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifests = prepare_librispeech(corpus_dir, alignments_dir=alignments_dir, dataset_parts=parts,
                                    output_dir=out_dir / "lhotse", num_jobs=num_jobs)
    for part in eval_subsets:
        cuts = part_cuts(manifests, part)
        aligned = sum(1 for c in cuts if c.supervisions[0].alignment)
        log.info("%s: %d utterances, %d with word alignments", part, len(cuts), aligned)
        _write_cuts(cuts, out_dir / f"cuts_{part}_raw.jsonl.gz")
    train = None
    for part in train_subsets:
        cuts = part_cuts(manifests, part)
        train = cuts if train is None else train + cuts
    _write_cuts(train, out_dir / "cuts_train_raw.jsonl.gz")
    atomic_write_text(out_dir / "transcripts_train.txt", "".join(cut.supervisions[0].text + "\n" for cut in train))
    log.info("train (%s): %d utterances", " + ".join(train_subsets), len(train))


def prepare_musan(musan_dir: Path, out_dir: Path) -> Path:
    """MUSAN music and noise recordings as a CutSet for --noise-cuts (training mixes them in)."""
    from lhotse import CutSet, RecordingSet
    from lhotse.recipes import prepare_musan as lhotse_musan

    if not musan_dir.is_dir():
        raise FileNotFoundError(f"--musan-dir {musan_dir}: no such directory")
    m = lhotse_musan(musan_dir, output_dir=out_dir / "lhotse", parts=("music", "noise"))
    recs = [r for part in ("music", "noise") for r in m[part]["recordings"]]
    path = out_dir / "cuts_musan_raw.jsonl.gz"
    _write_cuts(CutSet.from_manifests(recordings=RecordingSet.from_recordings(recs)), path)
    return path


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus-dir", type=Path, required=True, help="folder holding LibriSpeech's subset folders")
    p.add_argument("--out-dir", type=Path, required=True, help="manifest folder")
    p.add_argument("--train-subsets", required=True, help="training subsets, space separated")
    p.add_argument("--eval-subsets", required=True, help="evaluation subsets, space separated")
    p.add_argument("--alignments-dir", type=Path, default=None,
                   help="folder of <speaker>-<chapter>.alignment.txt files in the corpus layout (default: corpus dir)")
    p.add_argument("--musan-dir", type=Path, default=None, help="MUSAN folder: also write cuts_musan_raw.jsonl.gz")
    p.add_argument("--num-jobs", type=int, default=1)
    p.add_argument("--download", type=_bool, default=False, help="true: download missing subsets (default false)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        prepare(args.corpus_dir, args.out_dir, args.train_subsets.split(), args.eval_subsets.split(),
                args.alignments_dir, args.num_jobs, args.download)
        if args.musan_dir is not None:
            prepare_musan(args.musan_dir, args.out_dir)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"local/prepare.py: error: {e}")


if __name__ == "__main__":
    main()
