# Evaluation cells: each (run, K) is its own job and its own output files, so one cell can be
# rebuilt alone. NLL cells are compared point by point with the reference solve of the teacher
# (REFERENCE, the experiment's reference stage). Each job logs to a snakemake.log beside its outputs.


BATCH = f"--batch-size {EVAL['batch_size']}" if EVAL.get("batch_size") else ""


rule test_points:
    output:
        f"{OUT}/eval/test_points.npy",
    log:
        f"{OUT}/eval/logs/test_points.log",
    params:
        n=EVAL["n_points"],
        seed=EVAL["test_seed"],
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
    shell:
        "f2d2 data --config {CONFIG_FILE} --n {params.n} --seed {params.seed} --summary {output} > {log} 2>&1"


rule reference_nll:
    input:
        trained(REFERENCE),
        points=rules.test_points.output,
    output:
        csv=f"{OUT}/eval/nll/{REFERENCE}/reference.csv",
        json=f"{OUT}/eval/nll/{REFERENCE}/reference.json",
    log:
        f"{OUT}/eval/nll/{REFERENCE}/logs/reference/snakemake.log",
    params:
        submit=submit("eval", f"{OUT}/eval/nll/{REFERENCE}/logs/reference", "nll-reference"),
        ckpt=checkpoint(REFERENCE),
        atol=EVAL["reference"]["atol"],
        rtol=EVAL["reference"]["rtol"],
        div=EVAL["reference"]["div"],
        device=device("eval"),
    shell:
        "{params.submit} -- nll --checkpoint {params.ckpt} --points {input.points} --reference "
        "--atol {params.atol} --rtol {params.rtol} --div {params.div} --device {params.device} {BATCH} "
        "--out {output.csv} --summary {output.json} > {log} 2>&1"


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
        submit=lambda w: submit("eval", f"{OUT}/eval/nll/{w.run}/logs/K{w.k}", f"nll-{w.run}-K{w.k}"),
        ckpt=lambda w: checkpoint(w.run),
        div=lambda w: "head" if is_f2d2(w.run) else EVAL["baseline_div"],
        backward=EVAL["backward"],
        device=device("eval"),
    wildcard_constraints:
        run="|".join(RUNS),
        k=r"\d+",
    shell:
        "{params.submit} -- nll --checkpoint {params.ckpt} --points {input.points} --steps {wildcards.k} "
        "--div {params.div} --backward {params.backward} --compare {input.reference} "
        "--device {params.device} {BATCH} --out {output.csv} --summary {output.json} > {log} 2>&1"


def _guidance_args(w):
    if not w.guided:
        return ""
    g = EVAL["guidance"]
    lr = g["lr_one_step"] if int(w.k) == 1 else g["lr_multi_step"]
    return f"--guidance-steps {g['steps']} --guidance-lr {lr}"


rule fid_reference:
    output:
        fid_reference(),
    log:
        f"{OUT}/eval/logs/fid_reference/snakemake.log",
    params:
        submit=submit("eval", f"{OUT}/eval/logs/fid_reference", "fid-reference"),
        extractor=FID["extractor"],
        weights=FID["weights_dir"],
        n=f"--n {FID['n_reference']}" if FID.get("n_reference") else "",
        device=device("eval"),
    shell:
        "{params.submit} -- fid-reference --config {CONFIG_FILE} --out {output} --extractor {params.extractor} "
        "--weights-dir {params.weights} {params.n} --device {params.device} > {log} 2>&1"


def _fid_args(w, input):
    if not IMAGES:
        return ""
    return f"--fid-stats {input.fid} --fid-extractor {FID['extractor']} --fid-weights-dir {FID['weights_dir']}"


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
        submit=lambda w: submit("eval", f"{OUT}/eval/samples/{w.run}/logs/K{w.k}{w.guided}",
                                f"sample-{w.run}-K{w.k}{w.guided}"),
        ckpt=lambda w: checkpoint(w.run),
        n=FID.get("n_samples", EVAL["n_points"]) if IMAGES else EVAL["n_points"],
        seed=EVAL["sample_seed"],
        guidance=_guidance_args,
        fid=_fid_args,
        device=device("eval"),
    wildcard_constraints:
        run="|".join(RUNS),
        k=r"\d+",
        guided="|_guided",
    shell:
        "{params.submit} -- sample --checkpoint {params.ckpt} --n {params.n} --steps {wildcards.k} "
        "--seed {params.seed} {params.guidance} {params.fid} --device {params.device} {BATCH} "
        "--out {output.samples} --metrics {output.json} > {log} 2>&1"


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


rule density_cell:
    input:
        lambda w: trained(w.run),
        points=rules.density_grid.output.points,
    output:
        f"{OUT}/eval/density/{{run}}/K{{k}}.csv",
    log:
        f"{OUT}/eval/density/{{run}}/logs/K{{k}}/snakemake.log",
    params:
        submit=lambda w: submit("eval", f"{OUT}/eval/density/{w.run}/logs/K{w.k}", f"density-{w.run}-K{w.k}"),
        ckpt=lambda w: checkpoint(w.run),
        div=lambda w: "head" if is_f2d2(w.run) else EVAL["baseline_div"],
        backward=EVAL["backward"],
        device=device("eval"),
    wildcard_constraints:
        run="|".join(RUNS),
        k=r"\d+",
    shell:
        "{params.submit} -- nll --checkpoint {params.ckpt} --points {input.points} --steps {wildcards.k} "
        "--div {params.div} --backward {params.backward} --device {params.device} --out {output} > {log} 2>&1"
