"""Shared helpers for the gather scripts: reading cells, a method's row, method labels, atomic writes.

A run's label (its name in tables and figures) comes from the rule's ``params.labels``, {run: label} of every
training run (``f2d2.preflight.runs.run_labels``: its stage's ``label``, else its objective's).

Cell files live at ``OUT/eval/<kind>/{run}/K{k}.json`` (``K{k}_guided.json`` for
self-guided samples) with the per-point ``K{k}.csv`` beside them; the teacher's
adaptive-solver reference is ``OUT/eval/nll/teacher/reference.json``.
"""

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from f2d2.config.solvers import FIXED_GRID_SOLVERS  # noqa: E402
from f2d2.io.atomic import atomic_path  # noqa: E402
from f2d2.io.table import read_nll_table  # noqa: E402

_CELL_RE = re.compile(r"^K(\d+)(_guided)?\.(json|csv)$")


def read_json(path: str | os.PathLike) -> dict:
    """A cell JSON as a dict; the error names the file."""
    path = Path(path)
    try:
        with path.open() as f:
            cell = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"cell file {path} not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"cell file {path} is not valid JSON: {e}") from None
    if not isinstance(cell, dict):
        raise ValueError(f"cell file {path} must hold a JSON object, got {type(cell).__name__}")
    return cell


def cell(cells: dict, run: str, k: int, kind: str) -> tuple[str, dict]:
    """(path, content) of the ``kind`` cell (run, K) in ``cells``; a clear error when it is missing."""
    if (run, k) not in cells:
        raise KeyError(f"no {kind} cell for run {run!r}, K={k}")
    path = cells[(run, k)]
    return path, read_json(path)


def cells_by_k(run: str, steps: Iterable[int], cells: dict[str, dict]) -> Iterator[tuple[int, dict]]:
    """For each K of ``steps``: (K, {kind: (path, content)}), reading run's (run, K) cell of every kind of
    ``cells`` ({kind: {(run, k): path}}, e.g. {"NLL": ..., "sample": ...}) in that order."""
    for k in steps:
        yield k, {kind: cell(of_kind, run, k, kind) for kind, of_kind in cells.items()}


def method_row(
    run: str,
    steps: Iterable[int],
    cells: dict[str, dict],
    fill: Callable[[dict, int, dict], None],
    labels: dict[str, str],
) -> dict:
    """A table row of training run ``run``: ``method`` (its label in ``labels``, :func:`method_label`), ``run``,
    the K columns that ``fill(row, k, read)`` sets from each K's cells (``read`` as :func:`cells_by_k` yields
    it) and ``seed``, the training seed all of the row's cells share."""
    row = {"method": method_label(run, labels), "run": run}
    used = []
    for k, read in cells_by_k(run, steps, cells):
        used += read.values()
        fill(row, k, read)
    row["seed"] = train_seed(used)
    return row


def cell_value(cell: dict, key: str, path: str | os.PathLike = "?"):
    """``cell[key]``, with an error naming the file when the key is missing."""
    if key not in cell:
        raise KeyError(f"cell {path} has no {key!r} (keys: {sorted(cell)})")
    return cell[key]


def test_split(path: str | os.PathLike) -> str:
    """Where the test points come from, in words: ``test_split`` of the JSON ``f2d2 data --summary`` wrote."""
    return cell_value(read_json(path), "test_split", path)


def training_end(path: str | os.PathLike) -> dict:
    """How a run's training ended, from its ``train.json`` (``f2d2 train --summary``): ``trained_steps``, the
    steps it took, and ``early_stop_step``, the step of its calibrated early stop (None when it ran all its
    ``train.steps``)."""
    summary = read_json(path)
    stopped = summary.get("early_stopped")
    stop_step = None if stopped is None else int(stopped["step"])
    steps = int(cell_value(summary, "steps", path)) if stop_step is None else stop_step
    return {"trained_steps": steps, "early_stop_step": stop_step}


TRAINING_COLUMNS = ("trained_steps", "early_stop_step")


def training_columns(run: str | None, training: dict[str, str] | None) -> dict:
    """A table row's training columns: {} without ``training`` ({run: train.json}), else
    :func:`training_end` of ``run`` (both None for a row of no training run, e.g. the analytic density)."""
    if training is None:
        return {}
    if run not in training:
        return dict.fromkeys(TRAINING_COLUMNS)
    return training_end(training[run])


