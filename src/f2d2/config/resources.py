"""What one job asks for (the config's ``resources.<kind>`` and ``f2d2 submit``'s options), free of torch.
Values, ranges and defaults are the schema's (definition ``resources``)."""

from __future__ import annotations

import dataclasses

from f2d2.config.schema import defaults, definition, section
from f2d2.config.validate import problems, raise_problems

CLUSTERS = tuple(section("cluster")["enum"])
DEFAULT_CLUSTER = section("cluster")["default"]
RESOURCE_DEFAULTS = defaults(definition("resources"))


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one job asks for. ``partition`` is used on SLURM only; the local executor ignores cpus and memory.
    A value the schema does not allow raises ConfigError (a ValueError) naming it."""

    partition: str | None = RESOURCE_DEFAULTS["partition"]
    gpus: int = RESOURCE_DEFAULTS["gpus"]
    cpus: int = RESOURCE_DEFAULTS["cpus"]
    mem_gb: float = RESOURCE_DEFAULTS["mem_gb"]
    time_min: int = RESOURCE_DEFAULTS["time_min"]
    tasks_per_node: int = RESOURCE_DEFAULTS["tasks_per_node"]
    signal_delay_s: int = RESOURCE_DEFAULTS["signal_delay_s"]  # SLURM's SIGUSR2 before the time limit

    def __post_init__(self) -> None:
        raise_problems(problems(dataclasses.asdict(self), "resources", prefix="Resources"), "invalid resources")
