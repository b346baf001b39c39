"""Photometric jitter of 8-bit images: inputs around the training images, for targets read off a teacher there.

A head distilled on the training images alone matches its teacher there only: on a dark star field or a flat
black surround it keeps near the training images' typical output (docs/ood.md). ``jitter`` makes images the
training set does not hold from images it does (on 8x8 patches it fixes the dark, noisy kind and moves smooth,
saturated photos further off: docs/ood.md). For each image (C, H, W) in 0..255, one draw per image of each
factor, uniform in its range, in this order:

- saturation s: y = g + s (x - g), g the image's per-pixel mean over channels (s = 0 grey, s > 1 more colourful);
- flat: with probability ``flat`` the image becomes its mean level (contrast 0, no noise below);
- contrast c: y = m + c (y - m), m the image's mean over channels and pixels;
- brightness b: y = b y;
- noise: y + sigma N(0, 1) per value, sigma = ``noise`` u^2, u ~ U(0, 1) (most images get little);

then rounded and clipped to 0..255. ``SETTINGS``: the keys of a jitter's settings (``RANGES``: those given as
[low, high]).
"""

from __future__ import annotations

import torch

RANGES = ("saturation", "contrast", "brightness")  # settings given as [low, high]
SETTINGS = (*RANGES, "noise", "flat")


def problems(settings: dict, where: str) -> list[str]:
    """One line per range of ``settings`` whose low end is above its high end (the schema checks the rest)."""
    return [
        f"{where}.{key} = {settings[key]!r}; expected [low, high] with low <= high"
        for key in RANGES
        if settings[key][0] > settings[key][1]
    ]


def jitter(pixels: torch.Tensor, settings: dict, generator: torch.Generator) -> torch.Tensor:
    """uint8 (N, C, H, W) -> jittered uint8 (N, C, H, W), drawn with ``generator`` (on the pixels' device)."""
    n, device = len(pixels), pixels.device

    def draw(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, 1, 1, 1, generator=generator, device=device)

    x = pixels.float()
    grey = x.mean(1, keepdim=True)
    y = grey + draw(*settings["saturation"]) * (x - grey)
    level = y.mean((1, 2, 3), keepdim=True)
    textured = (torch.rand(n, 1, 1, 1, generator=generator, device=device) >= settings["flat"]).float()
    y = level + textured * draw(*settings["contrast"]) * (y - level)
    y = y * draw(*settings["brightness"])
    sigma = settings["noise"] * draw(0.0, 1.0) ** 2
    y = y + textured * sigma * torch.randn(y.shape, generator=generator, device=device)
    return y.round().clamp(0, 255).to(torch.uint8)
