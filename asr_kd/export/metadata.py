"""What sherpa-onnx reads besides the graphs: model metadata and ``tokens.txt``.

Metadata.  sherpa-onnx reads integer (and string) key/value pairs from an
ONNX model's ``metadata_props``.  :func:`add_metadata` writes them into an
exported file; :func:`read_metadata` reads them back (tests, tools).

Single file.  sherpa-onnx reads each model file into one buffer, so weights
must live inside the ``.onnx`` file, not in a side ``.data`` file.
:func:`save_single_file` re-saves a model that way and refuses models over
the 2 GiB protobuf limit with a clear error.

``tokens.txt``.  One line per token id, ``<piece> <id>``, ids 0..V-1 in
order; the blank (id 0) is ``<blk>``.  Pieces come from the sentencepiece
model the transducer was trained with, except the unknown piece ``<unk>``,
written as ``UNK_SYMBOL`` (the "⁇" sentencepiece decodes it to): a token
named ``<unk>`` is treated as blank by sherpa-onnx's search (not emitted, no
decoder update), which would make its transcripts differ from the trained
model's whenever the model emits ``<unk>``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Union

from asr_kd.types import PathLike

__all__ = ["add_metadata", "read_metadata", "save_single_file", "write_tokens", "UNK_SYMBOL"]

#: how tokens.txt names the sentencepiece unknown piece (see the module docstring)
UNK_SYMBOL = "\u2047"

_PROTOBUF_LIMIT = 2 ** 31 - 1


def save_single_file(model, path: PathLike) -> None:
    """Write an ``onnx.ModelProto`` to ``path`` with all weights inside the file."""
    import onnx

    size = model.ByteSize()
    if size > _PROTOBUF_LIMIT:
        raise ValueError(f"ONNX model {path}: {size} bytes exceed the 2 GiB single-file limit")
    onnx.save(model, str(path), save_as_external_data=False)


def add_metadata(path: PathLike, meta: Mapping[str, Union[int, str]]) -> None:
    """Add (or replace) ``meta`` in the metadata of the ONNX file at ``path``, in place."""
    import onnx

    model = onnx.load(str(path))
    keep = [p for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key = str(key)
        entry.value = str(value)
    save_single_file(model, path)


def read_metadata(path: PathLike) -> dict[str, str]:
    """All metadata of the ONNX file at ``path`` as a str -> str dict."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def write_tokens(bpe_model: PathLike, path: PathLike, vocab_size: int) -> Path:
    """Write sherpa-onnx's ``tokens.txt`` for the sentencepiece model ``bpe_model``.

    Args:
      bpe_model: the ``bpe.model`` the transducer was trained with.
      path: output file.
      vocab_size: the model's output size V; must equal the number of pieces.

    Returns:
      ``path`` as a Path.
    """
    from asr_kd.data.tokenizer import Tokenizer

    tok = Tokenizer(bpe_model)
    if tok.vocab_size != vocab_size:
        raise ValueError(f"{bpe_model} has {tok.vocab_size} pieces but the model outputs {vocab_size} classes")
    if tok.blank_id != 0:
        raise ValueError(f"{bpe_model}: the blank must be id 0 for sherpa-onnx, got id {tok.blank_id}")
    lines = []
    for i in range(vocab_size):
        piece = UNK_SYMBOL if i == tok.unk_id else tok.id_to_piece(i)
        if not piece or any(c.isspace() for c in piece):
            raise ValueError(f"{bpe_model}: piece {i} ({piece!r}) is empty or contains whitespace")
        lines.append(f"{piece} {i}\n")
    out = Path(path)
    out.write_text("".join(lines), encoding="utf-8")
    return out
