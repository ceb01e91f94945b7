"""Command-line spellings from other toolkits: accepted where they mean the same, else refused.

icefall users type ``--decoding-method greedy_search``, ``--beam-size 4``,
``--use-fp16 true``, ``--start-epoch 10``, ``--world-size 8``. Where our tool
has the same thing under another name, the icefall spelling is an alias that
lands in our option's ``dest``; where the meaning differs (or a unit differs,
e.g. icefall's ``--chunk-size 16`` in 20 ms frames against our ``--chunk-ms
320``), the spelling is refused with one line naming the option to use instead.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable, Mapping, Optional, Sequence

__all__ = ["add_refused_option", "mapped_value"]


class _Refuse(argparse.Action):
    """Fails at parse time with ``hint`` (argparse prints usage plus one error line, exit 2)."""

    def __init__(self, option_strings: Sequence[str], dest: str, hint: str = "", **kwargs: Any) -> None:
        self.hint = hint
        super().__init__(option_strings, dest=argparse.SUPPRESS, nargs="?", default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> None:
        parser.error(f"{option_string} is not accepted by this tool: {self.hint}")


def add_refused_option(group: Any, name: str, hint: str) -> None:
    """``name`` (e.g. ``--start-epoch``) exits with ``hint``; shown in --help as not accepted."""
    group.add_argument(name, action=_Refuse, hint=hint, metavar="",
                       help=f"not accepted (default: not used): {hint}")


def mapped_value(mapping: Mapping[str, str], option: str) -> Callable[[str], str]:
    """An argparse ``type`` translating another toolkit's values (keys) into ours (values)."""

    def convert(value: str) -> str:
        key = value.strip().lower()
        if key not in mapping:
            raise argparse.ArgumentTypeError(
                f"{option} {value!r}: accepted values are {', '.join(sorted(mapping))}")
        return mapping[key]

    convert.__name__ = option.lstrip("-").replace("-", "_")
    return convert
