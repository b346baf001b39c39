"""How much of the pipeline's job time was computing, from the jobs' own records.

Job time: each submitit job's ``wall_seconds`` in its job.json, measured by ``f2d2 submit`` from
submission to completion (process start-ups, imports, checkpoint loading and waiting included).
Compute: the time inside ``train()`` (train.json ``seconds_this_call``) and inside each evaluation
cell: for an ``f2d2 eval`` bundle its ``--record``'s ``cell_seconds`` (each cell's whole work: reading
its inputs, computing, its metrics, writing its files; not the job's start-up, imports or checkpoint
loading), for a cell job of its own the cell JSON's ``seconds`` (the computation alone, what Table 4
reports). A job with no such record (FID reference statistics, an unbundled density cell) counts as
no compute.
Snakemake: params.jobs (the jobs' log folders); output.json, output.text.
"""

import json
import os
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

# subcommand -> (the option naming its record, the record's compute seconds)
RECORDS = {
    "train": ("--summary", "seconds_this_call"),
    "nll": ("--summary", "seconds"),
    "sample": ("--metrics", "seconds"),
    "eval": ("--record", "cell_seconds"),
    "frontier": ("--out", "seconds"),  # a folder: its frontier.json
}


def job_share(record: dict) -> tuple[float, float | None]:
    """(job wall seconds, compute seconds or None) of one job.json."""
    wall = record.get("wall_seconds")
    if wall is None:  # a record from before wall_seconds: whole seconds of its timestamps
        wall = (
            datetime.fromisoformat(record["finished"]) - datetime.fromisoformat(record["submitted"])
        ).total_seconds()
    argv = record["argv"]
    flag, key = RECORDS.get(argv[0], (None, None))
    if flag not in argv:
        return float(wall), None
    path = Path(record["cwd"]) / argv[argv.index(flag) + 1]
    if path.is_dir():  # a command writing a folder: its record is <folder>/<command>.json
        path = path / f"{argv[0]}.json"
    return float(wall), float(common.cell_value(common.read_json(path), key, path))


def main(job_dirs: list[str], out_json: str, out_text: str) -> dict:
    kinds: dict[str, dict] = {}
    unmeasured, missing = [], []
    for d in job_dirs:
        path = Path(d) / "job.json"
        if not path.is_file():
            missing.append(str(path))
            continue
        record = common.read_json(path)
        wall, compute = job_share(record)
        kind = "train" if record["argv"][0] == "train" else "eval"
        row = kinds.setdefault(kind, {"jobs": 0, "job_seconds": 0.0, "compute_seconds": 0.0})
        row["jobs"] += 1
        row["job_seconds"] += wall
        row["compute_seconds"] += compute or 0.0
        if compute is None:
            unmeasured.append(str(path))
    jobs = sum(r["jobs"] for r in kinds.values())
    job_s = sum(r["job_seconds"] for r in kinds.values())
    compute_s = sum(r["compute_seconds"] for r in kinds.values())
    for r in kinds.values():
        r.update(job_seconds=round(r["job_seconds"], 3), compute_seconds=round(r["compute_seconds"], 3))
    summary = {
        "jobs": jobs,
        "job_seconds": round(job_s, 3),
        "compute_seconds": round(compute_s, 3),
        "compute_share": round(compute_s / job_s, 4) if job_s else None,
        "by_kind": kinds,
        "unmeasured_jobs": unmeasured,
        "missing_job_records": missing,
    }
    lines = [
        f"compute share: {summary['compute_share']:.1%} of the job time of {jobs} submitit jobs "
        f"({compute_s:.1f} s computing of {job_s:.1f} s)"
        if job_s
        else "compute share: no job records"
    ]
    lines += [
        f"  {kind}: {r['jobs']} jobs, {r['compute_seconds']:.1f} s computing of {r['job_seconds']:.1f} s"
        for kind, r in sorted(kinds.items())
    ]
    if unmeasured:
        lines.append(f"  {len(unmeasured)} jobs record no compute time (counted as none)")
    if missing:
        lines.append(f"  {len(missing)} jobs have no job.json (not counted): e.g. {missing[0]}")
    common.write_text(json.dumps(summary, indent=1) + "\n", out_json)
    common.write_text("\n".join(lines) + "\n", out_text)
    print("\n".join(lines))
    return summary


if "snakemake" in globals():
    main(list(snakemake.params.jobs), str(snakemake.output.json), str(snakemake.output.text))
