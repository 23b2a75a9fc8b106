"""Every `monkeypatch.setattr` in the tests patches something the code really looks up.

A patch on a name that a module only re-exports (imported and never used there) changes
nothing the code calls, and the test that relies on it passes for the wrong reason. So each
patched siftkit name must be defined in the module it is patched on, or be looked up by that
module's own code (a `from x import f` binding that the module calls)."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


def _aliases(tree: ast.Module) -> dict[str, str]:
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _patch_targets():
    """(test file, line, dotted owner, attribute) of every setattr(owner, "name", value) /
    setattr("dotted.name", value) on a siftkit owner in the tests."""
    for path in sorted(TESTS.rglob("test_*.py")):
        src = path.read_text(encoding="utf-8")
        tree = ast.parse(src)
        aliases = _aliases(tree)
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "setattr"
                and len(node.args) >= 2
            ):
                continue
            first, second = node.args[0], node.args[1]
            if isinstance(first, ast.Constant) and isinstance(first.value, str) and "." in first.value:
                owner, name = first.value.rsplit(".", 1)
            elif isinstance(second, ast.Constant) and isinstance(second.value, str):
                seg = ast.get_source_segment(src, first) or ""
                head, _, rest = seg.partition(".")
                owner = aliases.get(head, head) + (f".{rest}" if rest else "")
                name = second.value
            else:
                continue
            if owner.startswith("siftkit"):
                yield path.name, node.lineno, owner, name


def _resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def _looked_up_in(module, name: str) -> bool:
    tree = ast.parse(inspect.getsource(module))
    return any(isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load) for n in ast.walk(tree))


TARGETS = list(_patch_targets())


def test_the_tests_patch_something():
    assert len(TARGETS) > 20  # the scan finds the patches (a broken scan would pass everything)


@pytest.mark.parametrize("where,line,owner,name", TARGETS, ids=[f"{f}:{n}" for f, n, _, _ in TARGETS])
def test_patch_lands_where_the_code_looks(where, line, owner, name):
    obj = _resolve(owner)
    if inspect.ismodule(obj):
        if not obj.__name__.startswith("siftkit"):
            return  # a library's attribute patched through a siftkit module: global, it lands
        assert hasattr(obj, name), f"{where}:{line}: {owner} has no {name}"
        value = getattr(obj, name)
        home = getattr(value, "__module__", obj.__name__)
        assert home == obj.__name__ or _looked_up_in(obj, name), (
            f"{where}:{line}: {owner}.{name} is only re-exported there (defined in {home}); patch it where it is used"
        )
    elif inspect.isclass(obj):
        assert name in vars(obj), f"{where}:{line}: {owner}.{name} is inherited; patch the class that defines it"
