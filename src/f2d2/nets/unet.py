"""U-Net flow map for images (the paper's Table 3: a DDPM++-style U-Net as in EDM and MeanFlow).

x: (B, C, H, W) in model space ([-1, 1] for data); s, t: (B,) with t = 0 noise, t = 1 data.
The network is conditioned on both flow-map times through sinusoidal (positional)
embeddings of the start time and of the signed step, (s, t - s), at frequencies up to
``time_scale`` rad per unit time, concatenated and mapped by two SiLU layers to one
embedding that every residual block adds to its features. ``time_flip`` feeds
(1 - s, t - s) instead and negates the velocity: the convention of networks trained
with t = 0 data, t = 1 noise (the MeanFlow checkpoint, see ``f2d2.io.meanflow``).

Layout (per resolution, top to bottom): ``num_res_blocks`` residual blocks, then a
downsampling block; at the bottom two middle blocks (the first with attention);
upward an upsampling block and ``num_res_blocks + 1`` blocks, each fed the matching
encoder output; self-attention in blocks at the resolutions ``attn_resolutions``.

The divergence head (Appendix C) flattens the decoder's final feature map
(channels * channel_mult[0] x H x W) and applies Linear -> SiLU -> Linear -> SiLU ->
Linear to a scalar; its gradient reaches the whole trunk (the authors' networks
do not detach it). Its last layer is zero-initialised, so D = 0 at the start.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from f2d2.nets.base import FlowMapNet, FlowMapOutput


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels (as in DDPM++)."""
    return nn.GroupNorm(max(1, min(32, channels // 4)), channels, eps=1e-6)


class SinusoidalEmbedding(nn.Module):
    """tau (B,) -> [sin(tau f_k), cos(tau f_k)] (B, n) with f_k = scale * 10000^(-k / (n/2 - 1)), k < n/2."""

    def __init__(self, n: int, scale: float = 1.0):
        super().__init__()
        if n < 4 or n % 2:
            raise ValueError(f"time embedding size {n} must be an even number >= 4")
        k = torch.arange(n // 2, dtype=torch.float32)
        self.register_buffer("freqs", scale * 10000.0 ** (-k / (n // 2 - 1)), persistent=False)

    def forward(self, tau: torch.Tensor) -> torch.Tensor:
        ang = tau.float()[:, None] * self.freqs
        return torch.cat([ang.sin(), ang.cos()], dim=1)


class Resample(nn.Module):
    """Up- or downsampling by 2 with a fixed separable FIR filter (e.g. [1, 1] box or [1, 3, 3, 1])."""

    def __init__(self, mode: str, taps: list[float]):
        super().__init__()
        k = torch.as_tensor(taps, dtype=torch.float32)
        self.mode = mode
        self.pad = (len(taps) - 1) // 2
        self.register_buffer("kernel", (torch.outer(k, k) / k.sum() ** 2)[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if self.mode == "down":
            return F.conv2d(x, self.kernel.tile(c, 1, 1, 1), stride=2, padding=self.pad, groups=c)
        return F.conv_transpose2d(x, 4 * self.kernel.tile(c, 1, 1, 1), stride=2, padding=self.pad, groups=c)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + embedding, GroupNorm-SiLU-dropout-conv, skip; optional resampling and attention.

    Outputs (x_skip + h) / sqrt(2), then (if attention) (y + attn(y)) / sqrt(2). (B, cin, H, W) ->
    (B, cout, H', W') with H' = H/2 (down), 2H (up) or H.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        emb: int,
        *,
        dropout: float,
        resample: str | None = None,
        attention: bool = False,
        taps: list[float] = (1, 1),
    ):
        super().__init__()
        self.in_channels, self.dropout = cin, dropout
        self.resample = Resample(resample, list(taps)) if resample else nn.Identity()
        self.norm_in = group_norm(cin)
        self.conv_in = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb_proj = nn.Linear(emb, cout)
        self.norm_mid = group_norm(cout)
        self.conv_out = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if (cin != cout or resample) else None
        self.attention = attention
        if attention:
            self.attn_norm = group_norm(cout)
            self.attn_qkv = nn.Conv2d(cout, 3 * cout, 1)
            self.attn_out = nn.Conv2d(cout, cout, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(self.resample(F.silu(self.norm_in(x))))
        h = F.silu(self.norm_mid(h + self.emb_proj(emb)[:, :, None, None]))
        h = self.conv_out(F.dropout(h, self.dropout, self.training))
        x = self.resample(x)
        x = (h + (self.skip(x) if self.skip is not None else x)) / math.sqrt(2)
        if self.attention:
            b, c, hh, ww = x.shape
            q, k, v = self.attn_qkv(self.attn_norm(x)).reshape(b, 3 * c, hh * ww).chunk(3, dim=1)
            w = torch.softmax(torch.einsum("bcq,bck->bqk", q, k) / math.sqrt(c), dim=2)
            a = torch.einsum("bqk,bck->bcq", w, v).reshape(b, c, hh, ww)
            x = (x + self.attn_out(a)) / math.sqrt(2)
        return x


class UNetFlowMap(FlowMapNet):
    """U-Net backbone with a velocity output of x's shape and an optional scalar divergence head.

    Config keys: ``channels`` (base width), ``channel_mult`` (one multiplier per resolution),
    ``attn_resolutions`` (feature-map sizes with attention), ``num_res_blocks``, ``dropout``,
    ``div_hidden`` (the head's two hidden sizes), ``resample_filter``, ``time_scale`` (the embedding's highest
    frequency, in rad per unit time), ``time_mult`` (time
    embedding size = channels * time_mult per time), ``emb_mult`` (embedding size = channels *
    emb_mult); ``in_channels`` and ``image_size`` come from the dataset.
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        channels: int = 128,
        channel_mult: list[int] = (1, 2, 2, 2),
        attn_resolutions: list[int] = (16,),
        num_res_blocks: int = 4,
        dropout: float = 0.13,
        time_embedding: str = "positional",
        time_scale: float = 1.0,
        time_mult: int = 1,
        emb_mult: int = 4,
        resample_filter: list[float] = (1, 1),
        div_head: bool = False,
        div_hidden: list[int] = (128, 64),
        div_scale: float = 1.0,
        flow_map: bool = False,
        time_flip: bool = False,
    ):
        super().__init__(div_scale, flow_map)
        channel_mult, attn_resolutions = list(channel_mult), list(attn_resolutions)
        if time_embedding != "positional":
            raise ValueError(f"model.time_embedding = {time_embedding!r}; only 'positional' is implemented")
        if not time_scale > 0:
            raise ValueError(f"model.time_scale = {time_scale!r}; expected a number > 0")
        if not channel_mult or any(not isinstance(m, int) or m < 1 for m in channel_mult):
            raise ValueError(f"model.channel_mult = {channel_mult!r}; expected a non-empty list of integers >= 1")
        if image_size % 2 ** (len(channel_mult) - 1):
            raise ValueError(
                f"image size {image_size} is not divisible by 2^{len(channel_mult) - 1}, "
                f"as model.channel_mult = {channel_mult} needs"
            )
        if channels < 4 or num_res_blocks < 1 or not 0 <= dropout < 1:
            raise ValueError(
                f"model.channels = {channels} (>= 4), model.num_res_blocks = {num_res_blocks} (>= 1), "
                f"model.dropout = {dropout} (in [0, 1)): expected the ranges in brackets"
            )
        if len(list(div_hidden)) != 2 or any(h < 1 for h in div_hidden):
            raise ValueError(f"model.div_hidden = {div_hidden!r}; expected two hidden sizes >= 1")
        self.data_shape = (in_channels, image_size, image_size)
        self.time_flip = bool(time_flip)
        self.div_hidden = list(div_hidden)
        tdim, edim = channels * time_mult, channels * emb_mult
        self.time_embed = SinusoidalEmbedding(tdim, float(time_scale))
        self.emb_mlp = nn.Sequential(nn.Linear(2 * tdim, edim), nn.SiLU(), nn.Linear(edim, edim), nn.SiLU())
        block = dict(emb=edim, dropout=dropout, taps=list(resample_filter))

        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.encoder = nn.ModuleList()
        skips, c = [channels], channels
        for level, mult in enumerate(channel_mult):
            res = image_size >> level
            if level > 0:
                self.encoder.append(ResBlock(c, c, resample="down", **block))
                skips.append(c)
            for _ in range(num_res_blocks):
                self.encoder.append(ResBlock(c, channels * mult, attention=res in attn_resolutions, **block))
                c = channels * mult
                skips.append(c)

        self.decoder = nn.ModuleList()
        self.takes_skip: list[bool] = []
        for level in reversed(range(len(channel_mult))):
            res, cout = image_size >> level, channels * channel_mult[level]
            if level == len(channel_mult) - 1:
                self.decoder.extend([ResBlock(c, c, attention=True, **block), ResBlock(c, c, **block)])
                self.takes_skip += [False, False]
            else:
                self.decoder.append(ResBlock(c, c, resample="up", **block))
                self.takes_skip.append(False)
            for i in range(num_res_blocks + 1):
                attn = i == num_res_blocks and res in attn_resolutions
                self.decoder.append(ResBlock(c + skips.pop(), cout, attention=attn, **block))
                self.takes_skip.append(True)
                c = cout
        self.out_norm = group_norm(c)
        self.out_conv = nn.Conv2d(c, in_channels, 3, padding=1)
        self.feature_size = c * image_size * image_size
        if div_head:
            self.add_div_head()

    def new_div_head(self) -> nn.Module:
        h1, h2 = self.div_hidden
        return nn.Sequential(
            nn.Flatten(), nn.Linear(self.feature_size, h1), nn.SiLU(), nn.Linear(h1, h2), nn.SiLU(), nn.Linear(h2, 1)
        )

    def forward(self, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> FlowMapOutput:
        if x.shape[1:] != self.data_shape:
            shape = ", ".join(map(str, self.data_shape))
            raise ValueError(f"U-Net input of shape {tuple(x.shape)}; expected (B, {shape})")
        start = 1 - s if self.time_flip else s
        emb = self.emb_mlp(torch.cat([self.time_embed(start), self.time_embed(t - s)], dim=1)).to(x.dtype)
        h = self.stem(x)
        skips = [h]
        for blk in self.encoder:
            h = blk(h, emb)
            skips.append(h)
        for blk, cat in zip(self.decoder, self.takes_skip):
            h = blk(torch.cat([h, skips.pop()], dim=1) if cat else h, emb)
        u = self.out_conv(F.silu(self.out_norm(h)))
        d = self.d_head(h).squeeze(1) if self.d_head is not None else None
        return FlowMapOutput(-u if self.time_flip else u, d)
