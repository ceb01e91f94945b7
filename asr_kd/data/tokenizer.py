"""SentencePiece unigram tokenizer with the transducer blank at id 0.

Layout of the vocabulary produced by :func:`train_bpe`::

    id 0   <blk>   the transducer blank (a user-defined piece, never produced
                   from text: :meth:`Tokenizer.encode` rejects a literal "<blk>")
    id 1   <unk>   unknown characters
    id 2.. word pieces, as learned by the unigram model

There are no BOS/EOS/PAD pieces (a transducer needs none). Training is
deterministic: every sentence is used (no sampling), one thread by default,
and the model is written from memory, so the file does not record the paths
it was trained from; the same transcripts and vocabulary size give a
byte-identical ``bpe.model``.

The function is named ``train_bpe`` after the convention of speech recipes;
the model type is unigram (Kudo 2018), not byte-pair encoding.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Iterator, List, Sequence, Union

from asr_kd.atomic import atomic_write_bytes

__all__ = ["BLANK", "UNK", "train_bpe", "Tokenizer", "file_sha256"]

BLANK = "<blk>"
UNK = "<unk>"
MODEL_NAME = "bpe.model"
VOCAB_NAME = "bpe.vocab"
META_NAME = "bpe.json"

log = logging.getLogger(__name__)


def file_sha256(path: Union[str, Path]) -> str:
    """Hex SHA-256 of a file (checkpoints store it next to the model path)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_transcripts(path: Path) -> List[str]:
    if not path.is_file():
        raise FileNotFoundError(f"transcript file not found: {path}")
    from asr_kd.data.text import normalize_text

    lines = [normalize_text(ln) for ln in path.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise ValueError(f"transcript file {path} has no non-empty line")
    for i, ln in enumerate(lines):
        if BLANK in ln:
            raise ValueError(f"{path}: line {i + 1} contains the reserved symbol {BLANK!r}")
    return lines


def train_bpe(transcript_file: Union[str, Path], out_dir: Union[str, Path], vocab_size: int,
              character_coverage: float = 1.0, num_threads: int = 1, force: bool = False) -> Path:
    """Train a unigram SentencePiece model; return the path of ``out_dir/bpe.model``.

    Args:
      transcript_file: UTF-8 text, one transcript per line; each line is normalised
        (:func:`asr_kd.data.text.normalize_text`, as training targets and WER
        references are), lines left empty are ignored.
      out_dir: created if needed; receives ``bpe.model``, ``bpe.vocab`` (piece,
        score per line) and ``bpe.json`` (what the model was trained from).
      vocab_size: total number of pieces including ``<blk>`` and ``<unk>``.
      num_threads: sentencepiece EM threads; 1 keeps training bit-reproducible.
      force: retrain even if an up-to-date model exists.

    Idempotent: when ``bpe.json`` says the existing model was trained from the
    same transcripts (SHA-256) with the same settings, nothing is done. Files are
    written to temporary names and renamed into place, the model last.
    """
    import sentencepiece as spm

    transcript_file = Path(transcript_file)
    out_dir = Path(out_dir)
    if vocab_size < 3:
        raise ValueError(f"vocab_size must be >= 3 (<blk>, <unk> and one piece), got {vocab_size}")
    lines = _read_transcripts(transcript_file)
    meta = {
        "model_type": "unigram",
        "vocab_size": int(vocab_size),
        "character_coverage": float(character_coverage),
        "transcripts_sha256": file_sha256(transcript_file),
        "blank": BLANK,
        "unk": UNK,
    }
    model_path = out_dir / MODEL_NAME
    meta_path = out_dir / META_NAME
    if not force and model_path.is_file() and meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text())
        except ValueError:
            old = None
        if old is not None and {k: old.get(k) for k in meta} == meta \
                and old.get("model_sha256") == file_sha256(model_path):
            log.info("%s is up to date; skipping training", model_path)
            return model_path

    out_dir.mkdir(parents=True, exist_ok=True)

    def sentences() -> Iterator[str]:
        yield from lines

    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sentences(),
            model_writer=buf,
            model_type="unigram",
            vocab_size=int(vocab_size),
            character_coverage=float(character_coverage),
            user_defined_symbols=[BLANK],
            unk_id=1,
            unk_piece=UNK,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            input_sentence_size=0,  # use every sentence: no random sampling
            shuffle_input_sentence=False,
            num_threads=int(num_threads),
            minloglevel=2,
        )
    except RuntimeError as e:
        raise ValueError(
            f"sentencepiece could not train a {vocab_size}-piece model on {transcript_file} "
            f"({len(lines)} lines): {e}"
        ) from e
    model_bytes = buf.getvalue()

    # Check the layout before publishing the model.
    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    if sp.id_to_piece(0) != BLANK or sp.id_to_piece(1) != UNK or sp.unk_id() != 1:
        raise RuntimeError(
            f"unexpected sentencepiece layout: id0={sp.id_to_piece(0)!r} id1={sp.id_to_piece(1)!r}"
        )
    vocab_text = "".join(
        f"{sp.id_to_piece(i)}\t{sp.get_score(i)}\n" for i in range(sp.get_piece_size())
    )
    atomic_write_bytes(out_dir / VOCAB_NAME, vocab_text.encode("utf-8"))
    atomic_write_bytes(model_path, model_bytes)
    meta["model_sha256"] = hashlib.sha256(model_bytes).hexdigest()
    meta["num_lines"] = len(lines)
    atomic_write_bytes(meta_path, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    log.info("trained %s (%d pieces) from %d lines", model_path, sp.get_piece_size(), len(lines))
    return model_path


class Tokenizer:
    """A trained model: text <-> token ids (blank = 0 never appears in encodings)."""

    def __init__(self, model_path: Union[str, Path]) -> None:
        import sentencepiece as spm

        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"sentencepiece model not found: {self.model_path}")
        self._sp = spm.SentencePieceProcessor(model_file=str(self.model_path))
        if self._sp.id_to_piece(0) != BLANK:
            raise ValueError(
                f"{self.model_path}: id 0 is {self._sp.id_to_piece(0)!r}, expected {BLANK!r} "
                "(train the model with asr_kd.data.tokenizer.train_bpe)"
            )
        if self._sp.unk_id() < 0:
            raise ValueError(f"{self.model_path}: the model has no <unk> piece")

    @property
    def vocab_size(self) -> int:
        """Number of pieces, blank and <unk> included (the joiner's output size)."""
        return int(self._sp.get_piece_size())

    @property
    def blank_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return int(self._sp.unk_id())

    @property
    def sha256(self) -> str:
        return file_sha256(self.model_path)

    def id_to_piece(self, token_id: int) -> str:
        return self._sp.id_to_piece(int(token_id))

    def piece_to_id(self, piece: str) -> int:
        return int(self._sp.piece_to_id(piece))

    def encode(self, texts: Sequence[str]) -> List[List[int]]:
        """Token ids for each text (list in, list of lists out)."""
        if isinstance(texts, str):
            raise TypeError("Tokenizer.encode expects a list of strings, got a single str")
        for t in texts:
            if BLANK in t:
                raise ValueError(f"text contains the reserved blank symbol {BLANK!r}: {t!r}")
        return [list(ids) for ids in self._sp.encode(list(texts), out_type=int)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of one token sequence; blank ids (0) are skipped."""
        return self._sp.decode([int(i) for i in ids if int(i) != 0])

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer({str(self.model_path)!r}, vocab_size={self.vocab_size})"
