"""f2d2.cli.launch and ``f2d2 submit``: jobs on submitit's local cluster and inline, success and failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from f2d2.cli import main
from f2d2.cli.launch import LaunchError, submit
from f2d2.config.resources import Resources

ROOT = Path(__file__).resolve().parents[1]
CFG = str(ROOT / "config" / "config.yaml")
SMALL = Resources(time_min=5)


def data_argv(out: Path) -> list[str]:
    return ["data", "--config", CFG, "--n", "50", "--seed", "1", "--out", str(out)]


def test_local_job_matches_inline(tmp_path):
    logs = tmp_path / "logs"
    submit(data_argv(tmp_path / "p.npy"), cluster="local", log_dir=logs, resources=SMALL, job_name="t-data")
    got = np.load(tmp_path / "p.npy")
    assert got.shape == (50, 2)
    assert main(data_argv(tmp_path / "inline.npy")) == 0
    np.testing.assert_array_equal(got, np.load(tmp_path / "inline.npy"))

    record = json.loads((logs / "job.json").read_text())
    assert record["state"] == "COMPLETED" and record["cluster"] == "local"
    assert record["job_id"] and record["argv"] == data_argv(tmp_path / "p.npy")
    assert record["resources"]["time_min"] == 5
    assert record["submitted"] <= record["finished"] and record["started"] is not None
    out, err = Path(record["stdout"]), Path(record["stderr"])
    assert out.parent == err.parent == logs.absolute()
    assert out.name.startswith(record["job_id"]) and "wrote 50 points" in out.read_text()
    assert err.exists()


def test_failing_local_job_raises_with_id_error_and_logs(tmp_path):
    logs = tmp_path / "logs"
    argv = [
        "nll",
        "--checkpoint",
        str(tmp_path / "missing.pt"),
        "--points",
        str(tmp_path / "p.npy"),
        "--steps",
        "1",
        "--out",
        str(tmp_path / "o.csv"),
    ]
    with pytest.raises(LaunchError) as info:
        submit(argv, cluster="local", log_dir=logs, resources=SMALL)
    record = json.loads((logs / "job.json").read_text())
    assert record["state"] == "FAILED"
    message = str(info.value)
    assert record["job_id"] in message and "'local'" in message
    assert "f2d2 nll: error:" in message and "missing.pt" in message  # the CLI's text, read from the job log
    assert record["stderr"] in message and record["stdout"] in message
    assert "missing.pt" in Path(record["stderr"]).read_text()
    assert not (tmp_path / "o.csv").exists()


def test_cli_submit_inline(tmp_path, capsys):
    logs = tmp_path / "logs"
    assert main(["submit", "--cluster", "inline", "--log-dir", str(logs), "--", *data_argv(tmp_path / "p.npy")]) == 0
    assert np.load(tmp_path / "p.npy").shape == (50, 2)
    record = json.loads((logs / "job.json").read_text())
    assert record["state"] == "COMPLETED" and record["cluster"] == "inline"
    assert record["resources"] == {
        "partition": None,
        "gpus": 0,
        "cpus": 1,
        "mem_gb": 4,
        "time_min": 60,
        "tasks_per_node": 1,
        "signal_delay_s": 90,
    }

    # a job that fails inline: exit code 1, the job id and the CLI's own error
    capsys.readouterr()
    assert (
        main(
            [
                "submit",
                "--cluster",
                "inline",
                "--log-dir",
                str(logs),
                "--",
                "data",
                "--config",
                str(tmp_path / "nope.yaml"),
                "--n",
                "5",
                "--seed",
                "1",
                "--out",
                str(tmp_path / "q.npy"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "f2d2 data: error:" in err and "nope.yaml" in err and "f2d2 submit: error: job inline-" in err
    assert json.loads((logs / "job.json").read_text())["state"] == "FAILED"


def test_cli_submit_env_default_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("F2D2_CLUSTER", "inline")
    assert main(["submit", "--log-dir", str(tmp_path), "--", *data_argv(tmp_path / "p.npy")]) == 0
    assert json.loads((tmp_path / "job.json").read_text())["cluster"] == "inline"


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--cluster", "nope", "--log-dir", "{d}", "--", "data"], "'nope'"),
        (["--cluster", "inline", "--log-dir", "{d}", "--", "fit", "--n", "3"], "'fit'"),
        (["--cluster", "inline", "--log-dir", "{d}", "--", "submit", "--", "data"], "'submit'"),
        (["--cluster", "inline", "--log-dir", "{d}", "--", "data", "--n", "0"], "--n"),
        (["--cluster", "inline", "--log-dir", "{d}"], "after '--'"),
        (["--cluster", "inline", "--cpus", "0", "--log-dir", "{d}", "--", "data"], "cpus"),
    ],
)
def test_cli_submit_bad_arguments(tmp_path, capsys, argv, expected):
    argv = [a.replace("{d}", str(tmp_path / "logs")) for a in argv]
    assert main(["submit", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("f2d2 submit: error: ") and expected in err
    assert not (tmp_path / "logs" / "job.json").exists()  # nothing ran


def test_resources_validation():
    with pytest.raises(ValueError, match=r"Resources.cpus = 0; expected an integer >= 1"):
        Resources(cpus=0)
    for kwargs, name in [
        ({"gpus": -1}, "gpus"),
        ({"mem_gb": 0}, "mem_gb"),
        ({"time_min": 0}, "time_min"),
        ({"tasks_per_node": 0}, "tasks_per_node"),
        ({"partition": ""}, "partition"),
    ]:
        with pytest.raises(ValueError, match=name):
            Resources(**kwargs)
    assert Resources(gpus=1, mem_gb=0.5).mem_gb == 0.5


def test_submit_rejects_unknown_cluster(tmp_path):
    with pytest.raises(ValueError, match="'debug'.*inline, local, slurm"):
        submit(data_argv(tmp_path / "p.npy"), cluster="debug", log_dir=tmp_path, resources=SMALL)


def test_slurm_without_slurm_is_a_launch_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun / sbatch to be found
    with pytest.raises(LaunchError, match="could not submit f2d2 data .*'slurm'.*srun"):
        submit(
            data_argv(tmp_path / "p.npy"),
            cluster="slurm",
            log_dir=tmp_path / "logs",
            resources=Resources(partition="gpu"),
        )
    assert json.loads((tmp_path / "logs" / "job.json").read_text())["state"] == "FAILED"
    assert not (tmp_path / "p.npy").exists()


def test_submit_imports_no_torch(tmp_path):
    """`f2d2 submit` (parsing, submitting, waiting for a local job) never loads torch: only the job does."""
    import subprocess
    import sys

    code = (
        "import sys; from f2d2.cli import main; "
        f"rc = main(['submit', '--cluster', 'local', '--log-dir', {str(tmp_path / 'logs')!r}, '--', "
        f"*{data_argv(tmp_path / 'p.npy')!r}]); print(rc, 'torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.stdout.split() == ["0", "False"], proc.stdout + proc.stderr
    assert np.load(tmp_path / "p.npy").shape == (50, 2)
    record = json.loads((tmp_path / "logs" / "job.json").read_text())
    assert record["state"] == "COMPLETED" and record["wall_seconds"] > 0