def training_inputs(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    """{run: path} of Snakemake's list of ``{OUT}/train/{run}/train.json`` inputs."""
    return {Path(p).parent.name: str(p) for p in paths}


def read_points_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A per-point CSV (``nll_nats,bpd[,analytic_nll_nats]``) as a float DataFrame; a half-written one is refused,
    naming the file and the line (``f2d2.io.table.read_nll_table``)."""
    columns, rows = read_nll_table(Path(path))
    return pd.DataFrame(rows, columns=columns)


def method_label(run: str, labels: dict[str, str]) -> str:
    """``run``'s label in tables and figures: ``labels[run]`` (``labels``: {run: label} of every training run,
    the rule's ``params.labels``, ``f2d2.preflight.runs.run_labels``)."""
    if run not in labels:
        raise ValueError(f"no label for run {run!r}; the labelled runs: {list(labels)}")
    return labels[run]


def parse_cell_path(path: str | os.PathLike) -> tuple[str, int, bool]:
    """``.../{run}/K{k}[_guided].json`` -> (run, k, guided)."""
    p = Path(path)
    m = _CELL_RE.match(p.name)
    if m is None or not p.parent.name:
        raise ValueError(f"cannot parse cell path {path}: expected .../{{run}}/K{{k}}[_guided].json")
    return p.parent.name, int(m.group(1)), m.group(2) is not None


_SOLVER_CELL_RE = re.compile(rf"^({'|'.join(FIXED_GRID_SOLVERS)})_K(\d+)\.json$")


def solver_cells(paths: Iterable[str | os.PathLike]) -> dict[str, dict[int, str]]:
    """{solver: {K: path}} from the teacher's solver cells ``.../<solver>_K<k>.json`` (other files skipped)."""
    found: dict[str, dict[int, str]] = {}
    for path in paths:
        m = _SOLVER_CELL_RE.match(Path(path).name)
        if m is not None:
            found.setdefault(m.group(1), {})[int(m.group(2))] = str(path)
    return found


def cells_from_paths(
    paths: Iterable[str | os.PathLike],
    runs: Iterable[str] | None = None,
    steps: Iterable[int] | None = None,
    guided: bool = False,
) -> dict[tuple[str, int], str]:
    """Map (run, k) -> path from a flat list of cell paths (as Snakemake passes them).

    Keeps only unguided (or only guided) JSON cells (other files are skipped); with ``runs``/``steps`` it keeps
    those and raises if any (run, k) of their product is missing. Order follows ``runs`` x ``steps``.
    """
    found: dict[tuple[str, int], str] = {}
    for path in paths:
        if Path(path).suffix != ".json":
            continue
        run, k, g = parse_cell_path(path)
        if g != guided:
            continue
        if (run, k) in found and str(found[(run, k)]) != str(path):
            raise ValueError(f"two cells for run {run!r}, K={k}: {found[(run, k)]} and {path}")
        found[(run, k)] = str(path)
    if runs is None and steps is None:
        return found
    runs = list(runs) if runs is not None else list(dict.fromkeys(r for r, _ in found))
    steps = [int(k) for k in steps] if steps is not None else sorted({k for _, k in found})
    missing = [(r, k) for r in runs for k in steps if (r, k) not in found]
    if missing:
        kind = "guided" if guided else "unguided"
        raise ValueError(f"no {kind} cell among the inputs for (run, K) = {missing}")
    return {(r, k): found[(r, k)] for r in runs for k in steps}


def sample_metric(cells: Iterable[dict]) -> tuple[str, str]:
    """(cell key, column suffix) of sample quality: FID for image cells, sliced W2 for 2D ones."""
    return ("fid", "fid") if any("fid" in c for c in cells) else ("sliced_w2", "sw2")


def fid_network(cells: Iterable[tuple[str | os.PathLike, dict]]) -> dict:
    """{"fid_network": text} naming the network behind the FID of image sample cells ((path, cell) pairs): the
    source, SHA-1 and resize convention of their ``fid_network`` record ("not recorded" for a cell without
    one); {} when no cell has an FID. Raises if the cells disagree: their FIDs would not be comparable."""
    seen: dict[str, str] = {}
    for path, cell in cells:
        if "fid" not in cell:
            continue
        net = cell.get("fid_network")
        text = "not recorded"
        if net is not None:
            sha1 = f", sha1 {net['sha1']}" if net.get("sha1") else ""
            text = f"{net['source']}{sha1}; resize {net['resize']}"
        seen.setdefault(text, str(path))
    if len(seen) > 1:
        raise ValueError(f"the sample cells' FIDs come from different networks: {seen}")
    return {"fid_network": next(iter(seen))} if seen else {}


def descending(steps: Iterable[int]) -> list[int]:
    """Step counts in the paper's column order (8, 4, 2, 1)."""
    return sorted({int(k) for k in steps}, reverse=True)


def train_seed(cells: Iterable[tuple[str | os.PathLike, dict]]):
    """The training seed shared by some (path, cell) pairs; raises if they disagree."""
    seeds = {}
    for path, cell in cells:
        seeds.setdefault(cell_value(cell, "train_seed", path), str(path))
    if len(seeds) > 1:
        raise ValueError(f"cells of one row disagree on train_seed: {seeds}")
    return next(iter(seeds)) if seeds else None


def project_path(path: str | os.PathLike, root: str | os.PathLike = ".") -> str:
    """``path`` relative to the project ``root`` (the Snakemake working directory, which the scripts run in),
    as a table's ``config`` column records it; a path outside ``root`` stays as given."""
    try:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    except ValueError:  # another drive
        return str(path)
    return str(path) if rel == ".." or rel.startswith(".." + os.sep) else rel


def sibling_csv(json_path: str | os.PathLike) -> Path:
    """The per-point CSV beside a cell JSON."""
    return Path(json_path).with_suffix(".csv")


def _atomic(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it onto ``path`` (f2d2.io.atomic)."""
    with atomic_path(path) as tmp:
        write(str(tmp))
    return Path(path)


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a table atomically (no index; floats round-trip exactly; NaN -> empty cell)."""
    return _atomic(path, lambda tmp: df.to_csv(tmp, index=False))


def write_text(text: str, path: str | os.PathLike) -> Path:
    """Write a text file (JSON, HTML) atomically."""
    return _atomic(path, lambda tmp: Path(tmp).write_text(text))


def save_figure(fig, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Save a matplotlib figure atomically, then close it."""
    import matplotlib.pyplot as plt  # here: the table scripts never load pyplot (a second of start-up)

    fmt = Path(path).suffix.lstrip(".") or "png"
    try:
        return _atomic(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight"))
    finally:
        plt.close(fig)
