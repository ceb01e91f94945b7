"""English sentence pool for the synthetic corpus, read from Debian packages.

Sources (all installed by ``local/setup.sh``):

* ``fortunes`` / ``fortunes-min``: ``/usr/share/games/fortunes/*`` (BSD-style
  licence; quotations, jokes, literature);
* ``bible-kjv`` + ``bible-kjv-text``: the King James Bible (public domain), read
  with the ``bible`` program, one verse per line;
* ``wordnet-base``: the glosses of ``/usr/share/wordnet/data.*`` (WordNet
  licence, BSD-like): definitions and the quoted example sentences.

Every candidate sentence goes through :func:`normalize_sentence`, which returns
a :class:`Sentence` whose ``spoken`` text (mixed case, clause punctuation kept:
what the engines read) and ``transcript`` (LibriSpeech style: upper case,
apostrophes kept, no other punctuation) hold exactly the same words, or
``None`` when the sentence cannot be read unambiguously:

* common abbreviations are expanded (``Mr.`` -> ``Mister``, ``e.g.`` -> ``for
  example``, ``&`` -> ``and``; table :data:`ABBREVIATIONS`);
* hyphens and dashes become word breaks, quotes and brackets are removed;
* sentences are dropped when they contain digits, symbols the engines would
  read out (``$ % / @ # = + ...``), acronyms (all-capital words of two or more
  letters; in the KJV all-capital words such as ``LORD`` are typographic and
  are title-cased instead), Roman numerals, single letters other than
  ``a``, ``I`` and ``O``, words without a vowel (``hmm``, ``shh``, which
  engines spell out), words with inner capitals (``iPhone``) or non-ASCII
  characters;
* the kept sentences have 3..20 words.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

MIN_WORDS = 3
MAX_WORDS = 20

FORTUNE_DIR = "/usr/share/games/fortunes"
WORDNET_DIR = "/usr/share/wordnet"
#: fortune files that are pictures or code rather than prose
FORTUNE_SKIP = {"ascii-art", "perl", "translate-me"}

# Abbreviation -> spoken expansion. Matched as whole tokens (case-sensitive),
# before sentence splitting so that their periods do not end sentences.
ABBREVIATIONS: Dict[str, str] = {
    "Mr.": "Mister", "Mrs.": "Missus", "Messrs.": "Messieurs", "Dr.": "Doctor",
    "St.": "Saint", "Jr.": "Junior", "Sr.": "Senior", "Prof.": "Professor",
    "Gen.": "General", "Gov.": "Governor", "Sen.": "Senator", "Rep.": "Representative",
    "Pres.": "President", "Capt.": "Captain", "Col.": "Colonel", "Lt.": "Lieutenant",
    "Sgt.": "Sergeant", "Cpl.": "Corporal", "Adm.": "Admiral", "Rev.": "Reverend",
    "Hon.": "Honorable", "Mt.": "Mount", "Ft.": "Fort", "Wm.": "William",
    "Geo.": "George", "Chas.": "Charles", "Thos.": "Thomas", "Jas.": "James",
    "vs.": "versus", "etc.": "et cetera", "e.g.": "for example", "i.e.": "that is",
    "viz.": "namely", "cf.": "compare", "approx.": "approximately", "esp.": "especially",
    "Co.": "Company", "Inc.": "Incorporated", "Ltd.": "Limited", "Bros.": "Brothers",
    "Corp.": "Corporation", "Dept.": "Department", "Univ.": "University",
    "Ave.": "Avenue", "Blvd.": "Boulevard", "Jan.": "January", "Feb.": "February",
    "Mar.": "March", "Apr.": "April", "Aug.": "August", "Sept.": "September",
    "Sep.": "September", "Oct.": "October", "Nov.": "November", "Dec.": "December",
    "a.m.": "in the morning", "p.m.": "in the afternoon", "&": "and",
}

#: lower-case Roman numerals that are not English words
ROMAN_LOWER = {"ii", "iii", "iv", "vi", "vii", "viii", "ix", "xi", "xii", "xiii", "xiv",
               "xv", "xvi", "xvii", "xviii", "xix", "xx", "xl", "lx", "xc", "cx", "cd",
               "dc", "mc", "mcm", "mm"}
SINGLE_LETTERS = {"a", "A", "I", "O"}

_UNICODE_MAP = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2014": " -- ",
                "\u2013": " - ", "\u2026": "...", "\u00a0": " "}
_FORBIDDEN = re.compile(r"[0-9$%/@#=+<>|\\{}~^*_`]")
_CORE = re.compile(r"^[A-Za-z]+(?:'[A-Za-z]+)*$")
_VOWEL = re.compile(r"[aeiouyAEIOUY]")
_TRAIL_PUNCT = re.compile(r"^(.*?)([,.;:!?]*)$")
_SENT_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CLAUSE_END = re.compile(r"(?<=[;:])\s+")
_OVERSTRIKE = re.compile(r".\x08")
_QA_TAG = re.compile(r"(?:^|(?<=\s))[QA]:\s")


@dataclass(frozen=True)
class Sentence:
    """One normalised sentence.

    ``spoken``: what the engines read (mixed case, ``, . ; : ! ?`` kept, ends
    with a sentence mark); ``transcript``: the reference, upper case, words
    separated by one space; both have the same words in the same order.
    """

    source: str
    spoken: str
    transcript: str

    @property
    def num_words(self) -> int:
        return self.transcript.count(" ") + 1


def expand_abbreviations(text: str) -> str:
    """Replace the tokens of :data:`ABBREVIATIONS` by their expansion.

    A token may carry leading quotes/brackets and trailing ``,;:`` (kept).
    """
    out = []
    for tok in text.split():
        m = re.match(r"^([\"'(\[]*)(.*?)([,;:]?)$", tok)
        lead, core, trail = m.group(1), m.group(2), m.group(3)
        if core in ABBREVIATIONS:
            out.append(lead + ABBREVIATIONS[core] + trail)
        else:
            out.append(tok)
    return " ".join(out)


def clean_raw(text: str) -> str:
    """Undo overstriking, map typographic Unicode to ASCII, unify whitespace."""
    text = _OVERSTRIKE.sub("", text)
    for k, v in _UNICODE_MAP.items():
        text = text.replace(k, v)
    return " ".join(text.split())


def split_sentences(text: str, clause_split: bool = False) -> List[str]:
    """Split a paragraph at ``. ! ?`` followed by a capital letter.

    With ``clause_split`` (the KJV, whose verses chain clauses with ``;`` and
    ``:``) a sentence longer than :data:`MAX_WORDS` words is further split at
    ``;`` / ``:``.
    """
    text = expand_abbreviations(clean_raw(text))
    parts = []
    for s in _SENT_END.split(text):
        s = s.strip()
        if not s:
            continue
        if clause_split and len(s.split()) > MAX_WORDS:
            parts.extend(c.strip() for c in _CLAUSE_END.split(s) if c.strip())
        else:
            parts.append(s)
    return parts


def normalize_sentence(text: str, source: str = "", allcaps_to_title: bool = False,
                       min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> Optional[Sentence]:
    """Normalise one sentence (see the module docstring); ``None`` if rejected.

    ``allcaps_to_title``: title-case all-capital words instead of rejecting
    them as acronyms (for sources where capitals are typography).
    """
    text = expand_abbreviations(clean_raw(text))
    if not text.isascii() or _FORBIDDEN.search(text):
        return None
    # dashes and hyphens separate words; quotes and brackets vanish
    text = re.sub(r"\s*--+\s*", ", ", text)
    text = re.sub(r"\s+-\s+", ", ", text)
    text = re.sub(r"(?<=[A-Za-z])-(?=[A-Za-z])", " ", text)
    text = re.sub(r"[\"()\[\]]", " ", text)
    text = text.replace("...", ",")
    words_spoken: List[str] = []
    words_ref: List[str] = []
    for tok in text.split():
        m = _TRAIL_PUNCT.match(tok)
        core, punct = m.group(1).strip("'"), m.group(2)
        if not core:
            if punct and words_spoken:  # stray punctuation: attach to the previous word
                words_spoken[-1] += punct[:1]
                continue
            return None
        if not _CORE.match(core):
            return None
        letters = core.replace("'", "")
        if len(letters) >= 2 and letters.isupper():
            if not allcaps_to_title:
                return None
            core = core.capitalize()
        if len(letters) == 1 and core not in SINGLE_LETTERS:
            return None
        if core.lower() in ROMAN_LOWER or not _VOWEL.search(core):
            return None
        # inner capitals (iPhone, LaTeX) are read unpredictably; allow Mc/Mac/O' names
        inner = re.sub(r"^(Mc|Mac|O'|D')", "", core)[1:]
        if any(c.isupper() for c in inner):
            return None
        if punct:
            punct = punct[0] if punct[0] in ",;:" else punct[-1]
        words_spoken.append(core + punct)
        words_ref.append(core.upper())
    if not (min_words <= len(words_ref) <= max_words):
        return None
    spoken = " ".join(words_spoken)
    spoken = re.sub(r"[,;:]$", "", spoken)
    if spoken[-1] not in ".!?":
        spoken += "."
    spoken = spoken[0].upper() + spoken[1:]
    return Sentence(source=source, spoken=spoken, transcript=" ".join(words_ref))


# ---------------------------------------------------------------- readers


def read_fortunes(directory: str = FORTUNE_DIR) -> Iterator[str]:
    """Yield fortune entries (entries are separated by ``%`` lines), attributions removed."""
    for path in sorted(glob.glob(os.path.join(directory, "*"))):
        name = os.path.basename(path)
        if "." in name or name in FORTUNE_SKIP or not os.path.isfile(path):
            continue
        with open(path, encoding="latin-1") as f:
            raw = f.read()
        for entry in re.split(r"^%\s*$", raw, flags=re.M):
            lines = [ln for ln in entry.splitlines() if not ln.strip().startswith("--")]
            # question/answer tags ("Q: ... A: ...") are not spoken
            yield _QA_TAG.sub(" ", " ".join(lines))


def read_kjv(bible_cmd: str = "bible") -> Iterator[str]:
    """Yield the KJV verses (text only), read with the ``bible`` program."""
    exe = shutil.which(bible_cmd)
    if exe is None:
        raise RuntimeError("the 'bible' program (Debian package bible-kjv) is not installed")
    out = subprocess.run([exe, "-f", "gen1:1-rev22:21"], capture_output=True, text=True,
                         check=True, encoding="latin-1").stdout
    for line in out.splitlines():
        parts = line.split(" ", 1)
        if len(parts) == 2 and ":" in parts[0]:
            yield parts[1]


def read_wordnet(directory: str = WORDNET_DIR) -> Iterator[str]:
    """Yield WordNet glosses: each definition and each quoted example sentence."""
    for pos in ("noun", "verb", "adj", "adv"):
        path = os.path.join(directory, f"data.{pos}")
        if not os.path.exists(path):
            continue
        with open(path, encoding="latin-1") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:
                    continue
                gloss = line.split("|", 1)[1].strip()
                for example in re.findall(r'"([^"]+)"', gloss):
                    yield example
                definitions = re.sub(r'"[^"]*"', "", gloss)
                for d in definitions.split(";"):
                    d = d.strip()
                    if d:
                        yield d


def source_available() -> Dict[str, bool]:
    """Which text sources are installed on this machine."""
    return {
        "fortunes": os.path.isdir(FORTUNE_DIR) and bool(glob.glob(os.path.join(FORTUNE_DIR, "*.dat"))),
        "kjv": shutil.which("bible") is not None and os.path.exists("/usr/lib/bible.data"),
        "wordnet": os.path.exists(os.path.join(WORDNET_DIR, "data.noun")),
    }


def sentences_from(source: str, texts: Iterable[str]) -> Iterator[Sentence]:
    """Split and normalise the raw texts of one source."""
    kjv = source == "kjv"
    for text in texts:
        for s in split_sentences(text, clause_split=kjv):
            sent = normalize_sentence(s, source=source, allcaps_to_title=kjv)
            if sent is not None:
                yield sent


def build_pool(sources: Tuple[str, ...] = ("fortunes", "kjv", "wordnet")) -> List[Sentence]:
    """All unique normalised sentences of the installed ``sources``, in a fixed order.

    Uniqueness is by transcript (the first occurrence wins); the order is
    (source, transcript) so the pool does not depend on file-system order.
    """
    readers = {"fortunes": read_fortunes, "kjv": read_kjv, "wordnet": read_wordnet}
    seen = set()
    pool: List[Sentence] = []
    for src in sources:
        if src not in readers:
            raise ValueError(f"unknown text source {src!r}; known: {sorted(readers)}")
        for sent in sentences_from(src, readers[src]()):
            if sent.transcript not in seen:
                seen.add(sent.transcript)
                pool.append(sent)
    pool.sort(key=lambda s: (s.source, s.transcript))
    return pool
