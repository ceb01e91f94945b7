"""The documentation holds together: README.md is a landing page of at most
300 lines, every relative link in README.md and docs/*.md reaches an existing
file (and, for Markdown targets, an existing heading), and no project file
refers to a design document that users do not have.

Fast (reads text files only); runs with the rest of the suite or alone:
``python -m pytest tests/test_docs.py``.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 300

# Folders (and files) whose text must not cite documents users lack.
CHECKED_PATHS = ("asr_kd", "tests", "tools", "docs", "egs", "README.md")
# Written in two parts so that this file does not match itself.
MISSING_DOCUMENT = "DESIGN" + ".md"

_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def _doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _prose_lines(path: Path) -> list[str]:
    """Lines outside fenced code blocks (code is not Markdown)."""
    out, in_fence = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            out.append(line)
    return out


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to '-'."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in _prose_lines(path):
        m = _HEADING.match(line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(2).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _relative_links(path: Path) -> list[str]:
    links = []
    for line in _prose_lines(path):
        for target in _LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            links.append(target)
    return links


def test_readme_is_a_landing_page():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; the limit is {README_MAX_LINES} (move detail to docs/)"


@pytest.mark.parametrize("doc", _doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path):
    broken = []
    for link in _relative_links(doc):
        target, _, anchor = link.partition("#")
        dest = (doc.parent / target).resolve() if target else doc
        rel = os.path.relpath(dest, ROOT).replace(os.sep, "/")
        if not dest.exists():
            broken.append(f"{link} (no file {rel})")
            continue
        if anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{link} (no heading #{anchor} in {rel})")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links: " + "; ".join(broken)


def _checked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *CHECKED_PATHS], cwd=ROOT,
                             capture_output=True, check=True).stdout
        files = [ROOT / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        files = []
    if not files:  # not a git checkout: walk the folders, skipping generated data
        for top in CHECKED_PATHS:
            p = ROOT / top
            if p.is_file():
                files.append(p)
                continue
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = [d for d in dirnames if d not in ("data", "exp", "__pycache__")]
                files += [Path(dirpath) / f for f in filenames]
    return [f for f in files if f.is_file()]


def test_no_reference_to_missing_design_document():
    hits = []
    for f in _checked_files():
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary files (plots, audio)
        if MISSING_DOCUMENT.lower() in text.lower():
            hits.append(str(f.relative_to(ROOT)))
    assert not hits, f"files citing {MISSING_DOCUMENT}, which users do not have: {hits}"
