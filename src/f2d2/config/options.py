"""Declared options: a registry entry's config keys, each stated once beside the code that reads it.

An :class:`Option` is one keyword of a constructor (an objective's): its default, the values it allows
(a JSON-schema node, as in ``schema.yaml``), a one-line meaning, the name it had before (refused with a
message naming this one) and the other options it depends on (``only``: it exists only where those have
these values). :func:`option_problems` checks a config section against a list of options, one line per bad
key in the schema's words; :func:`resolve_options` completes a section with every default, which is what a
run's ``config.yaml``, its fingerprint and Table 3 record. Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from f2d2.config.validate import node_problems


@dataclass(frozen=True)
class Option:
    """One option: ``name``, ``default``, ``allowed`` (a JSON-schema node of its values), ``meaning`` (one
    line), ``renamed_from`` (its old name) and ``only`` ({option: value} that must hold for it to exist)."""

    name: str
    default: Any
    allowed: Mapping[str, Any]
    meaning: str
    renamed_from: str | None = None
    only: Mapping[str, Any] = field(default_factory=dict)

    def node(self) -> dict:
        """The JSON-schema node of the option's values, its meaning as the description."""
        return {**self.allowed, "description": self.meaning}

    def applies(self, values: Mapping[str, Any]) -> bool:
        """Whether the option exists where the other options have ``values`` (defaults filled in)."""
        return all(values.get(k) == v for k, v in self.only.items())


def applicable(options: Sequence[Option], fixed: Mapping[str, Any]) -> list[Option]:
    """The options that exist where ``fixed`` holds (the keywords a registry name fixes), less those."""
    defaults = {o.name: o.default for o in options} | dict(fixed)
    return [o for o in options if o.name not in fixed and o.applies(defaults)]


def option_problems(
    options: Sequence[Option], values: Mapping[str, Any], where: str, what: str, *, extra: Sequence[str] = ()
) -> list[str]:
    """One line per key of ``values`` (the config section at key path ``where``, e.g. ``objective``) that is
    unknown, renamed or out of range for ``options``; ``what`` names the entry in messages (``objective
    'shortcut'``); ``extra`` are keys checked elsewhere (the section's ``name``, a teacher)."""
    known = {o.name: o for o in options}
    renamed = {o.renamed_from: o.name for o in options if o.renamed_from}
    problems = [f"{where}.{old} was renamed {where}.{new}; use {new}" for old, new in renamed.items() if old in values]
    unknown = sorted(k for k in values if k not in known and k not in renamed and k not in extra)
    if unknown:
        problems.append(f"{what} has no option(s) {unknown}; allowed: {sorted(known)}")
    node = {
        "type": "object",
        "properties": {k: known[k].node() for k in values if k in known},
    }
    return problems + node_problems({k: v for k, v in values.items() if k in known}, node, where)


def resolve_options(options: Sequence[Option], values: Mapping[str, Any]) -> dict[str, Any]:
    """Every option's value: ``values``' where given, else its default (the caller has checked ``values``)."""
    return {o.name: values.get(o.name, o.default) for o in options}
