# Evaluation cells: each (run, K) has its own output files. With eval.bundle (the default) one job per
# trained run (rule eval_<run>) loads its checkpoint once and computes all its cells (`f2d2 eval`), so
# that a cheap cell costs no process start-up of its own; without it (the image presets, whose cells
# take minutes to hours) each cell is its own job and can be rebuilt alone. Either way a cell's files
# and numbers are the same. NLL cells are compared point by point with the reference solve of the
# teacher (REFERENCE, the experiment's reference stage). Each job logs to a snakemake.log beside its
# outputs (a bundle's: OUT/eval/bundle/<run>/logs/).


BATCH = f"--batch-size {EVAL['batch_size']}" if EVAL.get("batch_size") else ""


rule test_points:
    output:
        f"{OUT}/eval/test_points.npy",
    log:
        f"{OUT}/eval/logs/test_points.log",
    params:
        n=EVAL["n_points"],
        seed=EVAL["test_seed"],
        data=DATA_FINGERPRINT,
    shell:
        "f2d2 data --config {CONFIG_FILE} --n {params.n} --seed {params.seed} --out {output} > {log} 2>&1"


# Where the test points come from (held-out rows of a point file, a test file, fresh draws, test images),
# for the tables' test_split column. A rule of its own: rules.test_points.output stays the one .npy.
rule test_split:
    input:
        rules.test_points.output,
    output:
        f"{OUT}/eval/test_points.json",
    log:
        f"{OUT}/eval/logs/test_split.log",
    params:
        n=EVAL["n_points"],
        seed=EVAL["test_seed"],
        data=DATA_FINGERPRINT,
    shell:
        "f2d2 data --config {CONFIG_FILE} --n {params.n} --seed {params.seed} --summary {output} > {log} 2>&1"


def reference_solve(run, ckpt=None):
    """The dopri5 reference solve of the velocity of checkpoint ``ckpt`` (``run``'s if None) on the test
    points, writing eval/nll/<run>/reference.*: its output files, log, `f2d2 submit` and the `f2d2 nll`
    arguments (params, so evaluated when the rule is defined, not when a rule made in a loop runs)."""
    ref, folder = EVAL["reference"], f"{OUT}/eval/nll/{run}"
    job = "nll-reference" if run == REFERENCE else f"nll-reference-{run}"
    args = (
        f"--checkpoint {shlex.quote(ckpt or checkpoint(run))} "
        f"--points {shlex.quote(rules.test_points.output[0])} --reference --atol {ref['atol']} --rtol {ref['rtol']} "
        f"--div {ref['div']} --device {device('eval')} {BATCH} --out {shlex.quote(folder)}/reference.csv "
        f"--summary {shlex.quote(folder)}/reference.json"
    )
    outputs = {"csv": f"{folder}/reference.csv", "json": f"{folder}/reference.json"}
    return outputs, f"{folder}/logs/reference/snakemake.log", submit(f"{folder}/logs/reference", job), args


_outputs, _log, _submit, _args = reference_solve(REFERENCE)


rule reference_nll:
    input:
        trained(REFERENCE),
        points=rules.test_points.output,
    output:
        **_outputs,
    log:
        _log,
    params:
        submit=_submit,
        args=_args,
    resources:
        **submit_resources("eval"),
    shell:
        "{params.submit} {resources.f2d2_submit} -- nll {params.args} > {log} 2>&1"


# Table 7's second yardstick for a run whose head learned its own velocity's divergence (div_source self):
# the solve of that velocity, the run's own or its frozen warm start's (experiment.own_flow_source).
for _run in OWN_FLOW_STAGES:
    _source = experiment.own_flow_source(config, _run)  # a run, or a checkpoint outside the pipeline
    _own_input, _own_ckpt = (trained(_source), checkpoint(_source)) if _source in STAGES else (_source, _source)
    _outputs, _log, _submit, _args = reference_solve(_run, _own_ckpt)

    rule:
        name:
            f"own_flow_reference_{_run}"
        input:
            _own_input,
            points=rules.test_points.output,
        output:
            **_outputs,
        log:
            _log,
        params:
            submit=_submit,
            args=_args,
        resources:
            **submit_resources("eval"),
        shell:
            "{params.submit} {resources.f2d2_submit} -- nll {params.args} > {log} 2>&1"


