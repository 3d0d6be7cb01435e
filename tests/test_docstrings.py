"""Every public name of the package, and every public method of its public classes, has
a docstring (the API reference is built from them)."""

from __future__ import annotations

import inspect

import flask_sessionstore
from flask_sessionstore import cache, orm


def _public_objects() -> list[tuple[str, object]]:
    found = [(name, getattr(flask_sessionstore, name)) for name in flask_sessionstore.__all__]
    found.append(("RedisSessionCache", cache.RedisSessionCache))
    found.append(("orm", orm))
    return found


def _missing() -> list[str]:
    missing = []
    for name, obj in _public_objects():
        documentable = inspect.ismodule(obj) or inspect.isclass(obj) or callable(obj)
        if documentable and not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            for attribute, member in vars(obj).items():
                if attribute.startswith("_"):
                    continue
                target = member.fget if isinstance(member, property) else member
                if inspect.isfunction(target) and not inspect.getdoc(target):
                    missing.append(f"{name}.{attribute}")
    return missing


def test_every_public_name_has_a_docstring() -> None:
    assert _missing() == []
