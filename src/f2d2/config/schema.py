"""The config schema (``schema.yaml`` beside this file): each key's type, range and default, stated once.

Read with PyYAML only (no jsonschema, no torch), so that ``f2d2 --help`` and ``f2d2 submit`` take their
defaults from it cheaply. ``section("train.early_stop")`` is the schema of one key, ``defaults(node)``
the defaults it states.
"""

from __future__ import annotations

import copy
import functools
from importlib.resources import files
from typing import Any

import yaml


@functools.cache
def schema() -> dict:
    """The experiment schema (JSON Schema, draft 2020-12); do not modify it."""
    return yaml.safe_load(files("f2d2.config").joinpath("schema.yaml").read_text())


def resolved(node: dict) -> dict:
    """``node`` with a local ``$ref`` replaced by the definition it names (sibling keys take precedence)."""
    ref = node.get("$ref")
    if ref is None:
        return node
    name = ref.removeprefix("#/definitions/")
    return {**resolved(schema()["definitions"][name]), **{k: v for k, v in node.items() if k != "$ref"}}


def definition(name: str) -> dict:
    """One of the schema's ``definitions`` (``run``, ``resources``, ``early_stop``, ...)."""
    return resolved(schema()["definitions"][name])


def section(path: str) -> dict:
    """The schema of the experiment key ``path`` (dotted: ``eval.fid``)."""
    node = schema()
    for key in path.split("."):
        node = resolved(node["properties"][key])
    return node


def defaults(node: dict) -> dict[str, Any]:
    """The defaults an object schema states for its keys: a key's own ``default``, else (an object) the
    defaults of its keys, when there are any."""
    out = {}
    for key, sub in node.get("properties", {}).items():
        sub = resolved(sub)
        if "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        elif nested := defaults(sub):
            out[key] = nested
    return out
