"""Docstring examples are part of the docs: they must run and be right."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import fastseg

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(fastseg.__path__, prefix="fastseg.")
    if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
