"""Tokenizer: blank id 0, <unk>, determinism, round trip, idempotent CLI."""
import os

import pytest

from toy_corpus import make_synthetic_cuts, write_transcripts
from asr_kd.data.tokenizer import Tokenizer, train_bpe


@pytest.fixture(scope="module")
def transcripts(tmp_path_factory):
    d = tmp_path_factory.mktemp("bpe")
    cuts = make_synthetic_cuts(d / "wav", num_cuts=30, max_words=5)
    return write_transcripts(cuts, d / "transcripts.txt")


def test_layout_and_round_trip(transcripts, tmp_path):
    model = train_bpe(transcripts, tmp_path / "lang", vocab_size=24)
    tok = Tokenizer(model)
    assert tok.vocab_size == 24
    assert tok.blank_id == 0 and tok.id_to_piece(0) == "<blk>"
    assert tok.unk_id == 1 and tok.id_to_piece(1) == "<unk>"
    texts = ["ALPHA BRAVO", "HOTEL ECHO GOLF DELTA", "CHARLIE"]
    ids = tok.encode(texts)
    assert all(0 not in seq and len(seq) > 0 for seq in ids)
    assert [tok.decode(seq) for seq in ids] == texts
    # blanks are skipped by decode
    assert tok.decode([0] + ids[0] + [0]) == texts[0]
    # characters never seen map to <unk>
    assert tok.unk_id in tok.encode(["ZZZ"])[0]
    with pytest.raises(ValueError, match="<blk>"):
        tok.encode(["ALPHA <blk>"])
    with pytest.raises(TypeError):
        tok.encode("ALPHA")


def test_deterministic_and_idempotent(transcripts, tmp_path):
    a = train_bpe(transcripts, tmp_path / "a", vocab_size=20)
    b = train_bpe(transcripts, tmp_path / "b", vocab_size=20)
    assert a.read_bytes() == b.read_bytes()
    mtime = os.stat(a).st_mtime_ns
    assert train_bpe(transcripts, tmp_path / "a", vocab_size=20) == a
    assert os.stat(a).st_mtime_ns == mtime  # up to date: not retrained
    c = train_bpe(transcripts, tmp_path / "a", vocab_size=21)  # options changed: retrained
    assert Tokenizer(c).vocab_size == 21
    assert not [p for p in (tmp_path / "a").iterdir() if ".tmp" in p.name]


def test_errors(transcripts, tmp_path):
    with pytest.raises(ValueError, match="could not train"):
        train_bpe(transcripts, tmp_path / "big", vocab_size=5000)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="no non-empty line"):
        train_bpe(empty, tmp_path / "e", vocab_size=10)
    with pytest.raises(FileNotFoundError):
        Tokenizer(tmp_path / "missing.model")


def test_cli(transcripts, tmp_path):
    from asr_kd.bin.train_bpe import main

    main(["--transcripts", str(transcripts), "--out-dir", str(tmp_path / "cli"), "--vocab-size", "22"])
    tok = Tokenizer(tmp_path / "cli" / "bpe.model")
    assert tok.vocab_size == 22 and tok.id_to_piece(0) == "<blk>"
    assert (tmp_path / "cli" / "bpe.vocab").read_text().splitlines()[0].startswith("<blk>\t")
