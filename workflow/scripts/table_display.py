"""Tables for people: Table 1 and Table 7 as HTML pages with 4 significant digits, and the headline.

The CSVs stay as they are (full precision); these pages are what the report shows. Each K column
group gets a two-row header (``K = 8`` over the metric); the lowest value of each error and
sample-quality column among the methods is in bold. The headline is one paragraph comparing the
best F2D2 run's one-step likelihood error (the smallest K of Table 7) with the best baseline's; the
report's front page (workflow/report/workflow.rst) shows it first. Snakemake: input.table1,
input.table7 (the CSVs); params.f2d2 (the F2D2 runs); output.table1, output.table7, output.headline.
"""

import html
import math
import numbers
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pandas as pd  # noqa: E402

import common  # noqa: E402
from table_main import REFERENCE_LABEL  # noqa: E402

DIGITS = 4
METRICS = {
    "nll_bpd": "NLL (bits/dim)",
    "sw2": "sliced W2",
    "fid": "FID",
    "support_mass": "support mass",
    "abs_err_nats": "|NLL − ref| (nats)",
}
LOWER_IS_BETTER = ("sw2", "fid", "abs_err_nats")
_K_COLUMN = re.compile(r"^K(\d+)_(.+)$")

STYLE = """body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h2 { font-size: 1.15em; } p.note { color: #555; font-size: 0.9em; max-width: 60em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #ddd; }
th { background: #f3f3f3; text-align: center; } td { text-align: right; font-variant-numeric: tabular-nums; }
td.text { text-align: left; white-space: nowrap; } tbody tr:hover { background: #f7f7ff; }"""


