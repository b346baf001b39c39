# Tables and figures gathered from the evaluation cells with pandas and matplotlib, marked for the
# HTML report (`snakemake --report results/report.html`). Each logs to OUT/{tables,figures}/logs/.

_NLL_MAIN, _SAMPLES_MAIN = main_table_cells()


def _report(path, n, kind="Tables"):
    return report(path, caption=f"../report/{'table' if kind == 'Tables' else 'figure'}{n}.rst", category=kind)


rule table_main:
    input:
        nll=_NLL_MAIN,
        samples=_SAMPLES_MAIN,
        reference=rules.reference_nll.output.json,
        test_split=rules.test_split.output[0],
        training=[trained(r) for r in STAGES],
    output:
        _report(f"{OUT}/tables/table1.csv", 1),
    log:
        f"{OUT}/tables/logs/table1.log",
    params:
        methods=STAGES,
        reference=REFERENCE,
        steps=STEPS,
        config=CONFIG_FILE,
        labels=LABELS,
    script:
        "../scripts/table_main.py"


rule table_hparams:
    input:
        [f"{OUT}/train/{run}/config.yaml" for run in RUNS],
    output:
        _report(f"{OUT}/tables/table3.csv", 3),
    log:
        f"{OUT}/tables/logs/table3.log",
    params:
        runs=RUNS,
        config=CONFIG_FILE,
        labels=LABELS,
    script:
        "../scripts/table_hparams.py"


rule table_timing:
    input:
        nll=_NLL_MAIN,
        samples=_SAMPLES_MAIN,
        reference=rules.reference_nll.output.json,
    output:
        _report(f"{OUT}/tables/table4.csv", 4),
    log:
        f"{OUT}/tables/logs/table4.log",
    params:
        methods=STAGES,
        steps=STEPS,
        config=CONFIG_FILE,
        labels=LABELS,
    script:
        "../scripts/table_timing.py"


def _ablation_inputs(name):
    runs = [run for _, run in experiment.ablation_runs(config, name)]
    runs += list(config["ablations"][name].get("baselines", []))
    return {
        "nll": [nll_cell(r, k) for r in runs for k in STEPS],
        "samples": [sample_cell(r, k) for r in runs for k in STEPS],
    }


for _name, _table in ABLATION_TABLES.items():

    rule:
        name:
            f"table_ablation_{_name}"
        input:
            **_ablation_inputs(_name),
        output:
            _report(f"{OUT}/tables/table{_table}.csv", _table),
        log:
            f"{OUT}/tables/logs/table{_table}.log",
        params:
            key=_name,
            values=[v for v, _ in experiment.ablation_runs(config, _name)],
            runs=[r for _, r in experiment.ablation_runs(config, _name)],
            baselines=list(config["ablations"][_name].get("baselines", [])),
            steps=STEPS,
            config=CONFIG_FILE,
            labels=LABELS,
        script:
            "../scripts/table_ablation.py"


rule table_error:
    input:
        nll=[nll_cell(r, k) for r in STAGES for k in STEPS]
        + [nll_cell(r, k).replace(".json", ".csv") for r in STAGES for k in STEPS],
        reference=rules.reference_nll.output.json,
        reference_csv=rules.reference_nll.output.csv,
        own_references=[f"{OUT}/eval/nll/{r}/reference.json" for r in OWN_FLOW_STAGES],
        test_split=rules.test_split.output[0],
        training=[trained(r) for r in STAGES],
        solver_nll=[c.outputs["json"] for c in CELLS.solver_cells()] + [c.outputs["csv"] for c in CELLS.solver_cells()],
    output:
        _report(f"{OUT}/tables/table7.csv", 7),
    log:
        f"{OUT}/tables/logs/table7.log",
    params:
        methods=STAGES,
        own_flow=OWN_FLOW_STAGES,
        steps=STEPS,
        config=CONFIG_FILE,
        labels=LABELS,
        teacher=REFERENCE,
    script:
        "../scripts/table_error.py"


rule figure_guidance:
    input:
        samples=[sample_cell(r, k) for r in STAGES for k in STEPS]
        + [sample_cell(r, k, guided=True) for r in F2D2_STAGES for k in STEPS],
    output:
        _report(f"{OUT}/figures/figure2.png", 2, kind="Figures"),
    log:
        f"{OUT}/figures/logs/figure2.log",
    params:
        methods=F2D2_STAGES,
        steps=STEPS,
        teacher=REFERENCE,
        config=CONFIG_FILE,
        labels=LABELS,
    script:
        "../scripts/figure_guidance.py"


rule tables_display:
    input:
        table1=rules.table_main.output[0],
        table7=rules.table_error.output[0],
    output:
        table1=report(f"{OUT}/tables/table1.html", caption="../report/table1.rst", category="Tables"),
        table7=report(f"{OUT}/tables/table7.html", caption="../report/table7.rst", category="Tables"),
        headline=report(f"{OUT}/tables/headline.html", caption="../report/headline.rst", category="Summary"),
    log:
        f"{OUT}/tables/logs/tables_display.log",
    params:
        f2d2=F2D2_STAGES,
    script:
        "../scripts/table_display.py"


rule figure_curves:
    input:
        [trained(run) for run in RUNS],
    output:
        figure=report(f"{OUT}/figures/training_curves.png", caption="../report/training_curves.rst",
                      category="Figures"),
        terms=f"{OUT}/figures/training_curves.json",
    log:
        f"{OUT}/figures/logs/training_curves.log",
    params:
        runs=list(RUNS),
    script:
        "../scripts/figure_curves.py"


if "density" in (config.get("figures") or {}):

    rule figure_density:
        input:
            grid=rules.density_grid.output.meta,
            density=[density_cell(run, config["figures"]["density"]["steps"]) for run in DENSITY_RUNS],
        output:
            _report(f"{OUT}/figures/figure3.png", 3, kind="Figures"),
        log:
            f"{OUT}/figures/logs/figure3.log",
        params:
            labels=LABELS,
        script:
            "../scripts/figure_density.py"


if IMPORTANCE:

    rule table_importance:
        input:
            [cell.outputs["json"] for cells in IMPORTANCE.values() for cell in cells],
        output:
            report(f"{OUT}/tables/table_is.csv", caption="../report/table_is.rst", category="Tables"),
        log:
            f"{OUT}/tables/logs/table_is.log",
        params:
            cells=[
                [run, os.path.basename(cell.outputs["json"]).removesuffix(".json")]
                for run, cells in IMPORTANCE.items()
                for cell in cells
            ],
            reference=REFERENCE,
            config=CONFIG_FILE,
            labels=LABELS,
        script:
            "../scripts/table_importance.py"

    rule figure_importance:
        input:
            rules.table_importance.output[0],
        output:
            report(f"{OUT}/figures/figure_is.png", caption="../report/figure_is.rst", category="Figures"),
        log:
            f"{OUT}/figures/logs/figure_is.log",
        script:
            "../scripts/figure_importance.py"


rule compute_share:
    input:
        [path for path in all_targets() if path not in compute_share_files()],
    output:
        json=compute_share_files()[0],
        text=compute_share_files()[1],
    log:
        f"{OUT}/tables/logs/compute_share.log",
    params:
        jobs=job_log_dirs(),
    script:
        "../scripts/compute_share.py"
