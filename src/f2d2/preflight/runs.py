"""What the pipeline derives from each training run before it starts (``f2d2.config.experiment`` names the
runs), from its objective's declaration: its fingerprint, with every objective option resolved, its label in
tables and figures, and whose flow its divergence head learned (Table 7's second yardstick)."""

from __future__ import annotations

from f2d2.config import experiment
from f2d2.objectives import OBJECTIVES, describe
from f2d2.objectives import resolve as resolve_objective


def run_fingerprint(cfg: dict, run: str) -> str:
    """The fingerprint of what ``run`` learns (``experiment.learned``), its objective's defaults filled in. The
    train rule carries it as a param, so that Snakemake retrains a run whose settings changed, a changed
    default included (and what reads it), and no other run."""
    resolved = experiment.run_config(cfg, run)
    resolved["objective"] = resolve_objective(resolved["objective"])
    return experiment.fingerprint(experiment.learned(resolved))


def run_label(cfg: dict, run: str) -> str:
    """``run``'s name in tables: its stage's ``label`` when set, else its objective's (an ablation run takes
    its stage's)."""
    resolved = experiment.run_config(cfg, run)
    return resolved.get("label") or OBJECTIVES[resolved["objective"]["name"]].label


def run_labels(cfg: dict) -> dict[str, str]:
    """{run: label} of every training run (``experiment.runs``), in order."""
    return {run: run_label(cfg, run) for run in experiment.runs(cfg)}


def own_flow_stages(cfg: dict) -> list[str]:
    """The F2D2 stages whose divergence head learned their own velocity's divergence (``div_source: self``):
    Table 7 also compares them with their own flow's dopri5 solve, in config order."""
    f2d2 = set(experiment.f2d2_runs(cfg))
    return [
        s
        for s in cfg.get("stages") or {}
        if s in f2d2 and describe(experiment.run_config(cfg, s)["objective"]).own_divergence
    ]


def own_flow_source(cfg: dict, stage: str) -> str:
    """Where ``stage``'s own flow comes from, the velocity whose divergence its head learned: ``stage`` itself
    (``self_source: live``, the paper's form) or, when its objective reads its frozen start (``self_source:
    start``), its train.init_from (a stage name or a checkpoint path), the network the maps, the tangent
    condition and the head then all learn from; the run's own velocity u(x, t, t) is then only a fit of it."""
    run = experiment.run_config(cfg, stage)
    return run["train"]["init_from"] if describe(run["objective"]).needs_start else stage
