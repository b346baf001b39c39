"""The evaluation cells (f2d2.config.cells): the exact `f2d2 nll` / `f2d2 sample` / `f2d2 eval --cell`
arguments and files the pipeline's rules run, on the default config at K = 1, 2; torch-free."""

from __future__ import annotations

import copy
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from f2d2.config.cells import Cells, bundle_rule, cell_flags, device, submit

BASE = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())


def cells(images: bool = False, **eval_values) -> Cells:
    """The default config with outdir out, steps [1, 2] and ``eval_values`` over its eval section."""
    cfg = copy.deepcopy(BASE)
    cfg["outdir"] = "out"
    cfg["eval"].update(steps=[1, 2], baseline_div="hutchinson", **eval_values)
    return Cells(cfg, images)


def test_nll_cells_use_the_head_for_f2d2_runs_and_eval_baseline_div_for_the_others():
    c = cells()
    f2d2 = c.nll("meanflow_f2d2", 2)
    assert f2d2.command == "nll" and shlex.split(f2d2.args) == (
        "--points out/eval/test_points.npy --steps 2 --div head --backward two-way "
        "--compare out/eval/nll/teacher/reference.csv "
        "--out out/eval/nll/meanflow_f2d2/K2.csv --summary out/eval/nll/meanflow_f2d2/K2.json"
    ).split(" ")
    assert f2d2.outputs == {"csv": "out/eval/nll/meanflow_f2d2/K2.csv", "json": "out/eval/nll/meanflow_f2d2/K2.json"}
    assert f2d2.log_dir == "out/eval/nll/meanflow_f2d2/logs/K2" and f2d2.job == "nll-meanflow_f2d2-K2"
    assert f2d2.log == "out/eval/nll/meanflow_f2d2/logs/K2/snakemake.log"
    assert f2d2.submit == "f2d2 submit --log-dir out/eval/nll/meanflow_f2d2/logs/K2 --job-name nll-meanflow_f2d2-K2"
    assert "--div hutchinson" in c.nll("meanflow", 1).args
    assert c.div("shortcut_distill_f2d2__lam1") == "head"  # an ablation run of an F2D2 stage
    density = c.density("shortcut", 1)
    assert shlex.split(density.args) == (
        "--points out/eval/density/grid.npy --steps 1 --div hutchinson --backward two-way "
        "--out out/eval/density/shortcut/K1.csv"
    ).split(" ")
    assert density.outputs == {"csv": "out/eval/density/shortcut/K1.csv"} and density.job == "density-shortcut-K1"


def test_guided_samples_take_lr_one_step_at_k1_and_lr_multi_step_above():
    c = cells()
    assert shlex.split(c.sample("shortcut", 1).args) == (
        "--n 2000 --steps 1 --seed 777 "
        "--out out/eval/samples/shortcut/K1.npy --metrics out/eval/samples/shortcut/K1.json"
    ).split(" ")
    guided = c.sample("meanflow_f2d2", 1, guided=True)
    assert shlex.split(guided.args) == (
        "--n 2000 --steps 1 --seed 777 --guidance-steps 1 --guidance-lr 0.01 "
        "--out out/eval/samples/meanflow_f2d2/K1_guided.npy --metrics out/eval/samples/meanflow_f2d2/K1_guided.json"
    ).split(" ")
    assert "--guidance-lr 0.005 " in c.sample("meanflow_f2d2", "2", guided=True).args  # a wildcard's K: a string
    assert guided.command == "sample" and guided.job == "sample-meanflow_f2d2-K1_guided"
    assert guided.outputs == {
        "samples": "out/eval/samples/meanflow_f2d2/K1_guided.npy",
        "json": "out/eval/samples/meanflow_f2d2/K1_guided.json",
    }
    assert guided.log_dir == "out/eval/samples/meanflow_f2d2/logs/K1_guided"


