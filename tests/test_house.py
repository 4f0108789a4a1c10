"""The house rules of the code itself (#12), checked on the source so they cannot quietly erode.

Imports go one way, down this list of layers, and never up; ``dsetlog/`` holds at most 8 modules of its
own; no module, class or function outgrows its room; every error the code raises on purpose has one root;
and only the store knows the log's byte layout.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

from dsetlog.errors import DsetError

ROOT = Path(__file__).resolve().parents[1]

# Lowest first: a unit may import its own layer and those before it, never one after it. The ground floor
# (dsetlog's own modules: errors, ids, paths, fsutil, redaction) imports nothing of the others.
LAYERS: list[set[str]] = [
    {"dsetlog"},
    {"dsetlog.store"},
    {"projections"},
    {"dsetlog.llm", "dsetlog.simulator"},
    {"dsetlog.prompts"},
    {"dsetlog.engine"},
    {"dsetlog.evaluation"},
    {"dsetlog.catalog"},
    {"dsetlog.export"},
    {"dsetlog.generation"},
    {"dsetlog.jobs"},
    {"api"},
    {"dsetlog.cli"},
]
PACKAGES = ("dsetlog", "projections", "api")
MAX_MODULE_LINES, MAX_CLASS_LINES, MAX_FUNCTION_LINES = 700, 300, 80
MAX_TOP_MODULES = 8


def source_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """The layer unit a module belongs to: a dsetlog subpackage, dsetlog's ground floor, projections or api."""
    if module == "dsetlog.__main__":
        return "dsetlog.cli"  # `python -m dsetlog`: the CLI's entry point
    parts = module.split(".")
    if parts[0] == "dsetlog" and len(parts) > 1 and (ROOT / "dsetlog" / parts[1]).is_dir():
        return "dsetlog." + parts[1]
    return parts[0]


def layer_of(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def imported(path: Path) -> set[str]:
    """First-party modules a file imports (at module level or inside functions)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            names.add(base)
    return {n for n in names if n.split(".")[0] in PACKAGES}


def test_imports_go_down_the_layers() -> None:
    up = []
    for path in source_files():
        unit = unit_of(module_name(path))
        for name in imported(path):
            target = unit_of(name)
            if layer_of(target) > layer_of(unit):
                up.append(f"{path.relative_to(ROOT)} ({unit}) imports {name} ({target})")
    assert not up, "imports that go up a layer:\n" + "\n".join(up)


def test_dsetlog_holds_few_modules_of_its_own() -> None:
    own = sorted(p.name for p in (ROOT / "dsetlog").glob("*.py"))
    assert len(own) <= MAX_TOP_MODULES, own


def test_no_module_class_or_function_outgrows_its_room() -> None:
    big = []
    for path in source_files():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            big.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            if isinstance(node, ast.ClassDef) and size > MAX_CLASS_LINES:
                big.append(f"{path.relative_to(ROOT)}: class {node.name} {size} lines")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and size > MAX_FUNCTION_LINES:
                big.append(f"{path.relative_to(ROOT)}: {node.name}() {size} lines")
    assert not big, "\n".join(big)


def all_modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        module = importlib.import_module(pkg)
        names.append(pkg)
        names += [m.name for m in pkgutil.walk_packages(module.__path__, pkg + ".")
                  if not m.name.endswith(".__main__")]  # importing it would run the CLI
    return names


@pytest.mark.parametrize("name", all_modules())
def test_every_error_raised_on_purpose_has_the_one_root(name: str) -> None:
    """Public exception classes derive from DsetError (private ones are control flow inside one module)."""
    module = importlib.import_module(name)
    strays = [cls.__name__ for _, cls in inspect.getmembers(module, inspect.isclass)
              if cls.__module__ == name and issubclass(cls, BaseException) and not cls.__name__.startswith("_")
              and not issubclass(cls, DsetError)]
    assert not strays, f"{name}: {strays} do not derive from dsetlog.errors.DsetError"


def test_only_the_store_knows_the_log_file() -> None:
    """No module outside dsetlog.store finds the log's file itself (by LOG_NAME or the bare file name): they
    go through dsetlog.store, which alone knows its byte layout."""
    strays = []
    for path in source_files():
        if unit_of(module_name(path)) == "dsetlog.store" or path == ROOT / "dsetlog" / "paths.py":
            continue  # paths.py reserves the name inside the data dir (an output_dir must not take it)
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Name) and node.id == "LOG_NAME") or (
                    isinstance(node, ast.alias) and node.name == "LOG_NAME") or (
                    isinstance(node, ast.Constant) and node.value == "events.jsonl"):
                strays.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}")
    assert not strays, "\n".join(strays)
