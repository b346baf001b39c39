# One training run per stage and per ablation value, each through `f2d2 submit`.
# A rerun of an interrupted run resumes from its checkpoint.pt (which is not a declared output). A run whose
# resolved settings changed (params.fingerprint) is retrained; its resources can change without that.


rule train:
    input:
        lambda w: run_inputs(w.run),
    output:
        summary=f"{OUT}/train/{{run}}/train.json",
        config=f"{OUT}/train/{{run}}/config.yaml",
    log:
        f"{OUT}/train/{{run}}/logs/snakemake.log",
    params:
        submit=lambda w: submit(f"{OUT}/train/{w.run}/logs", f"train-{w.run}"),
        fingerprint=lambda w: RUN_FINGERPRINTS[w.run],
        stage=lambda w: run_stage(w.run),
        overrides=lambda w: " ".join(f"--set {shlex.quote(o)}" for o in run_overrides(w.run)),
        device=device(config, "train"),
    resources:
        **submit_resources("train"),
    wildcard_constraints:
        run="|".join(RUNS),
    shell:
        "{params.submit} {resources.f2d2_submit} -- train --config {CONFIG_FILE} --stage {params.stage} "
        "--workdir {OUT}/train/{wildcards.run} --stage-root {OUT}/train --no-progress --restart-on-change "
        "--set train.device={params.device} {params.overrides} --summary {output.summary} > {log} 2>&1"
