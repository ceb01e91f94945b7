"""The docs name only options that exist, and state the defaults the parsers have.

* Every ``--option`` written in code (inline backticks or fenced blocks) in
  README.md and docs/*.md exists in one of our command lines: the
  ``asr_kd.bin`` tools, the recipes' ``run.sh``, ``tools/*.py`` and the
  recipes' ``local/*.py`` -- or belongs to another program the docs show
  (sherpa-onnx, torchrun), listed below.
* docs/training.md's flag table: every ``--flag VALUE`` cell whose value is a
  single literal equals ``python -m asr_kd.bin.train``'s default.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import subprocess
from pathlib import Path

import asr_kd.bin

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]
# options of other programs the docs show, and the placeholder of "each --name VALUE"
FOREIGN = {"--encoder", "--decoder", "--joiner", "--tokens", "--num-threads", "--provider", "--decoding-method",
           "--standalone", "--nproc_per_node", "--nproc-per-node", "--nnodes", "--node-rank", "--rdzv-backend",
           "--rdzv-endpoint", "--rdzv-id", "--name"}


def _our_options() -> set[str]:
    opts: set[str] = set()
    for m in (m for m in pkgutil.iter_modules(asr_kd.bin.__path__) if not m.name.startswith("_")):
        for action in importlib.import_module(f"asr_kd.bin.{m.name}").get_parser()._actions:
            opts.update(action.option_strings)
    for run_sh in REPO.glob("egs/*/ASR/run.sh"):
        text = subprocess.run(["bash", str(run_sh), "--help"], capture_output=True, text=True, timeout=60).stdout
        opts.update(re.findall(r"(--[a-z][a-z0-9-]*)", text))
    for script in [*REPO.glob("tools/*.py"), *REPO.glob("egs/*/ASR/local/*.py")]:
        opts.update(re.findall(r"add_argument\(\s*\"(--[a-z][a-z0-9-]*)\"", script.read_text()))
        opts.update(re.findall(r"\"(--[a-z][a-z0-9-]*)\"", script.read_text()))
    return opts


def _code_spans(text: str) -> list[str]:
    fenced = re.findall(r"```.*?```", text, flags=re.S)
    rest = re.sub(r"```.*?```", "", text, flags=re.S)
    return fenced + re.findall(r"`[^`\n]+`", rest)


def test_every_option_in_the_docs_exists() -> None:
    ours = _our_options()
    unknown = []
    for doc in DOCS:
        for span in _code_spans(doc.read_text()):
            for opt in re.findall(r"(?<![\w-])(--[a-z][a-z0-9_-]*)", span):
                if opt not in ours and opt not in FOREIGN:
                    unknown.append(f"{doc.relative_to(REPO)}: {opt}")
    assert not unknown, "options named in the docs that no parser has:\n" + "\n".join(sorted(set(unknown)))


def _same(doc_value: str, default: object) -> bool:
    if isinstance(default, bool):
        return doc_value == str(default).lower()
    if isinstance(default, (int, float)):
        try:
            return float(doc_value) == float(default)
        except ValueError:
            return False
    return doc_value == str(default)


def test_training_flag_table_states_the_parser_defaults() -> None:
    from asr_kd.bin.train import get_parser

    defaults = {o: a.default for a in get_parser()._actions for o in a.option_strings
                if a.default is not argparse.SUPPRESS}
    table = [line for line in (REPO / "docs" / "training.md").read_text().splitlines() if line.startswith("| ")]
    checked, wrong = 0, []
    for line in table:
        for flag, value in re.findall(r"`(--[a-z][a-z0-9-]*) ([^`|\s]+)`", line):
            if value.isupper() or value.startswith("["):  # a placeholder such as PATH or [PATH]
                continue
            checked += 1
            if flag not in defaults or not _same(value, defaults[flag]):
                wrong.append(f"{flag}: docs say {value}, the parser's default is {defaults.get(flag, 'no such flag')!r}")
    assert checked >= 20  # the table is where the defaults are
    assert not wrong, "docs/training.md:\n" + "\n".join(wrong)