rule fid_reference:
    output:
        fid_reference(),
    log:
        f"{OUT}/eval/logs/fid_reference/snakemake.log",
    params:
        submit=submit(f"{OUT}/eval/logs/fid_reference", "fid-reference"),
        data=DATA_FINGERPRINT,
        extractor=FID["extractor"],
        weights=FID["weights_dir"],
        n=f"--n {FID['n_reference']}" if FID.get("n_reference") else "",
        device=device("eval"),
    resources:
        **submit_resources("eval"),
    shell:
        "{params.submit} {resources.f2d2_submit} -- fid-reference --config {CONFIG_FILE} --out {output} --extractor {params.extractor} "
        "--weights-dir {params.weights} {params.n} --device {params.device} > {log} 2>&1"


rule density_grid:
    output:
        points=f"{OUT}/eval/density/grid.npy",
        meta=f"{OUT}/eval/density/grid.json",
    log:
        f"{OUT}/eval/density/logs/grid.log",
    params:
        **EVAL["density_grid"],
    script:
        "../scripts/density_grid.py"


# Each cell's `f2d2 nll` / `f2d2 sample` arguments less --checkpoint and --device, the same for a cell
# job and a bundle.


def nll_cell_args(run, k):
    return shlex.join(["--points", rules.test_points.output[0], "--steps", str(k), "--div", cell_div(run),
                       "--backward", EVAL["backward"], "--compare", rules.reference_nll.output.csv, *BATCH.split(),
                       "--out", nll_cell(run, k).replace(".json", ".csv"), "--summary", nll_cell(run, k)])


def sample_cell_args(run, k, guided):
    args = ["--n", str(FID.get("n_samples", EVAL["n_points"]) if IMAGES else EVAL["n_points"]), "--steps", str(k),
            "--seed", str(EVAL["sample_seed"])]
    if guided:
        g = EVAL["guidance"]
        args += ["--guidance-steps", str(g["steps"]),
                 "--guidance-lr", str(g["lr_one_step"] if int(k) == 1 else g["lr_multi_step"])]
    if IMAGES:
        args += ["--fid-stats", fid_reference(), "--fid-extractor", FID["extractor"],
                 "--fid-weights-dir", FID["weights_dir"]]
    json = sample_cell(run, k, guided)
    return shlex.join([*args, *BATCH.split(), "--out", json.replace(".json", ".npy"), "--metrics", json])


def density_cell_args(run, k):
    return shlex.join(["--points", rules.density_grid.output.points, "--steps", str(k), "--div", cell_div(run),
                       "--backward", EVAL["backward"], "--out", density_cell(run, k)])


def cell_div(run):
    return "head" if is_f2d2(run) else EVAL["baseline_div"]


def bundle_cells(run):
    """A run's cells as (kind, `f2d2 eval --cell` text, output files): NLL and samples at every K, guided samples
    for the F2D2 stages, and its density cell if the density figure shows it."""
    cells = [("nll", f"nll {nll_cell_args(run, k)}", [nll_cell(run, k).replace(".json", ".csv"), nll_cell(run, k)])
             for k in STEPS]
    for guided in (False, True) if run in F2D2_STAGES else (False,):
        cells += [("sample", f"sample {sample_cell_args(run, k, guided)}",
                   [sample_cell(run, k, guided).replace(".json", ".npy"), sample_cell(run, k, guided)])
                  for k in STEPS]
    if run in DENSITY_RUNS:
        k = config["figures"]["density"]["steps"]
        cells.append(("density", f"nll {density_cell_args(run, k)}", [density_cell(run, k)]))
    return cells


