"""What every objective is: ``objective(model, x1, generator) -> {"loss": ..., term: ...}``, and what it says
about itself.

x1 is a data batch (B, *shape) at t = 1 (t = 0 is noise). The properties depend on the options only, so
an objective built without its teacher network (``f2d2.objectives.describe``) answers them for the
config checks and the training loop; a variant overrides the few that differ from these defaults.
"""

from __future__ import annotations


class Objective:
    """Defaults: a flow map (u(x, s, t) for s != t) without a teacher or a divergence head, any step count."""

    needs_teacher = False  # reads a frozen flow-matching teacher (the network objective.teacher names)
    needs_start = False  # reads a frozen copy of the network the run warm-starts from (train.init_from)
    trains_div_head = False  # regresses the divergence head D (the model needs model.div_head: true)
    flow_map = True  # trains u(x, s, t) off the diagonal; False: only the velocity v(x, t) = u(x, t, t)

    def fits_steps(self, k: int) -> bool:
        """Whether K >= 1 uniform steps of size 1/K are among the step sizes the objective trains."""
        return True

    def steps_rule(self) -> str:
        """What ``fits_steps`` allows, for messages."""
        return "any K >= 1"