def test_image_samples_add_fid_and_n_samples():
    c = cells(images=True, fid={"extractor": "tiny-conv", "n_samples": 500})
    assert shlex.split(c.sample("teacher", 2).args) == (
        "--n 500 --steps 2 --seed 777 "
        "--fid-stats out/eval/fid_reference.npz --fid-extractor tiny-conv --fid-weights-dir /tmp "
        "--out out/eval/samples/teacher/K2.npy --metrics out/eval/samples/teacher/K2.json"
    ).split(" ")
    assert "--n 2000 " in cells(fid={"n_samples": 500}).sample("teacher", 2).args  # no images: eval.n_points
    # eval.fid.extractor null: image samples without FID (sliced W2 instead), and no FID reference job
    none = cells(images=True, fid={"extractor": None, "n_samples": 500})
    assert not none.sample_fid and c.sample_fid
    assert "--fid" not in none.sample("teacher", 2).args and "--n 500 " in none.sample("teacher", 2).args


def test_batch_size_only_when_set():
    assert "--batch-size" not in cells().nll("teacher", 1).args + cells().sample("teacher", 1).args
    c = cells(batch_size=64)
    assert c.nll("teacher", 1).args.endswith(
        " --batch-size 64 --out out/eval/nll/teacher/K1.csv --summary out/eval/nll/teacher/K1.json"
    )
    assert c.sample("teacher", 1).args.endswith(
        " --batch-size 64 --out out/eval/samples/teacher/K1.npy --metrics out/eval/samples/teacher/K1.json"
    )
    assert "--batch-size" not in c.density("teacher", 1).args


def test_reference_solves():
    c = cells()
    ref = c.reference_solve("teacher")
    # two spaces where a batch size would go: the text of the rule param as the pipeline has always had it
    assert ref.args == (
        "--checkpoint out/train/teacher/checkpoint.pt --points out/eval/test_points.npy --reference "
        "--atol 1e-05 --rtol 1e-05 --div exact --device cpu  --out out/eval/nll/teacher/reference.csv "
        "--summary out/eval/nll/teacher/reference.json"
    )
    assert ref.outputs == {"csv": "out/eval/nll/teacher/reference.csv", "json": "out/eval/nll/teacher/reference.json"}
    assert (ref.command, ref.job, ref.log_dir) == ("nll", "nll-reference", "out/eval/nll/teacher/logs/reference")
    own = c.reference_solve("shortcut_f2d2", "out/train/shortcut/checkpoint.pt")  # its frozen warm start's flow
    assert own.args.startswith("--checkpoint out/train/shortcut/checkpoint.pt ")
    assert "--out out/eval/nll/shortcut_f2d2/reference.csv" in own.args and own.job == "nll-reference-shortcut_f2d2"
    assert "--device cpu --batch-size 8 --out" in cells(batch_size=8).reference_solve("teacher").args


def test_a_runs_cells_have_guidance_only_for_f2d2_stages_and_density_only_for_the_figures_runs():
    c = cells()

    def names(run):
        return [Path(p).relative_to("out/eval").as_posix() for cell in c.run_cells(run) for p in cell.outputs.values()]

    assert names("shortcut_f2d2") == (
        "nll/shortcut_f2d2/K1.csv nll/shortcut_f2d2/K1.json nll/shortcut_f2d2/K2.csv nll/shortcut_f2d2/K2.json "
        "samples/shortcut_f2d2/K1.npy samples/shortcut_f2d2/K1.json "
        "samples/shortcut_f2d2/K2.npy samples/shortcut_f2d2/K2.json "
        "samples/shortcut_f2d2/K1_guided.npy samples/shortcut_f2d2/K1_guided.json "
        "samples/shortcut_f2d2/K2_guided.npy samples/shortcut_f2d2/K2_guided.json "
        "density/shortcut_f2d2/K1.csv"
    ).split(" ")
    assert names("meanflow") == (  # a baseline the density figure does not show
        "nll/meanflow/K1.csv nll/meanflow/K1.json nll/meanflow/K2.csv nll/meanflow/K2.json "
        "samples/meanflow/K1.npy samples/meanflow/K1.json samples/meanflow/K2.npy samples/meanflow/K2.json"
    ).split(" ")
    ablation = c.run_cells("shortcut_distill_f2d2__lam1")  # an F2D2 run, not a stage: no guided samples
    assert [cell.job for cell in ablation] == [
        f"{kind}-shortcut_distill_f2d2__lam1-K{k}" for kind in ("nll", "sample") for k in (1, 2)
    ]
    two = c.run_cells("teacher")[:2]
    assert cell_flags(two) == f"--cell 'nll {two[0].args}' --cell 'nll {two[1].args}'"  # as `f2d2 eval` takes them