if BUNDLE:
    for _run in RUNS:
        _cells = bundle_cells(_run)

        rule:
            name:
                bundle_rule(_run)
            input:
                trained(_run),
                points=rules.test_points.output,
                reference=rules.reference_nll.output.csv,
                **({"fid": fid_reference()} if IMAGES else {}),
                **({"grid": rules.density_grid.output.points} if _run in DENSITY_RUNS else {}),
            output:
                [path for _, _, outputs in _cells for path in outputs],
            log:
                f"{bundle_log_dir(_run)}/snakemake.log",
            params:
                submit=submit(bundle_log_dir(_run), f"eval-{_run}"),
                ckpt=checkpoint(_run),
                record=bundle_record(_run),
                cells=" ".join(f"--cell {shlex.quote(text)}" for _, text, _ in _cells),
                device=device("eval"),
            resources:
                **submit_resources("eval"),
            shell:
                "{params.submit} {resources.f2d2_submit} -- eval --checkpoint {params.ckpt} --device {params.device} "
                "--record {params.record} {params.cells} > {log} 2>&1"

else:

    rule nll_cell:
        input:
            lambda w: trained(w.run),
            points=rules.test_points.output,
            reference=rules.reference_nll.output.csv,
        output:
            csv=f"{OUT}/eval/nll/{{run}}/K{{k}}.csv",
            json=f"{OUT}/eval/nll/{{run}}/K{{k}}.json",
        log:
            f"{OUT}/eval/nll/{{run}}/logs/K{{k}}/snakemake.log",
        params:
            submit=lambda w: submit(cell_log_dir("nll", w.run, f"K{w.k}"), f"nll-{w.run}-K{w.k}"),
            ckpt=lambda w: checkpoint(w.run),
            args=lambda w: nll_cell_args(w.run, w.k),
            device=device("eval"),
        wildcard_constraints:
            run="|".join(RUNS),
            k=r"\d+",
        resources:
            **submit_resources("eval"),
        shell:
            "{params.submit} {resources.f2d2_submit} -- nll --checkpoint {params.ckpt} --device {params.device} {params.args} > {log} 2>&1"

    rule sample_cell:
        input:
            lambda w: trained(w.run),
            **({"fid": fid_reference()} if IMAGES else {}),
        output:
            samples=f"{OUT}/eval/samples/{{run}}/K{{k}}{{guided}}.npy",
            json=f"{OUT}/eval/samples/{{run}}/K{{k}}{{guided}}.json",
        log:
            f"{OUT}/eval/samples/{{run}}/logs/K{{k}}{{guided}}/snakemake.log",
        params:
            submit=lambda w: submit(cell_log_dir("samples", w.run, f"K{w.k}{w.guided}"),
                                    f"sample-{w.run}-K{w.k}{w.guided}"),
            ckpt=lambda w: checkpoint(w.run),
            args=lambda w: sample_cell_args(w.run, w.k, bool(w.guided)),
            device=device("eval"),
        wildcard_constraints:
            run="|".join(RUNS),
            k=r"\d+",
            guided="|_guided",
        resources:
            **submit_resources("eval"),
        shell:
            "{params.submit} {resources.f2d2_submit} -- sample --checkpoint {params.ckpt} --device {params.device} {params.args} > {log} 2>&1"

    rule density_cell:
        input:
            lambda w: trained(w.run),
            points=rules.density_grid.output.points,
        output:
            f"{OUT}/eval/density/{{run}}/K{{k}}.csv",
        log:
            f"{OUT}/eval/density/{{run}}/logs/K{{k}}/snakemake.log",
        params:
            submit=lambda w: submit(cell_log_dir("density", w.run, f"K{w.k}"), f"density-{w.run}-K{w.k}"),
            ckpt=lambda w: checkpoint(w.run),
            args=lambda w: density_cell_args(w.run, w.k),
            device=device("eval"),
        wildcard_constraints:
            run="|".join(RUNS),
            k=r"\d+",
        resources:
            **submit_resources("eval"),
        shell:
            "{params.submit} {resources.f2d2_submit} -- nll --checkpoint {params.ckpt} --device {params.device} {params.args} > {log} 2>&1"
