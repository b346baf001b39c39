"""Names of the flow-map step's options, free of torch so that the CLI parser loads fast.

DIVERGENCE_SOURCES: "head" (the F2D2 divergence head) or the exact / Hutchinson divergence of the
instantaneous velocity. BACKWARD_MODES: how a flow map steps from data towards noise (see flowmap.py).
"""

DIVERGENCE_SOURCES = ("head", "exact", "hutchinson")
BACKWARD_MODES = ("two-way", "forward-only")
