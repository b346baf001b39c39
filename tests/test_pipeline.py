"""The Snakemake pipeline end to end on a config small enough for CI (seconds per stage), with real
Snakemake and submitit's local executor: table contents, figures, one evaluation job per run, rerun and
single-cell rebuilds."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from f2d2.config import experiment
from f2d2.preflight.runs import own_flow_stages
from pipeline_helpers import ROOT, SNAKEMAKE, snakemake, tiny_config

F2D2_RUNS = ["shortcut_f2d2", "shortcut_distill_f2d2", "meanflow_f2d2"]
METHODS = [
    "Flow Matching",
    "Shortcut Model",
    "Shortcut-Distill",
    "MeanFlow",
    "Shortcut-F2D2",
    "Shortcut-Distill-F2D2",
    "MeanFlow-F2D2",
]


def test_main_table_has_every_method_with_finite_values(pipeline):
    tmp, config, out = pipeline
    t1 = pd.read_csv(out / "tables" / "table1.csv")
    labels = list(t1.iloc[:, 0])
    assert labels[:2] == ["Reference (teacher, dopri5)", "Analytic"] and labels[2:] == METHODS
    assert [c for c in t1.columns if c.startswith("K")][:2] == ["K2_nll_bpd", "K2_sw2"]  # descending K
    methods = t1.iloc[2:]
    for col in ("K2_nll_bpd", "K1_nll_bpd", "K2_sw2", "K1_sw2"):
        values = methods[col].to_numpy(dtype=float)
        assert np.isfinite(values).all(), col
    assert methods["K1_nll_bpd"].between(-20, 20).all()  # bits/dim of 2D data: a plausible range
    assert methods["K1_sw2"].between(0, 10).all()
    assert t1.loc[1, "K1_nll_bpd"] == pytest.approx(2.5)  # analytic checkerboard: log2(32) / 2
    assert set(methods["config"]) == {str(config.relative_to(tmp))} and set(methods["seed"]) == {0}
    assert t1.columns[-1] == "test_split"
    assert set(t1["test_split"]) == {"fresh draws from the checkerboard density: 200 (seed 12345)"}


def test_error_table_matches_cells_and_f2d2_rows_exist(pipeline):
    _, _, out = pipeline
    t7 = pd.read_csv(out / "tables" / "table7.csv")
    teacher_rows = t7[t7["reference"] == "teacher"]
    # beyond the paper: the teacher's midpoint solve at K = 2 evaluations (RK4 needs K = 4, not evaluated here)
    assert list(teacher_rows.iloc[:, 0]) == [*METHODS, "Flow Matching (midpoint, K evaluations)"]
    midpoint = teacher_rows.iloc[-1]
    cell = json.loads((out / "eval" / "nll" / "teacher" / "midpoint_K2.json").read_text())
    assert cell["solver"] == "1-step midpoint" and cell["nfe"] == 2 and cell["div"] == "exact"
    assert midpoint["K2_abs_err_nats"] == pytest.approx(cell["mean_abs_err_nats"], rel=1e-6)
    assert np.isnan(midpoint["K1_abs_err_nats"]) and midpoint["run"] == "teacher"
    t7 = t7.drop(index=midpoint.name)
    # Shortcut-F2D2 (div_source self) also against its own flow's dopri5 solve, beside its own row
    (own,) = t7.index[t7["reference"] == "own flow"]
    assert t7.loc[own, "run"] == t7.loc[own - 1, "run"] == "shortcut_f2d2"
    solved = json.loads((out / "eval" / "nll" / "shortcut_f2d2" / "reference.json").read_text())["checkpoint"]
    # self_source start: its own velocity is the frozen Shortcut model's it was finetuned from, not the teacher's
    assert Path(solved).parent.name == "shortcut"
    own_ref = pd.read_csv(out / "eval" / "nll" / "shortcut_f2d2" / "reference.csv")["nll_nats"]
    k1 = pd.read_csv(out / "eval" / "nll" / "shortcut_f2d2" / "K1.csv")["nll_nats"]
    assert t7.loc[own, "K1_abs_err_nats"] == pytest.approx((k1 - own_ref).abs().mean(), rel=1e-6)
    assert (t7[["K2_abs_err_nats", "K1_abs_err_nats"]].to_numpy() > 0).all()
    cell = pd.read_json(out / "eval" / "nll" / "shortcut_f2d2" / "K1.json", typ="series")
    row = teacher_rows[teacher_rows.iloc[:, 0] == "Shortcut-F2D2"].iloc[0]
    assert row["K1_abs_err_nats"] == pytest.approx(cell["mean_abs_err_nats"], rel=1e-6)
    assert cell["div"] == "head" and cell["nfe"] == 1


def test_ablation_hparam_and_timing_tables(pipeline):
    _, _, out = pipeline
    t5 = pd.read_csv(out / "tables" / "table5.csv")
    assert list(t5["value"]) == [1.0, 10.0] and np.isfinite(t5["K1_nll_bpd"]).all()
    t6 = pd.read_csv(out / "tables" / "table6.csv")
    assert len(t6) == 3  # the Shortcut-Distill baseline and two lambda values
    t3 = pd.read_csv(out / "tables" / "table3.csv")
    assert "model.hidden" in t3.columns and set(t3["model.hidden"]) == {16}
    assert len(t3) == 7 + 2  # seven stages and the two ablation runs that differ from them
    t4 = pd.read_csv(out / "tables" / "table4.csv")
    assert (t4["K1_sample_seconds"] > 0).all() and (t4["reference_nll_seconds"] > 0).all()


def test_figures_are_pictures(pipeline):
    import matplotlib.image as mpimg

    _, _, out = pipeline
    for name in ("figure2.png", "figure3.png"):
        img = mpimg.imread(out / "figures" / name)
        assert img.shape[0] > 100 and img.std() > 0.01, name


def test_jobs_ran_through_submitit_with_logs_next_to_outputs(pipeline):
    _, _, out = pipeline
    job = yaml.safe_load((out / "train" / "teacher" / "logs" / "job.json").read_text())
    assert job["cluster"] == "local" and job["state"] == "COMPLETED"
    assert Path(job["stdout"]).exists()


def test_one_evaluation_job_per_run_writes_every_cell(pipeline):
    """eval.bundle (the default): one `f2d2 eval` job per trained run, one cell per output file; the compute
    share of the jobs is recorded."""
    _, config, out = pipeline
    cfg = yaml.safe_load(config.read_text())
    runs, solves = experiment.runs(cfg), 1 + len(own_flow_stages(cfg))  # reference solves
    for run in runs:
        job = json.loads((out / "eval" / "bundle" / run / "logs" / "job.json").read_text())
        assert job["argv"][0] == "eval" and job["state"] == "COMPLETED", run
        cells_argv = [shlex.split(job["argv"][i + 1]) for i, a in enumerate(job["argv"]) if a == "--cell"]
        outs = [c[c.index("--out") + 1] for c in cells_argv]
        cells = {p for p in (out / "eval").glob(f"*/{run}/*K*") if p.suffix in (".csv", ".npy")}
        assert {Path(job["cwd"]) / p for p in outs} == cells and len(cells) == len(set(outs)), run
    assert not list((out / "eval").glob("*/*/logs/K*"))  # no job of its own for any cell
    # the importance-sampling cells: one `f2d2 eval` job per F2D2 stage and one for the teacher (and its reference)
    importance = len(F2D2_RUNS) + 1
    cells = list((out / "eval" / "importance").glob("*/*.json"))
    ways = len(cfg["eval"].get("importance", {}).get("log_prob_from", ["noise", "sample"]))  # the schema's default
    assert len(cells) == importance * len(cfg["eval"]["steps"]) * ways + 1
    share = json.loads((out / "tables" / "compute_share.json").read_text())
    frontier = 1  # the speed-accuracy frontier's job
    assert share["jobs"] == 2 * len(runs) + solves + importance + frontier and 0 < share["compute_share"] <= 1
    assert share["by_kind"]["eval"]["jobs"] == len(runs) + solves + importance + frontier
    assert not share["missing_job_records"]


def test_rerun_does_nothing_and_one_cell_rebuilds_its_run_alone(pipeline):
    tmp, config, out = pipeline
    dry = snakemake(tmp, config, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    cells = sorted(p for p in (out / "eval").rglob("K*") if "logs" not in p.parts)
    before = {p: p.stat().st_mtime_ns for p in cells}
    target = out / "eval" / "nll" / "meanflow" / "K2.json"
    snakemake(tmp, config, str(target), "--force")
    changed = {p for p in cells if p.stat().st_mtime_ns != before[p]}
    assert changed == {p for p in cells if p.parent.name == "meanflow"}  # its run's bundle, no other run's cells
    assert target in changed and len(changed) == 2 * 2 * 2  # NLL and sample cells (two files each), K = 1, 2


def _dry_run_outputs(tmp, config, cfg) -> tuple[set[str], set[str]]:
    """(runs Snakemake would train, runs whose NLL cells it would redo) with ``cfg`` written to ``config``."""
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    dry = snakemake(tmp, config, "-n")
    outputs = " ".join(line for line in dry.stdout.splitlines() if line.strip().startswith("output:"))
    return set(re.findall(r"train/([^/\s,]+)/train\.json", outputs)), set(
        re.findall(r"eval/nll/([^/\s,]+)/K\d+\.csv", outputs)
    )


def test_a_config_edit_redoes_the_runs_it_changes_and_no_other(pipeline):
    """Each run's resolved settings are a param of its training rule: an edited stage retrains that run, the
    runs that read it and their cells; resources are no param, so asking for more time redoes nothing."""
    tmp, config, _ = pipeline
    original = config.read_text()
    cfg = yaml.safe_load(original)
    try:
        cfg["resources"]["train"]["time_min"] += 7
        cfg["resources"]["eval"]["mem_gb"] += 1
        assert _dry_run_outputs(tmp, config, cfg) == (set(), set())
        edited = yaml.safe_load(original)
        edited["stages"]["meanflow_f2d2"]["train"]["lr"] = 1.0e-3
        assert _dry_run_outputs(tmp, config, edited) == ({"meanflow_f2d2"}, {"meanflow_f2d2"})
        edited = yaml.safe_load(original)
        edited["stages"]["shortcut_distill"]["train"]["lr_schedule"] = "constant"
        downstream = {
            "shortcut_distill",
            "shortcut_distill_f2d2",
            "shortcut_distill_f2d2__div_scale10",
            "shortcut_distill_f2d2__lam1",
        }  # its F2D2 stage warm-starts from it; the ablations too
        assert _dry_run_outputs(tmp, config, edited) == (downstream, downstream)
        assert _dry_run_outputs(tmp, config, yaml.safe_load(original)) == (set(), set())  # edits undone
    finally:
        config.write_text(original)


def test_importance_sampling_cells_table_and_figure_are_in_the_dag(tmp_path):
    """2D: a cell per F2D2 stage and the teacher at every K with log q from the noise and from the sample, the
    teacher's dopri5 reference, the table and figure
    gathered from them (targets of `all`); the cells' options come from eval.importance."""
    cfg = yaml.safe_load(tiny_config(tmp_path).read_text())
    cfg["eval"]["importance"] = {"n": 123, "target_fn": "test_importance:standard_normal_log_p"}
    config = tmp_path / "is.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    said = snakemake(tmp_path, config, "-n").stdout
    out = tmp_path / "results"
    outputs = " ".join(line for line in said.splitlines() if line.strip().startswith("output:"))
    cells = re.findall(r"/eval/importance/(\w+?)/(K\d+(?:_sample)?|reference)\.json", outputs)
    runs = [*F2D2_RUNS, "teacher"]
    ks = {(r, f"K{k}{how}") for r in runs for k in (1, 2) for how in ("", "_sample")}  # both by default
    assert sorted(cells) == sorted(ks | {("teacher", "reference")})
    assert all(f"rule importance_{run}:" in said for run in runs)
    assert "--n 123 --seed 777 --reference --div exact --target-fn test_importance:standard_normal_log_p" in said
    assert "--steps 2 --div head --log-prob-from sample --target-fn" in said
    for path in (f"{out}/tables/table_is.csv", f"{out}/figures/figure_is.png"):
        assert f"output: {path}" in said and path in said.split("rule all:", 1)[1].split("\n\n")[0]


