"""The image pipeline end to end at the smallest size (generated 8x8 images, a U-Net of 8 channels,
the tiny conv FID extractor): Table 1's layout with BPD and FID columns and finite values; and
missing image data stopping the workflow on start, before any job."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from test_pipeline import ROOT, snakemake

STAGES = ["teacher", "meanflow", "meanflow_f2d2"]
METHODS = ["Flow Matching", "MeanFlow", "MeanFlow-F2D2"]


def tiny_images_config(tmp: Path) -> Path:
    cfg = yaml.safe_load((ROOT / "config" / "tiny-images.yaml").read_text())
    cfg["outdir"] = str(tmp / "results")
    cfg["data"].update(n_train=200, n_test=24)
    cfg["model"]["channels"] = 8
    cfg["train"].update(steps=4, batch_size=8, warmup=1, log_every=2, ckpt_every=4)
    cfg["stages"]["teacher"]["train"]["steps"] = 8
    # one chain of the DAG (each job costs a few seconds of start-up on 2 cores); config/tiny-images.yaml has all
    cfg["stages"] = {k: cfg["stages"][k] for k in STAGES}
    # the calibrated early stop with a tolerance it meets at its first check (step 2 of 4)
    cfg["stages"]["meanflow_f2d2"]["train"]["early_stop"] = dict(
        every=2, n_val=8, steps=1, target_bpd=None, tol=1000.0, seed=0
    )
    cfg["eval"].update(n_points=24, steps=[1, 2])
    cfg["eval"]["fid"]["n_samples"] = 24
    path = tmp / "tiny-images.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def image_pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("images")
    config = tiny_images_config(tmp)
    snakemake(tmp, config)
    return tmp, config, tmp / "results"


def test_table1_has_bpd_and_fid_for_every_method(image_pipeline):
    tmp, config, out = image_pipeline
    t1 = pd.read_csv(out / "tables" / "table1.csv")
    assert list(t1["method"]) == ["Reference (teacher, dopri5)"] + METHODS
    assert [c for c in t1.columns if c.startswith("K")] == ["K2_nll_bpd", "K2_fid", "K1_nll_bpd", "K1_fid"]
    methods = t1.iloc[1:]
    for col in ("K2_nll_bpd", "K1_nll_bpd", "K2_fid", "K1_fid"):
        assert np.isfinite(methods[col].to_numpy(dtype=float)).all(), col
    # 8-bit images: a barely trained model lands within a few bits of 8 bits per dimension
    assert t1[["K2_nll_bpd", "K1_nll_bpd"]].stack().between(1, 30).all()
    assert (methods[["K2_fid", "K1_fid"]] >= 0).all().all()
    assert set(methods["config"]) == {str(config.relative_to(tmp))}  # relative to the project (--directory)
    assert set(t1["test_split"]) == {"test split of shapes: all 24"}
    tiny = "tiny-conv (seeded random conv, tests only); resize none (images at their own size)"
    assert set(t1["fid_network"]) == {tiny}  # every cell's record (f2d2.eval.fid.TINY_CONV_INFO)


def test_tables_say_at_which_step_the_early_stop_ended_a_run(image_pipeline):
    _, _, out = image_pipeline
    for name in ("table1", "table7"):
        t = pd.read_csv(out / "tables" / f"{name}.csv").set_index("run")
        assert t.loc["meanflow_f2d2", "early_stop_step"] == 2, name
        assert t.loc["meanflow_f2d2", "trained_steps"] == 2, name
        assert t.loc["meanflow", "trained_steps"] == 4 and pd.isna(t.loc["meanflow", "early_stop_step"]), name
    assert pd.read_csv(out / "tables" / "table1.csv").set_index("run").loc["teacher", "trained_steps"].min() == 8


def test_image_cells_record_dequantized_bpd_fid_and_timing(image_pipeline):
    _, _, out = image_pipeline
    nll = pd.read_json(out / "eval" / "nll" / "meanflow_f2d2" / "K1.json", typ="series")
    assert nll["dequantized"] and nll["div"] == "head" and nll["n"] == 24
    per_point = pd.read_csv(out / "eval" / "nll" / "meanflow_f2d2" / "K1.csv")
    np.testing.assert_allclose(per_point["bpd"], per_point["nll_nats"] / (3 * 8 * 8 * np.log(2)))
    sample = pd.read_json(out / "eval" / "samples" / "meanflow_f2d2" / "K1_guided.json", typ="series")
    assert sample["fid_extractor"] == "tiny-conv" and sample["fid"] >= 0 and sample["guidance_steps"] == 1
    pixels = np.load(out / "eval" / "samples" / "teacher" / "K2.npy")
    assert pixels.dtype == np.uint8 and pixels.shape == (24, 3, 8, 8)
    assert np.load(out / "eval" / "test_points.npy").shape == (24, 3, 8, 8)
    t4 = pd.read_csv(out / "tables" / "table4.csv")
    assert (t4[["K1_sample_seconds", "K1_nll_seconds"]] > 0).all().all()
    t7 = pd.read_csv(out / "tables" / "table7.csv")
    midpoint = t7["method"].str.endswith("(midpoint, K evaluations)")  # its K = 2 only: one midpoint step
    assert midpoint.sum() == 1 and np.isnan(t7.loc[midpoint, "K1_abs_err_nats"]).all()
    assert (t7[["K2_abs_err_nats"]] > 0).all().all() and (t7.loc[~midpoint, "K1_abs_err_nats"] > 0).all()
    assert (out / "figures" / "figure2.png").stat().st_size > 0


def test_missing_cifar10_stops_on_start_naming_the_folder(tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "cifar10.yaml").read_text())
    cfg.update(outdir=str(tmp_path / "results"), cluster="local")
    for res in cfg["resources"].values():  # this machine has no GPU: the start-up check would say so first
        res.update(gpus=0, tasks_per_node=1)
    cfg["data"]["root"] = str(tmp_path / "no-cifar")
    path = tmp_path / "cifar.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(tmp_path, path, str(tmp_path / "results" / "eval" / "test_points.npy"), check=False)
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert str(tmp_path / "no-cifar" / "cifar-10-batches-py") in said and "cifar-10-python.tar.gz" in said
    assert not (tmp_path / "results").exists()


def test_bench_times_the_trained_runs_on_the_pipelines_test_patches(image_pipeline, tmp_path):
    _, config, out = image_pipeline
    res_path = tmp_path / "trained.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "images.py"), "--trained", str(config), "--out", str(res_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    res = json.loads(res_path.read_text())
    t1 = pd.read_csv(out / "tables" / "table1.csv").set_index("method")
    # the same points, dequantization and probes as the pipeline's cells: the same numbers
    assert res["n"] == 24 and res["reference"]["run"] == "teacher"
    np.testing.assert_allclose(res["reference"]["bpd"], t1.loc["Reference (teacher, dopri5)", "K1_nll_bpd"], rtol=1e-6)
    (row,) = res["f2d2"]
    assert row["run"] == "meanflow_f2d2"
    np.testing.assert_allclose(row["k1_bpd"], t1.loc["MeanFlow-F2D2", "K1_nll_bpd"], rtol=1e-6)
    assert row["speedup"] == pytest.approx(res["reference"]["s"] / row["k1_s"])
    assert f"{row['speedup']:.0f}x faster" in done.stdout
