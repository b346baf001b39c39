"""The run's teacher path (``objective.teacher_path``, f2d2.objectives.teacher_path), kept in its folder.

``prepare`` draws the training points (distinct dequantized images and, with ``jitter``, jittered ones, or draws
of a 2D set; seeded with seed + PATH_STREAM, apart from training's streams), solves the teacher's path from them
and writes it to ``<workdir>/teacher_path.pt`` atomically with what it was solved from (a digest of the teacher's
weights, the divergence, the seed, points, grid, tol and jitter); a run that finds a file with the same key reads
it back instead.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from f2d2.data import ImageDataset, jitter
from f2d2.eval.bpd import dequantize
from f2d2.io.checkpoint import save_checkpoint
from f2d2.nets import FlowMapNet
from f2d2.objectives import teacher_path

FILE = "teacher_path.pt"
PATH_STREAM = 2**33  # the points' draw and the solve's probes: seed + PATH_STREAM


def prepare(
    folder: Path,
    options: dict,
    div: str,
    teacher: FlowMapNet,
    data,
    seed: int,
    device: torch.device,
    *,
    write: bool = True,
) -> teacher_path.TeacherPath:
    """The run's path (on the CPU): read from ``folder / FILE`` when it was solved from the same teacher weights
    and options, else solved now on ``device`` (the teacher's) from ``options["points"]`` training points drawn
    with seed + PATH_STREAM, and written there (with ``write``: one rank of several writes, each solves the same
    path itself, so none waits on another)."""
    key = {
        "teacher": _weights_digest(teacher),
        "div": div,
        "seed": seed,
        **{k: options[k] for k in ("points", "grid", "tol")},
        "jitter": options.get("jitter"),
    }
    file = Path(folder) / FILE
    if file.exists():
        saved = torch.load(file, map_location="cpu", weights_only=True)
        if saved["key"] == key:
            return teacher_path.TeacherPath(saved["x"], saved["div"], key)
    generator = torch.Generator().manual_seed(seed + PATH_STREAM)
    x1 = _points(data, options["points"], options.get("jitter"), generator)
    probes = torch.Generator(device).manual_seed(seed + PATH_STREAM)
    path = teacher_path.solve(
        teacher, x1.to(device), options["grid"], tol=options["tol"], div=div, generator=probes, key=key
    )
    if write:
        save_checkpoint(file, {"x": path.x, "div": path.div, "key": key})
    return path


def _points(data, n: int, jittered: dict | None, generator: torch.Generator) -> torch.Tensor:
    """The path's points at t = 1 on the CPU: n distinct dequantized training images, then (``jittered``) its
    ``points`` jittered training images (a second draw of distinct images); or n draws of a 2D set."""
    if not isinstance(data, ImageDataset):
        if jittered:
            raise ValueError(
                f"objective.teacher_path.jitter = {jittered!r} jitters images, but the run's data "
                f"{type(data).__name__} gives points; set jitter: null"
            )
        return data.sample(n, generator)
    pixels = data.train_pixels()
    for key, count in (("points", n), ("jitter.points", jittered["points"] if jittered else 0)):
        if count > len(pixels):
            raise ValueError(
                f"objective.teacher_path.{key} = {count} is more than the {len(pixels)} training images; "
                f"use at most {len(pixels)}"
            )
    chosen = [pixels[torch.randperm(len(pixels), generator=generator)[:n]]]
    if jittered:
        drawn = pixels[torch.randperm(len(pixels), generator=generator)[: jittered["points"]]]
        chosen.append(jitter.jitter(drawn, jittered, generator))
    return dequantize(torch.cat(chosen), generator)


def _weights_digest(model: FlowMapNet) -> str:
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
