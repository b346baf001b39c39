"""The per-point CSVs that ``f2d2 nll`` writes, read back strictly (a half-written one is refused); no torch, so
that the gather scripts start fast."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def read_table(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """(header, float64 rows (N >= 1, len(header))) of a CSV as ``f2d2.io.arrays.write_array`` writes it: a header
    line, then a line of numbers per row, every line ending in a newline. A half-written file (empty, cut
    mid-line, a row of too few or too many fields, an empty or non-numeric field, no rows) raises ValueError
    naming the file and the line."""
    text = Path(path).read_text()
    if not text.endswith("\n"):
        raise ValueError(f"{path} {'is empty' if not text else 'ends mid-line'}: a half-written file?")
    header, *lines = text[:-1].split("\n")
    header = header.split(",")
    if not lines:
        raise ValueError(f"{path} holds a header line but no rows: a half-written file?")
    rows = []
    for n, line in enumerate(lines, start=2):
        fields = line.split(",")
        if len(fields) != len(header):
            problem = f"line {n} has {len(fields)} fields, the header {len(header)}"
            raise ValueError(f"{path} {problem}: a half-written file?")
        try:
            rows.append([float(f) for f in fields])
        except ValueError as e:
            raise ValueError(f"{path} line {n}: {e}") from None
    return header, np.array(rows)


def read_nll_table(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """``read_table`` of a per-point CSV that ``f2d2 nll`` wrote (columns ``nll_nats``, ``bpd``[,
    ``analytic_nll_nats``]); ValueError naming the file when it has no ``nll_nats`` column."""
    header, rows = read_table(path)
    if "nll_nats" not in header:
        raise ValueError(f"{path} has no nll_nats column (columns: {header}); expected a file written by f2d2 nll")
    return header, rows