def significant(value, digits: int = DIGITS) -> str:
    """A cell as text: floats to ``digits`` significant digits (trailing zeros kept), NaN empty, others as is."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:#.{digits}g}".rstrip(".")
    return str(value)


def header(column: str) -> tuple[str, str]:
    """The two header rows of a column: (``K = k``, metric) for a K column, else ("", name)."""
    m = _K_COLUMN.match(column)
    if m is None:
        return "", column
    return f"K = {m.group(1)}", METRICS.get(m.group(2), m.group(2))


def _best(df: pd.DataFrame) -> dict[str, float]:
    """Column -> its lowest value among the method rows, for the columns where lower is better."""
    methods = df[~df["method"].isin([REFERENCE_LABEL, "Analytic"])]
    return {
        c: methods[c].min()
        for c in df.columns
        if (m := _K_COLUMN.match(c)) and m.group(2) in LOWER_IS_BETTER and methods[c].notna().any()
    }


def table_html(df: pd.DataFrame, title: str, source: str, digits: int = DIGITS) -> str:
    """A standalone HTML page of ``df`` rounded to ``digits`` significant digits; ``source`` names the CSV."""
    best = _best(df)
    heads = [header(c) for c in df.columns]
    groups, spans = [], []
    for top, _ in heads:
        if groups and groups[-1] == top and top:
            spans[-1] += 1
        else:
            groups.append(top)
            spans.append(1)
    top_row = "".join(f'<th colspan="{n}">{html.escape(g)}</th>' for g, n in zip(groups, spans))
    sub_row = "".join(f"<th>{html.escape(h)}</th>" for _, h in heads)
    body = []
    for _, row in df.iterrows():
        cells = []
        for c in df.columns:
            text = html.escape(significant(row[c], digits))
            if c in best and row[c] == best[c]:
                text = f"<b>{text}</b>"
            numeric = isinstance(row[c], numbers.Number) and not isinstance(row[c], bool)
            cells.append(f"<td>{text}</td>" if numeric else f'<td class="text">{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n<h2>{html.escape(title)}</h2>\n"
        f'<p class="note">{digits} significant digits; in bold the lowest value of each error and '
        f"sample-quality column. Full precision: {html.escape(source)}.</p>\n"
        f"<table><thead><tr>{top_row}</tr><tr>{sub_row}</tr></thead>\n<tbody>\n"
        + "\n".join(body)
        + "\n</tbody></table>\n</body></html>\n"
    )


def headline(table7: pd.DataFrame, table1: pd.DataFrame, f2d2_runs) -> dict:
    """The headline's numbers: at the smallest K of Table 7, the F2D2 run and the baseline of lowest error,
    their ratio (baseline / F2D2: above 1, F2D2 is that many times lower) and the reference's mean BPD;
    only a ``note`` when the table lacks either kind of run."""
    ks = sorted(int(m.group(1)) for c in table7.columns if (m := _K_COLUMN.match(c)))
    if not ks:
        raise ValueError(f"Table 7 has no K columns (columns: {list(table7.columns)})")
    k = ks[0]
    col = f"K{k}_abs_err_nats"
    if "reference" in table7.columns:  # rows against a run's own flow are not compared with the baselines
        table7 = table7[table7["reference"] == "teacher"]
    is_f2d2 = table7["run"].isin(list(f2d2_runs))
    if not is_f2d2.any() or is_f2d2.all():
        return {"k": k, "note": f"No headline: Table 7 has no {'baseline' if is_f2d2.any() else 'F2D2 run'}"}
    f2d2, base = (table7[rows].loc[table7[rows][col].idxmin()] for rows in (is_f2d2, ~is_f2d2))
    ref = table1[table1["method"] == REFERENCE_LABEL]
    return {
        "k": k,
        "f2d2": f2d2["method"],
        "f2d2_err": float(f2d2[col]),
        "baseline": base["method"],
        "baseline_err": float(base[col]),
        "ratio": float(base[col]) / float(f2d2[col]),
        "reference_bpd": float(ref.iloc[0][f"K{k}_nll_bpd"]) if len(ref) else None,
        "config": f2d2["config"],
        "seed": f2d2["seed"],
    }


def headline_html(h: dict) -> str:
    """The headline paragraph (HTML) of :func:`headline`'s numbers."""
    if "note" in h:
        return f"<p>{html.escape(h['note'])}.</p>\n"
    steps = "One-step" if h["k"] == 1 else f"{h['k']}-step"
    if h["ratio"] >= 1:
        compare = f"{h['ratio']:.3g}× lower"
    else:
        compare = f"{1 / h['ratio']:.3g}× higher"
    ref = "" if h["reference_bpd"] is None else f" (mean NLL {significant(h['reference_bpd'])} bits/dim, Table 1)"
    e = html.escape
    return (
        f"<p><strong>{steps} F2D2 likelihood error:</strong> {e(h['f2d2'])} "
        f"<strong>{significant(h['f2d2_err'])}</strong> nats per point against "
        f"{significant(h['baseline_err'])} for the best baseline, {e(h['baseline'])}: "
        f"<strong>{compare}</strong>. The error is the mean per-point |NLL − reference NLL| at K = {h['k']} "
        f"(Table 7); the reference is the teacher's adaptive dopri5 solve{ref}. "
        f"Config {e(str(h['config']))}, seed {e(str(h['seed']))}.</p>\n"
    )


def main(table1: str, table7: str, f2d2_runs, out1: str, out7: str, out_headline: str) -> dict:
    """Write the two HTML tables and the headline; returns the headline's numbers."""
    t1, t7 = pd.read_csv(table1), pd.read_csv(table7)
    common.write_text(table_html(t1, "Table 1: few-step NLL and sample quality", os.path.basename(table1)), out1)
    common.write_text(table_html(t7, "Table 7: likelihood error against the reference", os.path.basename(table7)), out7)
    h = headline(t7, t1, f2d2_runs)
    common.write_text(headline_html(h), out_headline)
    return h


if "snakemake" in globals():
    _sm = snakemake
    main(
        str(_sm.input.table1),
        str(_sm.input.table7),
        list(_sm.params.f2d2),
        str(_sm.output.table1),
        str(_sm.output.table7),
        str(_sm.output.headline),
    )
