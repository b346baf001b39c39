# Evaluation cells: each (run, K) has its own output files. With eval.bundle (the default) one job per
# trained run (rule eval_<run>) loads its checkpoint once and computes all its cells (`f2d2 eval`), so
# that a cheap cell costs no process start-up of its own; without it (the image presets, whose cells
# take minutes to hours) each cell is its own job and can be rebuilt alone. Either way a cell's files
# and numbers are the same. NLL cells are compared point by point with the reference solve of the
# teacher (REFERENCE, the experiment's reference stage). Each job logs to a snakemake.log beside its
# outputs (a bundle's: OUT/eval/bundle/<run>/logs/). Each cell's files and arguments: CELLS
# (f2d2.config.cells).


rule test_points:
    output:
        CELLS.test_points,
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


_reference = CELLS.reference_solve(REFERENCE)


rule reference_nll:
    input:
        trained(REFERENCE),
        points=rules.test_points.output,
    output:
        **_reference.outputs,
    log:
        _reference.log,
    params:
        submit=_reference.submit,
        args=_reference.args,
    resources:
        **submit_resources("eval"),
    shell:
        "{params.submit} {resources.f2d2_submit} -- nll {params.args} > {log} 2>&1"


# Table 7's second yardstick for a run whose head learned its own velocity's divergence (div_source self):
# the solve of that velocity, the run's own or its frozen warm start's (experiment.own_flow_source).
for _run in OWN_FLOW_STAGES:
    _source = own_flow_source(config, _run)  # a run, or a checkpoint outside the pipeline
    _own_input, _own_ckpt = (
        (trained(_source), CELLS.checkpoint(_source)) if _source in STAGES else (_source, _source)
    )
    _solve = CELLS.reference_solve(_run, _own_ckpt)

    rule:
        name:
            f"own_flow_reference_{_run}"
        input:
            _own_input,
            points=rules.test_points.output,
        output:
            **_solve.outputs,
        log:
            _solve.log,
        params:
            submit=_solve.submit,
            args=_solve.args,
        resources:
            **submit_resources("eval"),
        shell:
            "{params.submit} {resources.f2d2_submit} -- nll {params.args} > {log} 2>&1"


# The speed-accuracy frontier (eval.frontier): every F2D2 stage at each K against the reference teacher's Euler,
# midpoint, RK4 and dopri5 solves (f2d2's and flow_matching's), one job, one thread, side by side.
if FRONTIER is not None:

    rule frontier:
        input:
            [trained(r) for r in [REFERENCE, *F2D2_STAGES]],
            points=rules.test_points.output,
        output:
            json=FRONTIER.outputs["json"],
            csv=FRONTIER.outputs["csv"],
            png=report(FRONTIER.outputs["png"], caption="../report/figure_frontier.rst", category="Figures"),
        log:
            FRONTIER.log,
        params:
            submit=FRONTIER.submit,
            args=FRONTIER.args,
        resources:
            **submit_resources("eval"),
        shell:
            "{params.submit} {resources.f2d2_submit} -- frontier {params.args} > {log} 2>&1"


# Sample quality of an image experiment (eval.quality): FID of the teacher's, the baselines' and the F2D2 stages'
# samplers against held-out images, self-guidance paired with its unguided twin, the guidance sweep; one job.
if QUALITY is not None:

    rule quality:
        input:
            [trained(r) for r in STAGES],
        output:
            json=QUALITY.outputs["json"],
            csv=QUALITY.outputs["csv"],
            png=report(QUALITY.outputs["png"], caption="../report/figure_quality.rst", category="Figures"),
        log:
            QUALITY.log,
        params:
            submit=QUALITY.submit,
            args=QUALITY.args,
            data=DATA_FINGERPRINT,
        # Snakemake sets OMP_NUM_THREADS to a job's threads (else 1): the Inception network uses the CPUs asked for
        threads: job_resources(config, "quality")["cpus"]
        resources:
            **submit_resources("quality"),
        shell:
            "{params.submit} {resources.f2d2_submit} -- quality {params.args} > {log} 2>&1"


rule fid_reference:
    output:
        CELLS.fid_reference,
    log:
        f"{OUT}/eval/logs/fid_reference/snakemake.log",
    params:
        submit=submit(f"{OUT}/eval/logs/fid_reference", "fid-reference"),
        data=DATA_FINGERPRINT,
        extractor=FID["extractor"],
        weights=FID["weights_dir"],
        n=f"--n {FID['n_reference']}" if FID.get("n_reference") else "",
        device=CELLS.device,
    resources:
        **submit_resources("eval"),
    shell:
        "{params.submit} {resources.f2d2_submit} -- fid-reference --config {CONFIG_FILE} --out {output} --extractor {params.extractor} "
        "--weights-dir {params.weights} {params.n} --device {params.device} > {log} 2>&1"


rule density_grid:
    output:
        points=CELLS.density_grid,
        meta=f"{OUT}/eval/density/grid.json",
    log:
        f"{OUT}/eval/density/logs/grid.log",
    params:
        **EVAL["density_grid"],
    script:
        "../scripts/density_grid.py"


