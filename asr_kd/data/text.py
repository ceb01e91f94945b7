"""The one text normaliser: BPE training, training targets and WER references all use it.

:func:`normalize_text` maps a transcript to the form the tokenizer is trained
on, so that text written differently (case, punctuation, typographic quotes,
accents) does not turn into ``<unk>`` or into spurious word errors:

1. Unicode NFKC (full-width forms, ligatures), typographic apostrophes
   (’ ‘ ʼ ´ `) become ``'``;
2. upper case;
3. accents are removed from letters that have an ASCII base (É -> E,
   Ç -> C); letters without one (Ø, Ж, 中) are kept upper-cased: a BPE model
   trained on such text knows them, otherwise they become ``<unk>`` and are
   counted (see :func:`asr_kd.data.datamodule.filter_short_cuts`);
4. every character that is not a letter, a digit, an apostrophe inside a word
   or whitespace (punctuation, hyphens, symbols) becomes a space, so
   "WELL-KNOWN" -> "WELL KNOWN" and "'HELLO,'" -> "HELLO";
5. runs of whitespace become one space; leading/trailing space is removed.

The synthetic recipe's transcripts (upper-case ASCII words with apostrophes)
are already in this form: normalising them changes nothing.
"""
from __future__ import annotations

import re
import unicodedata

__all__ = ["normalize_text"]

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u00b4": "'", "`": "'"})
_EDGE_APOSTROPHE = re.compile(r"(?<![^\W_])'|'(?![^\W_])")  # an apostrophe not between two word characters


def _strip_accent(ch: str) -> str:
    if ch.isascii():
        return ch
    base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
    return base if base.isascii() and base.isalpha() else ch


def normalize_text(text: str) -> str:
    """The normalised form of ``text`` (see the module docstring); "" for text without words."""
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).upper()
    chars = []
    for ch in text:
        ch = _strip_accent(ch)
        chars.append(ch if (ch.isalnum() or ch == "'") else " ")
    text = _EDGE_APOSTROPHE.sub(" ", "".join(chars))
    return " ".join(text.split())
