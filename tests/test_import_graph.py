"""The import graph of ``asr_kd`` runs one way: no circles, lower floors never import higher ones.

The graph is read with ``ast`` from every module of the package, function-local
imports included (an import hidden in a function is still a dependency).  An
edge ``a -> b`` means module ``a`` imports module ``b`` (``from pkg import name``
counts as an import of ``pkg.name`` when that is a module, else of ``pkg``).

Rules checked:

* no circle among modules (strongly connected components of size > 1);
* floors (:data:`FLOORS`, lowest first): a module may import its own floor or
  lower ones; an import of a higher floor is an error unless it is listed in
  :data:`KNOWN_UPWARD_EDGES` (known, to be removed; the list must stay exact);
* inside ``asr_kd/train``: the command-line module ``asr_kd.train.cli`` is
  imported only by entry points (``asr_kd.bin.*``); the loss computers
  (:data:`LOSS_MODULES`) do not reach it, even indirectly; only the CLI module
  imports ``argparse``; nothing imports ``importlib``.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "asr_kd"

#: floors of the package, lowest first; a module is on the floor of its longest listed prefix
FLOORS: list[list[str]] = [
    ["asr_kd", "asr_kd.types", "asr_kd.atomic", "asr_kd.options"],  # version, type aliases, atomic writes, shared argparse helpers
    ["asr_kd.rnnt"],  # the transducer losses (k2's names)
    ["asr_kd.models", "asr_kd.data"],  # the networks; tokenizer, features, loaders
    ["asr_kd.distill", "asr_kd.metrics"],  # distillation losses and teacher cache; WER, latency, reports
    ["asr_kd.decode", "asr_kd.export", "asr_kd.train"],  # the three uses of a model
    ["asr_kd.bin"],  # command-line entry points
]

#: imports from a lower floor to a higher one that exist and are to be removed; each entry must
#: still exist (delete it when it is fixed). Empty: model-file I/O lives in asr_kd.models.checkpoint.
KNOWN_UPWARD_EDGES: set[tuple[str, str]] = set()

#: the loss computers of train/: they must not depend on the command line
LOSS_MODULES = (
    "asr_kd.train.loss_computer",
    "asr_kd.train.losses",
    "asr_kd.train.kd",
    "asr_kd.train.kd_config",
    "asr_kd.train.loss_factory",
)
CLI_MODULE = "asr_kd.train.cli"


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = list(p.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _known(name: str) -> str:
    """``name`` or its longest prefix that is a module of the package ("" when outside it)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(module: str, path: Path) -> set[str]:
    """Modules of the package that ``module`` imports anywhere in its file (plus external top names)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out.add(_known(a.name) or a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            for a in node.names:
                target = f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                out.add(_known(target) or target.split(".")[0])
    out.discard(module)
    return out


IMPORTS = {m: _imports(m, p) for m, p in MODULES.items()}
GRAPH = {m: {t for t in ts if t in MODULES} for m, ts in IMPORTS.items()}


def _floor(module: str) -> int:
    best, floor = -1, -1
    for i, names in enumerate(FLOORS):
        for n in names:
            if (module == n or module.startswith(n + ".")) and len(n) > best:
                best, floor = len(n), i
    return floor


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for t in GRAPH[todo.pop()]:
            if t not in seen:
                seen.add(t)
                todo.append(t)
    return seen


def test_every_module_is_on_a_floor() -> None:
    assert [m for m in MODULES if _floor(m) < 0] == []


def test_no_import_cycles() -> None:
    cycles = _cycles(GRAPH)
    assert not cycles, "import circles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_from_a_lower_floor_to_a_higher_one() -> None:
    upward = {(m, t) for m, ts in GRAPH.items() for t in ts if _floor(t) > _floor(m)}
    new = sorted(upward - KNOWN_UPWARD_EDGES)
    assert not new, "imports from a lower floor to a higher one (see FLOORS): " + "; ".join(
        f"{m} -> {t}" for m, t in new)
    fixed = sorted(KNOWN_UPWARD_EDGES - upward)
    assert not fixed, f"KNOWN_UPWARD_EDGES lists edges that no longer exist; delete them: {fixed}"


def test_train_loss_computers_never_reach_the_cli() -> None:
    for m in LOSS_MODULES:
        assert m in MODULES, m
        assert CLI_MODULE not in _reachable(m), f"{m} depends on the command line module {CLI_MODULE}"


def test_only_entry_points_import_the_cli() -> None:
    importers = sorted(m for m, ts in GRAPH.items() if CLI_MODULE in ts)
    assert importers and all(m.startswith("asr_kd.bin.") for m in importers), importers


def test_namespace_ends_at_the_cli_in_train() -> None:
    train = {m: ts for m, ts in IMPORTS.items() if m.startswith("asr_kd.train")}
    assert sorted(m for m, ts in train.items() if "argparse" in ts) == [CLI_MODULE]
    assert sorted(m for m, ts in train.items() if "importlib" in ts) == []
    hits = [f"{p.relative_to(REPO)}:{i}" for m, p in MODULES.items() if m != CLI_MODULE
            for i, line in enumerate(p.read_text().splitlines(), 1) if "getattr(args" in line]
    assert hits == [], f"getattr(args, ...) outside {CLI_MODULE}: {hits}"