def test_bad_config_stops_before_any_job(tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["outdir"] = str(tmp_path / "results")
    cfg["eval"]["steps"] = [0, 2]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(tmp_path, bad, "-n", check=False)
    assert proc.returncode != 0
    said = proc.stdout + proc.stderr
    assert "eval.steps[0] = 0; expected an integer >= 1" in said
    assert not (tmp_path / "results").exists()


def test_a_stage_named_by_the_user_with_a_label_lists_its_jobs(tmp_path):
    """A dry run takes a stage of the user's name with a ``label`` (its name in tables and figures): it is trained,
    evaluated and in every table of the stages; an empty label is refused before any job."""
    cfg = yaml.safe_load(tiny_config(tmp_path).read_text())
    cfg["stages"]["my_method"] = {
        "objective": {"name": "shortcut", "time_grid": "dyadic"},
        "train": {"init_from": "teacher"},
        "label": "Mine",
    }
    cfg["figures"]["density"]["runs"].append("my_method")
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump(cfg, sort_keys=False))
    said = snakemake(tmp_path, mine, "-n").stdout
    out = tmp_path / "results"
    assert "eval_my_method" in said and f"output: {out}/train/my_method/train.json" in said
    for rule in ("table_main", "table_hparams", "table_timing", "table_error", "figure_density"):
        assert re.search(rf"rule {rule}:\n    input: [^\n]*/my_method/", said), rule
    assert not out.exists()

    cfg["stages"]["my_method"]["label"] = ""
    mine.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(tmp_path, mine, "-n", check=False)
    assert proc.returncode != 0
    assert "stages.my_method.label = ''; expected a string of at least one character" in proc.stdout + proc.stderr


@pytest.mark.parametrize("preset", ["checkerboard.yaml", "cifar10.yaml", "imagenet64.yaml"])
def test_paper_presets_list_the_whole_dag(preset, tmp_path):
    """A dry run lists the DAG without the data (whose files are checked when a real run starts)."""
    proc = subprocess.run(
        [
            *SNAKEMAKE,
            "-n",
            "--configfile",
            str(ROOT / "config" / preset),
            "--directory",
            str(tmp_path),
            "--quiet",
            "rules",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cells = ("eval_teacher",) if preset == "checkerboard.yaml" else ("nll_cell", "sample_cell")  # eval.bundle
    for rule in ("train", "reference_nll", *cells, "table_main", "table_error", "compute_share"):
        assert rule in proc.stdout, rule
