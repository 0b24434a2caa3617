"""The package's shape: imports flow cli -> codec <- models, the core names no codec, cli/ has no
import cycle, and a codec is its folder plus one entry-point line."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"codec": "nmc.codec", "cli": "nmc.cli", "models": "nmc.models"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [PACKAGES[rel.parts[0]], *rel.parts[1:]]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every nmc module `path` imports, at module level or inside functions (TYPE_CHECKING aside)."""
    tree = ast.parse(path.read_text())
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("nmc.")}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) + ("." + node.module if node.module else "") if node.level else node.module or ""
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return {m for m in out if m.startswith("nmc.")}


MODULES = {module_name(p): p for d in PACKAGES for p in (ROOT / d).rglob("*.py")}


def cycles(modules: set[str]) -> list[list[str]]:
    graph = {m: sorted(imports(MODULES[m]) & modules) for m in modules}
    found, done = [], set()

    def visit(m: str, stack: list[str]) -> None:
        if m in stack:
            found.append(stack[stack.index(m) :] + [m])
            return
        if m in done:
            return
        for n in graph[m]:
            visit(n, stack + [m])
        done.add(m)

    for m in sorted(modules):
        visit(m, [])
    return found


def test_cli_has_no_import_cycle() -> None:
    assert cycles({m for m in MODULES if m.startswith("nmc.cli")}) == []


def test_imports_flow_from_cli_and_models_to_codec() -> None:
    for name, path in MODULES.items():
        if name.startswith("nmc.codec"):
            assert not {m for m in imports(path) if m.startswith(("nmc.cli", "nmc.models"))}, name
        if name.startswith("nmc.models"):
            assert not {m for m in imports(path) if m.startswith("nmc.cli")}, name


def entry_points() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["nmc.codecs"]


def test_the_core_names_no_codec() -> None:
    """Only the frozen dictionary of format 1 holds codec names (the headers of that time)."""
    names = re.compile("|".join(entry_points()))
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "codec").rglob("*.py") if p.name != "format1.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if names.search(line)]  # fmt: skip
    assert offenders == []


def test_a_codec_is_its_folder_and_one_entry_point() -> None:
    """Every codec package is found by the wheel's package list through one pattern, and its
    entry point names its adapter; nothing else in pyproject.toml names it."""
    toml = (ROOT / "pyproject.toml").read_text()
    for name, target in entry_points().items():
        assert target == f"nmc.models.{name}.codec" and (ROOT / "models" / name / "codec.py").is_file()
        assert toml.count(name) == 2, f"{name} is named outside its entry-point line"
