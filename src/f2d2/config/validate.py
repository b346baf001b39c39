"""Configs against the schema (``f2d2.config.schema``), one line per bad key: ``<key.path> = <value>; expected
<what>``. The schema itself is never printed.

``validate_experiment(cfg)`` checks a whole experiment file, ``validate_run(run)`` one run config (a stage
merged over the shared sections, what ``f2d2 train`` trains); ``problems`` gives the lines for any
definition. Torch-free; jsonschema is imported on first use, so that ``f2d2 --help`` need not.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import Any

from f2d2.config.schema import resolved, schema


class ConfigError(ValueError):
    """A config value that is missing, unknown or out of range; the message names the key."""


def raise_problems(problems: Iterable[str], title: str = "invalid config") -> None:
    """Raise one ConfigError listing ``problems`` (each once, one per line), if there are any."""
    lines = "\n".join(f"  - {p}" for p in dict.fromkeys(problems))
    if lines:
        raise ConfigError(f"{title}:\n{lines}")


def validate_experiment(cfg: Any) -> None:
    """A whole experiment config (what the Snakefile reads)."""
    raise_problems(problems(cfg))


def validate_run(run: Any) -> None:
    """One run config (keys seed, data, model, objective, train)."""
    raise_problems(problems(run, "run"))


def problems(instance: Any, name: str | None = None, prefix: str = "") -> list[str]:
    """One line per bad key of ``instance`` under the definition ``name`` (None: the whole experiment);
    key paths start with ``prefix``."""
    return list(
        dict.fromkeys(line for error in _validator(name).iter_errors(instance) for line in _lines(error, prefix))
    )


def node_problems(instance: Any, node: dict, prefix: str) -> list[str]:
    """One line per bad key of ``instance`` under the schema node ``node`` (an option's, not the file's);
    key paths start with ``prefix``."""
    validator = _validator_class()(node)
    return list(dict.fromkeys(line for error in validator.iter_errors(instance) for line in _lines(error, prefix)))


def unknown_keys(mapping: dict, allowed: Iterable[str], where: str = "") -> list[str]:
    """One line per key of ``mapping`` (at key path ``where``; "": the top level) not in ``allowed``."""
    allowed = sorted(allowed)
    kind = "key" if where else "top-level key"
    return [f"{_key([k], where)} is an unknown {kind}; allowed: {allowed}" for k in mapping if k not in allowed]


def _is_int(checker, v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(checker, v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@functools.cache
def _validator_class():
    """The schema's validator class, with integers that are ints (not 2.0) and numbers that are finite."""
    import jsonschema

    base = jsonschema.validators.validator_for(schema())
    types = base.TYPE_CHECKER.redefine_many({"integer": _is_int, "number": _is_number})
    return jsonschema.validators.extend(base, type_checker=types)


@functools.cache
def _validator(name: str | None):
    """A validator of the schema or one of its definitions."""
    root = schema()
    node = (
        root
        if name is None
        else {"$schema": root["$schema"], "$ref": f"#/definitions/{name}", "definitions": root["definitions"]}
    )
    return _validator_class()(node)


def _key(parts: Iterable, prefix: str = "") -> str:
    text = prefix
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else f".{p}" if text else str(p)
    return text


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _lines(error, prefix: str) -> list[str]:
    """The lines of one jsonschema error: a missing key, an unknown key or a bad value."""
    node, value, path = resolved(error.schema), error.instance, list(error.absolute_path)
    properties = node.get("properties", {})
    if error.validator == "required":
        return [
            f"{_key([*path, k], prefix)} is missing; expected {describe(properties.get(k, {}))}"
            for k in node["required"]
            if k not in value
        ]
    if error.validator == "additionalProperties":
        return unknown_keys(value, properties, _key(path, prefix))
    return [f"{_key(path, prefix)} = {_short(value)}; expected {describe(node)}"]


_TYPES = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


def describe(node: dict) -> str:
    """What a schema node allows, in a few words: ``an integer >= 1``, ``'self' or 'teacher'``, ..."""
    node = resolved(node)
    if "enum" in node:
        values = node["enum"]
        what = " or ".join(map(repr, values)) if len(values) == 2 else f"one of {values}"
    else:
        types = node.get("type", [])
        what = " or ".join(_TYPES[t] + _detail(t, node) for t in ([types] if isinstance(types, str) else types))
    what = what or "a value"
    return f"{what} ({node['description']})" if "description" in node else what


def _detail(kind: str, node: dict) -> str:
    """The constraints on a value of one type: a range, a length, the keys a mapping needs, ..."""
    if kind in ("integer", "number"):
        return _range(node)
    if kind == "string":
        return "".join(
            [
                " of at least one character" if node.get("minLength") else "",
                f" matching /{node['pattern']}/" if "pattern" in node else "",
            ]
        )
    if kind == "array":
        size = [
            f"at least {node['minItems']}" if "minItems" in node else "",
            f"at most {node['maxItems']}" if "maxItems" in node else "",
        ]
        return "".join(
            [
                f" of {' and '.join(s for s in size if s)} item(s)" if any(size) else "",
                ", without repeats" if node.get("uniqueItems") else "",
                f", each {describe(node['items'])}" if "items" in node else "",
            ]
        )
    if kind == "object":
        return "".join(
            [
                f" with keys {node['required']}" if node.get("required") else "",
                f" of at least {node['minProperties']} key(s)" if "minProperties" in node else "",
            ]
        )
    return ""


def _range(node: dict) -> str:
    lo = ("[", node["minimum"]) if "minimum" in node else ("(", node.get("exclusiveMinimum"))
    hi = ("]", node["maximum"]) if "maximum" in node else (")", node.get("exclusiveMaximum"))
    if lo[1] is not None and hi[1] is not None:
        return f" in {lo[0]}{lo[1]}, {hi[1]}{hi[0]}"
    if lo[1] is not None:
        return f" {'>=' if lo[0] == '[' else '>'} {lo[1]}"
    if hi[1] is not None:
        return f" {'<=' if hi[0] == ']' else '<'} {hi[1]}"
    return ""
