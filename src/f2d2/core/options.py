"""Names of the flow-map step's options, free of torch so that the CLI parser loads fast.

DIVERGENCE_SOURCES: "head" (the F2D2 divergence head) or the exact / Hutchinson divergence of the
instantaneous velocity. BACKWARD_MODES: how a flow map steps from data towards noise (see flowmap.py).
LOG_PROB_FROM: where a sample's log-density is computed (see sampling.py): along the forward steps from its noise,
or by the likelihood's K backward steps from the sample itself.
"""

DIVERGENCE_SOURCES = ("head", "exact", "hutchinson")
BACKWARD_MODES = ("two-way", "forward-only")
LOG_PROB_FROM = ("noise", "sample")


def divergence_for(requested: str | None, *, has_head: bool, adaptive: bool) -> str:
    """The divergence a log-density integrates (a likelihood, or the density of samples drawn forward):
    ``requested`` (one of DIVERGENCE_SOURCES) or, when None, the divergence head of a model that has one in a
    few-step walk, else the exact divergence. ``adaptive``: the dopri5 reference, which integrates the
    velocity's divergence (never the head). ValueError for a request the model or the integrator cannot
    serve, saying what it can."""
    if requested is None:
        return "head" if has_head and not adaptive else "exact"
    if requested not in DIVERGENCE_SOURCES:
        raise ValueError(f"div = {requested!r}; expected one of {list(DIVERGENCE_SOURCES)}")
    if requested == "head" and not has_head:
        raise ValueError(
            "div = 'head' needs a model with a divergence head (an F2D2 checkpoint); this one has none, so its "
            "log-density integrates the velocity's divergence: div = 'exact' (its default) or 'hutchinson'"
        )
    if requested == "head" and adaptive:
        raise ValueError(
            "div = 'head' needs steps = K; the adaptive reference integrates the velocity's divergence: "
            "div = 'exact' (its default) or 'hutchinson'"
        )
    return requested
