"""Training: the loop, early stopping, data-parallel groups, stop signals (preemption) and failure
checks. Builds on ``core``, ``nets``, ``objectives``, ``data`` and ``io``."""
