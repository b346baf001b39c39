"""What the pipeline derives from each training run before it starts (``f2d2.config.experiment`` names the
runs): its fingerprint, with every objective option resolved, and its label in tables and figures."""

from __future__ import annotations

from f2d2.config import experiment
from f2d2.objectives import OBJECTIVES
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
