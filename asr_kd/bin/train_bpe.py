"""Train the unigram SentencePiece tokenizer (``<blk>`` = 0, ``<unk>`` = 1).

    python -m asr_kd.bin.train_bpe --transcripts data/lang/transcripts.txt \\
        --out-dir data/lang_bpe_500 --vocab-size 500

Writes ``OUT_DIR/bpe.model``, ``bpe.vocab`` and ``bpe.json``. Idempotent: a
rerun with the same transcripts and options does nothing (``--force`` retrains).
Output files are written under temporary names and renamed into place.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from asr_kd.bin._entry import run_tool
from asr_kd.data.tokenizer import Tokenizer, train_bpe


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asr_kd.bin.train_bpe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--transcripts", type=Path, required=True, help="text file, one transcript per line (required)")
    p.add_argument("--out-dir", type=Path, required=True,
                   help="output directory for bpe.model, bpe.vocab and bpe.json (required)")
    p.add_argument("--vocab-size", type=int, required=True,
                   help="number of pieces including <blk> and <unk> (required)")
    p.add_argument("--character-coverage", type=float, default=1.0,
                   help="share of characters the model covers, passed to sentencepiece (default: %(default)s)")
    p.add_argument("--num-threads", type=int, default=1,
                   help="sentencepiece threads (1 keeps the model bit-reproducible) (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="retrain even if the model is up to date (flag; default: off)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The tool; a user error is one line on stderr (``train_bpe: error: ...``) and exit status 2."""
    return run_tool("train_bpe", _train_bpe, argv)


def _train_bpe(argv: Optional[Sequence[str]]) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model = train_bpe(args.transcripts, args.out_dir, args.vocab_size,
                      character_coverage=args.character_coverage, num_threads=args.num_threads,
                      force=args.force)
    tok = Tokenizer(model)
    logging.info("%s: %d pieces, blank=%s (id 0), unk id %d", model, tok.vocab_size,
                 tok.id_to_piece(0), tok.unk_id)


if __name__ == "__main__":
    sys.exit(main())