def test_paths_names_and_device():
    c = cells()
    assert c.checkpoint("meanflow") == "out/train/meanflow/checkpoint.pt"
    assert c.nll_cell("teacher", 4) == "out/eval/nll/teacher/K4.json"
    assert c.sample_cell("teacher", 4, guided=True) == "out/eval/samples/teacher/K4_guided.json"
    assert c.bundle_record("teacher") == "out/eval/bundle/teacher/logs/cells.json"
    assert bundle_rule("shortcut_distill_f2d2__lam0.1") == "eval_shortcut_distill_f2d2__lam0_1"
    assert submit("a b", "j") == "f2d2 submit --log-dir 'a b' --job-name j"
    gpu = {"resources": {"eval": {"gpus": 1}, "train": {"gpus": 0}}}
    assert (device(gpu, "eval"), device(gpu, "train")) == ("cuda", "cpu")


def test_the_module_is_torch_free():
    code = "import sys, f2d2.config.cells; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_quality_job_scores_the_teacher_the_other_maps_and_the_f2d2_stages_with_the_guidance_settings():
    assert cells(images=True).quality() is None  # eval.quality: null by default
    assert cells(quality={"n": 50}).quality() is None  # points: no FID
    job = cells(
        images=True,
        quality={"n": 50, "bpd_tol": None, "sweep": {"run": "meanflow_f2d2", "lrs": [0.1]}},
        fid={"extractor": "tiny-conv", "weights_dir": "/w"},
    ).quality()
    args = shlex.split(job.args)
    assert args[:4] == ["--config", "config/config.yaml", "--teacher", "teacher=out/train/teacher/checkpoint.pt"]
    assert [args[i + 1].split("=")[0] for i, a in enumerate(args) if a == "--baseline"] == [
        "shortcut", "shortcut_distill", "meanflow",
    ]  # fmt: skip
    assert [args[i + 1].split("=")[0] for i, a in enumerate(args) if a == "--run"] == [
        "shortcut_f2d2", "shortcut_distill_f2d2", "meanflow_f2d2",
    ]  # fmt: skip
    text = " ".join(args)
    g = BASE["eval"]["guidance"]
    assert f"--n 50 --n-reference 1000 --steps 1 2 --euler 64 --reps 25 --seed {BASE['eval']['sample_seed']}" in text
    assert f"--lr-one-step {g['lr_one_step']} --lr-multi-step {g['lr_multi_step']} --no-teacher-bpd" in text
    assert "--sweep-run meanflow_f2d2 --sweep-steps 2 --sweep-lrs 0.1 --sweep-adam 1 4 --extractor tiny-conv" in text
    assert text.endswith("--weights-dir /w --device cpu --out out/eval/quality")
    assert job.outputs["png"] == "out/eval/quality/quality.png" and job.log_dir == "out/eval/quality/logs"
    own = cells(images=True, quality={"extractor": "inception"}, fid={"extractor": "tiny-conv", "weights_dir": "/w"})
    assert "--extractor inception" in own.quality().args and "--sweep-run" not in own.quality().args