if BUNDLE:
    for _run in RUNS:
        _cells = CELLS.run_cells(_run)

        rule:
            name:
                bundle_rule(_run)
            input:
                trained(_run),
                points=rules.test_points.output,
                reference=rules.reference_nll.output.csv,
                **({"fid": CELLS.fid_reference} if CELLS.sample_fid else {}),
                **({"grid": rules.density_grid.output.points} if _run in DENSITY_RUNS else {}),
            output:
                [path for cell in _cells for path in cell.outputs.values()],
            log:
                f"{CELLS.bundle_log_dir(_run)}/snakemake.log",
            params:
                submit=submit(CELLS.bundle_log_dir(_run), f"eval-{_run}"),
                ckpt=CELLS.checkpoint(_run),
                record=CELLS.bundle_record(_run),
                cells=cell_flags(_cells),
                device=CELLS.device,
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
            submit=lambda w: CELLS.nll(w.run, w.k).submit,
            ckpt=lambda w: CELLS.checkpoint(w.run),
            args=lambda w: CELLS.nll(w.run, w.k).args,
            device=CELLS.device,
        wildcard_constraints:
            run="|".join(RUNS),
            k=r"\d+",
        resources:
            **submit_resources("eval"),
        shell:
            "{params.submit} {resources.f2d2_submit} -- nll --checkpoint {params.ckpt} --device {params.device} {params.args} > {log} 2>&1"

    rule solver_nll_cell:
        input:
            trained(REFERENCE),
            points=rules.test_points.output,
            reference=rules.reference_nll.output.csv,
        output:
            csv=f"{OUT}/eval/nll/{REFERENCE}/{{solver}}_K{{k}}.csv",
            json=f"{OUT}/eval/nll/{REFERENCE}/{{solver}}_K{{k}}.json",
        log:
            f"{OUT}/eval/nll/{REFERENCE}/logs/{{solver}}_K{{k}}/snakemake.log",
        params:
            submit=lambda w: CELLS.solver_nll(w.solver, w.k).submit,
            ckpt=CELLS.checkpoint(REFERENCE),
            args=lambda w: CELLS.solver_nll(w.solver, w.k).args,
            device=CELLS.device,
        wildcard_constraints:
            solver="midpoint|rk4",
            k=r"\d+",
        resources:
            **submit_resources("eval"),
        shell:
            "{params.submit} {resources.f2d2_submit} -- nll --checkpoint {params.ckpt} --device {params.device} {params.args} > {log} 2>&1"

    rule sample_cell:
        input:
            lambda w: trained(w.run),
            **({"fid": CELLS.fid_reference} if CELLS.sample_fid else {}),
        output:
            samples=f"{OUT}/eval/samples/{{run}}/K{{k}}{{guided}}.npy",
            json=f"{OUT}/eval/samples/{{run}}/K{{k}}{{guided}}.json",
        log:
            f"{OUT}/eval/samples/{{run}}/logs/K{{k}}{{guided}}/snakemake.log",
        params:
            submit=lambda w: CELLS.sample(w.run, w.k, bool(w.guided)).submit,
            ckpt=lambda w: CELLS.checkpoint(w.run),
            args=lambda w: CELLS.sample(w.run, w.k, bool(w.guided)).args,
            device=CELLS.device,
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
            submit=lambda w: CELLS.density(w.run, w.k).submit,
            ckpt=lambda w: CELLS.checkpoint(w.run),
            args=lambda w: CELLS.density(w.run, w.k).args,
            device=CELLS.device,
        wildcard_constraints:
            run="|".join(RUNS),
            k=r"\d+",
        resources:
            **submit_resources("eval"),
        shell:
            "{params.submit} {resources.f2d2_submit} -- nll --checkpoint {params.ckpt} --device {params.device} {params.args} > {log} 2>&1"


# Self-normalised importance sampling of the 2D target (the checkerboard, or eval.importance.target_fn) with a
# run's K-step samples and their log q, or the teacher's dopri5 reference: one `f2d2 eval` job per run
# (IMPORTANCE), apart from its evaluation bundle, so that adding these cells reruns no other.
for _run, _cells in IMPORTANCE.items():

    rule:
        name:
            bundle_rule(_run, "importance")
        input:
            trained(_run),
        output:
            [cell.outputs["json"] for cell in _cells],
        log:
            f"{CELLS.importance_log_dir(_run)}/snakemake.log",
        params:
            submit=submit(CELLS.importance_log_dir(_run), f"importance-{_run}"),
            ckpt=CELLS.checkpoint(_run),
            record=f"{CELLS.importance_log_dir(_run)}/cells.json",
            cells=cell_flags(_cells),
            device=CELLS.device,
        resources:
            **submit_resources("eval"),
        shell:
            "{params.submit} {resources.f2d2_submit} -- eval --checkpoint {params.ckpt} --device {params.device} "
            "--record {params.record} {params.cells} > {log} 2>&1"
