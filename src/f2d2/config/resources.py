"""What one job asks for (the config's ``resources.<kind>`` and ``f2d2 submit``'s options), free of torch."""

from __future__ import annotations

import dataclasses

CLUSTERS = ("inline", "local", "slurm")


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one job asks for. ``partition`` is used on SLURM only; the local executor ignores cpus and memory."""

    partition: str | None = None
    gpus: int = 0
    cpus: int = 1
    mem_gb: float = 4
    time_min: int = 60
    tasks_per_node: int = 1
    signal_delay_s: int = 90  # SLURM warns the job (SIGUSR2) this long before the time limit

    def __post_init__(self) -> None:
        checks = [("gpus", self.gpus, 0, "an integer >= 0"), ("cpus", self.cpus, 1, "an integer >= 1"),
                  ("time_min", self.time_min, 1, "an integer >= 1 (minutes)"),
                  ("tasks_per_node", self.tasks_per_node, 1, "an integer >= 1"),
                  ("signal_delay_s", self.signal_delay_s, 0, "an integer >= 0 (seconds)")]
        for name, value, low, allowed in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"Resources.{name}={value!r} is not allowed; it must be {allowed}")
        if isinstance(self.mem_gb, bool) or not isinstance(self.mem_gb, (int, float)) or not self.mem_gb > 0:
            raise ValueError(f"Resources.mem_gb={self.mem_gb!r} is not allowed; it must be a number > 0 (GB)")
        if self.partition is not None and not (isinstance(self.partition, str) and self.partition.strip()):
            raise ValueError(f"Resources.partition={self.partition!r} is not allowed; it must be a non-empty "
                             "string or None (the cluster's default partition)")
