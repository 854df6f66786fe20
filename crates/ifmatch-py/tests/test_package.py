"""The installed package: typed (py.typed, stubs that match the extension)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import ifmatch
from ifmatch import _ifmatch

PACKAGE = Path(ifmatch.__file__).parent


def stub_names() -> dict[str, set[str]]:
    tree = ast.parse((PACKAGE / "_ifmatch.pyi").read_text())
    out: dict[str, set[str]] = {"": set()}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            members = set()
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    members.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
            out[node.name] = members
            out[""].add(node.name)
        elif isinstance(node, ast.FunctionDef):
            out[""].add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[""].add(node.target.id)
    return out


def test_package_is_typed() -> None:
    assert (PACKAGE / "py.typed").exists()
    assert (PACKAGE / "_ifmatch.pyi").exists()


def test_stubs_match_the_extension() -> None:
    stubs = stub_names()
    public = {n for n in dir(_ifmatch) if not n.startswith("_")}
    assert public == stubs[""]
    for name in public:
        obj = getattr(_ifmatch, name)
        if not inspect.isclass(obj):
            continue
        runtime = {m for m in dir(obj) if not m.startswith("_") or m in ("__enter__", "__exit__")}
        runtime -= set(dir(object))
        stubbed = {m for m in stubs[name] if m not in ("__init__", "__iter__", "__next__")}
        assert runtime == stubbed, name


def test_everything_is_exported() -> None:
    for name in ifmatch.__all__:
        assert hasattr(ifmatch, name), name
    errors = [n for n in ifmatch.__all__ if n.endswith("Error")]
    assert all(issubclass(getattr(ifmatch, n), ifmatch.Error) for n in errors)
