"""Every option of every ``python -m asr_kd.bin.<name>`` says what it does and its default.

Each module in ``asr_kd/bin`` with an argparse parser exposes ``get_parser()``.
For every action (except ``-h``) the help text must be non-empty and mention
"default" or "required"; required options must say "required"; true/false
options (``type=str2bool``) must say "true/false". ``--help`` must also render
(a stray ``%`` in a help string only fails at formatting time).
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import subprocess
import sys

import pytest

import asr_kd.bin

MODULES = sorted(m.name for m in pkgutil.iter_modules(asr_kd.bin.__path__) if not m.name.startswith("_"))
EXPECTED = {"average", "cache_teacher", "compare", "compute_fbank", "decode", "export_onnx",
            "results", "train", "train_bpe"}


def _parser(name: str) -> argparse.ArgumentParser:
    return importlib.import_module(f"asr_kd.bin.{name}").get_parser()


def test_every_cli_module_has_get_parser() -> None:
    assert EXPECTED <= set(MODULES)
    for name in MODULES:
        mod = importlib.import_module(f"asr_kd.bin.{name}")
        assert callable(getattr(mod, "get_parser", None)), f"asr_kd.bin.{name} has no get_parser()"


@pytest.mark.parametrize("name", MODULES)
def test_every_option_documents_default(name: str) -> None:
    parser = _parser(name)
    problems = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        opt = "/".join(action.option_strings) or action.dest
        text = (action.help or "").strip()
        low = text.lower()
        if not text:
            problems.append(f"{opt}: no help text")
        elif "default" not in low and "required" not in low:
            problems.append(f"{opt}: help states neither its default nor 'required': {text!r}")
        if action.required and "required" not in low:
            problems.append(f"{opt}: required option whose help does not say 'required'")
        if getattr(action.type, "__name__", "").lstrip("_") == "str2bool" and "true/false" not in low:
            problems.append(f"{opt}: true/false option whose help does not say 'true/false'")
    assert not problems, f"asr_kd.bin.{name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", MODULES)
def test_help_renders(name: str) -> None:
    text = _parser(name).format_help()
    assert "--help" in text


@pytest.mark.parametrize("name", MODULES)
def test_help_command_prints(name: str) -> None:
    """``python -m asr_kd.bin.<name> --help`` exits 0 and lists the options."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", f"asr_kd.bin.{name}", "--help"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout and "default" in proc.stdout


@pytest.mark.parametrize("name", MODULES)
def test_help_names_the_module_and_keeps_example_lines(name: str) -> None:
    """The program name is the module invocation; an example's continued lines stay separate lines."""
    parser = _parser(name)
    assert parser.prog == f"python -m asr_kd.bin.{name}"
    for line in parser.format_help().splitlines():
        if "python -m asr_kd.bin" in line:  # a joined continuation leaves a run of spaces then "--"
            assert "    --" not in line.split("python -m", 1)[1], f"{name}: example lines run together: {line!r}"


def test_icefall_spellings_are_aliases_or_refused_with_our_option(capsys) -> None:
    decode = _parser("decode")
    base = ["--cuts", "c.jsonl.gz", "--out-dir", "out"]
    args = decode.parse_args(base + ["--decoding-method", "modified_beam_search", "--beam-size", "7"])
    assert (args.method, args.beam) == ("modified_beam_search", 7)
    assert decode.parse_args(base + ["--decoding-method", "greedy_search"]).method == "greedy"
    assert decode.parse_args(base).method == "greedy"
    train = _parser("train")
    tbase = ["--cuts-train", "a", "--bpe-model", "b", "--exp-dir", "e"]
    assert train.parse_args(tbase + ["--use-fp16", "true"]).amp == "fp16"
    assert train.parse_args(tbase + ["--use-fp16", "false"]).amp == "none"
    assert train.parse_args(tbase).amp == "auto"
    refused = [(decode, base + ["--left-context", "32"], "--left-context-ms 1280"),
               (decode, base + ["--chunk-size", "8"], "--chunk-sizes-ms 320"),
               (decode, base + ["--left-cont", "32"], "unrecognized arguments"),  # no prefix matching
               (decode, base + ["--decoding-method", "fast_beam_search"], "greedy_search, modified_beam_search"),
               (train, tbase + ["--start-epoch", "3"], "--resume"),
               (train, tbase + ["--world-size", "8"], "torchrun --nproc-per-node"),
               (train, tbase + ["--chunk-size", "16"], "icefall's --chunk-size 16 at 50 Hz = 320 ms"),
               (train, tbase + ["--left-context", "32"], "--left-context-ms 1280")]
    for parser, argv, hint in refused:
        with pytest.raises(SystemExit) as e:
            parser.parse_args(argv)
        assert e.value.code == 2
        assert hint in capsys.readouterr().err.strip().splitlines()[-1], argv
