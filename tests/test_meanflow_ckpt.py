"""Loading an official MeanFlow checkpoint: keys, the time flip, and the network it computes.

The official file is stood in for by a randomly initialised state dict saved in the official
layout (``{"model": {"net.*", "net_ema.*", "num_updates"}, "args": Namespace, ...}``, module names
of EDM's SongUNet), and its network by ``official_forward``, a functional re-statement of that
network written from reading the official code: it consumes the official keys directly.
"""

from __future__ import annotations

import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from f2d2.io.meanflow import BLOCK_KEYS, MeanFlowCheckpointError, load_meanflow, official_block_names, official_to_ours
from f2d2.nets.unet import UNetFlowMap

CFG = dict(
    in_channels=3,
    image_size=8,
    channels=8,
    channel_mult=[1, 2],
    attn_resolutions=[4],
    num_res_blocks=1,
    time_mult=2,
    emb_mult=4,
    resample_filter=[1, 3, 3, 1],
)


def official_state(seed: int) -> dict[str, torch.Tensor]:
    """Random weights under the official names (as the official network's state_dict would list them)."""
    torch.manual_seed(seed)
    ours = UNetFlowMap(**CFG).state_dict()
    back = {v: k for k, v in official_to_ours(CFG).items()}
    inner = {v: k for k, v in BLOCK_KEYS.items()}
    state = {}
    for key, value in ours.items():
        module, _, leaf = key.rpartition(".")
        if module in back:
            state[f"{back[module]}.{leaf}"] = torch.randn_like(value) * 0.3
        else:
            block, _, sub = module.rpartition(".")
            state[f"{back[block]}.{inner[sub]}.{leaf}"] = torch.randn_like(value) * 0.3
    k = torch.tensor(CFG["resample_filter"], dtype=torch.float32)
    filt = (torch.outer(k, k) / k.sum() ** 2)[None, None]
    for name in list(state):
        if ("_down." in name or "_up." in name) and name.endswith(("conv0.weight", "skip.weight")):
            state[name.replace(".weight", ".resample_filter")] = filt
    state["map_augment.weight"] = torch.randn(32, 6)
    return state


def official_forward(sd: dict, x: torch.Tensor, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """MeanFlow's net(z, (t, h)) in the official convention (t = 1 noise), on official keys."""

    def lin(name, v):
        return v @ sd[name + ".weight"].t() + sd[name + ".bias"]

    def gn(name, v):
        return F.group_norm(v, min(32, v.shape[1] // 4), sd[name + ".weight"], sd[name + ".bias"], eps=1e-6)

    def conv(name, v, mode=None):
        f = sd.get(name + ".resample_filter")
        if mode == "down":
            v = F.conv2d(v, f.tile(v.shape[1], 1, 1, 1), stride=2, padding=1, groups=v.shape[1])
        if mode == "up":
            v = F.conv_transpose2d(v, 4 * f.tile(v.shape[1], 1, 1, 1), stride=2, padding=1, groups=v.shape[1])
        w = sd[name + ".weight"]
        return F.conv2d(v, w, sd[name + ".bias"], padding=w.shape[-1] // 2)

    def block(name, v, emb):
        mode = "down" if name.endswith("_down") else "up" if name.endswith("_up") else None
        orig = v
        v = conv(name + ".conv0", F.silu(gn(name + ".norm0", v)), mode)
        v = F.silu(gn(name + ".norm1", v + lin(name + ".affine", emb)[:, :, None, None]))
        v = conv(name + ".conv1", v)
        v = (v + (conv(name + ".skip", orig, mode) if name + ".skip.weight" in sd else orig)) * math.sqrt(0.5)
        if name + ".qkv.weight" in sd:
            b, c = v.shape[:2]
            q, k, vv = conv(name + ".qkv", gn(name + ".norm2", v)).reshape(b, 3 * c, -1).chunk(3, dim=1)
            w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(c), dim=-1)
            v = (conv(name + ".proj", torch.einsum("bts,bcs->bct", w, vv).reshape(v.shape)) + v) * math.sqrt(0.5)
        return v

    def embed(tau):
        n = CFG["channels"] * CFG["time_mult"]
        freqs = (1 / 10000) ** (torch.arange(n // 2) / (n // 2 - 1))
        a = torch.outer(tau, freqs)
        return torch.cat([a.sin(), a.cos()], dim=1)  # the official [cos, sin] with its halves swapped

    emb = F.silu(lin("map_layer0", torch.cat([embed(t), embed(h)], dim=1)))
    emb = F.silu(lin("map_layer1", emb))
    enc, dec, top = official_block_names(CFG["image_size"], CFG["channel_mult"], CFG["num_res_blocks"])
    v = conv(f"enc.{top}x{top}_conv", x)
    skips = [v]
    for name in enc:
        v = block(f"enc.{name}", v, emb)
        skips.append(v)
    for name in dec:
        if v.shape[1] != sd[f"dec.{name}.conv0.weight"].shape[1]:
            v = torch.cat([v, skips.pop()], dim=1)
        v = block(f"dec.{name}", v, emb)
    return conv(f"dec.{top}x{top}_aux_conv", F.silu(gn(f"dec.{top}x{top}_aux_norm", v)))


@pytest.fixture
def official_file(tmp_path):
    raw, ema = official_state(0), official_state(1)
    model = {
        **{f"net.{k}": v for k, v in raw.items()},
        **{f"net_ema.{k}": v for k, v in ema.items()},
        **{f"net_ema1.{k}": v for k, v in raw.items()},
        "num_updates": torch.tensor(7),
    }
    path = tmp_path / "checkpoint-last.pth"
    torch.save(
        {
            "model": model,
            "optimizer": {},
            "lr_schedule": {},
            "epoch": 3,
            "args": argparse.Namespace(arch="unet", dropout=0.2, ema_decay=0.9999),
        },
        path,
    )
    return path, ema


def test_loaded_map_is_the_official_network_with_time_flipped(official_file):
    path, ema = official_file
    model = load_meanflow(path, **{k: v for k, v in CFG.items()}).eval()
    assert model.flow_map and not model.has_div_head
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 8, 8, generator=g)
    s, t = torch.tensor([0.0, 0.2, 0.5]), torch.tensor([1.0, 0.6, 0.5])
    ours = model(x, s, t).u
    # f2d2 start s = 1 - t_mf, step t - s = t_mf - r, and u = -u_MF
    theirs = official_forward(ema, x, 1 - s, t - s)
    torch.testing.assert_close(ours, -theirs, rtol=1e-4, atol=1e-4)
    # a one-step sample z_0 = z_1 - u_MF(z_1, 0, 1) is our X_{0,1}(z_1)
    z1 = x
    one = official_forward(ema, z1, torch.ones(3), torch.ones(3))
    s0, t1 = torch.zeros(3), torch.ones(3)
    torch.testing.assert_close(z1 + model(z1, s0, t1).u, z1 - one, rtol=1e-4, atol=1e-4)


def test_weights_choice_and_errors(official_file, tmp_path):
    path, _ = official_file
    raw = load_meanflow(path, weights="net", **CFG).eval()
    ema = load_meanflow(path, **CFG).eval()
    x, s = torch.randn(1, 3, 8, 8), torch.zeros(1)
    assert not torch.allclose(raw(x, s, s + 1).u, ema(x, s, s + 1).u)
    with pytest.raises(MeanFlowCheckpointError, match="net_ema9"):
        load_meanflow(path, weights="net_ema9", **CFG)
    with pytest.raises(MeanFlowCheckpointError, match="no counterpart|does not fit"):
        load_meanflow(path, **{**CFG, "num_res_blocks": 2})
    with pytest.raises(MeanFlowCheckpointError, match="filter"):
        load_meanflow(path, **{**CFG, "resample_filter": [1, 1]})
    with pytest.raises(MeanFlowCheckpointError, match="not found"):
        load_meanflow(tmp_path / "none.pth", **CFG)


def test_import_command_writes_an_f2d2_checkpoint(official_file, tmp_path, monkeypatch):
    from f2d2 import cli
    from f2d2.io import meanflow as meanflow_ckpt
    from f2d2.io.checkpoint import load_model

    path, ema = official_file
    monkeypatch.setattr(meanflow_ckpt, "MEANFLOW_CIFAR10", {**CFG, "time_flip": True})  # the small stand-in
    out = tmp_path / "imported.pt"
    assert cli.main(["import-meanflow", "--checkpoint", str(path), "--out", str(out)]) == 0
    model = load_model(out)
    x, s, t = torch.randn(2, 3, 8, 8), torch.tensor([0.1, 0.4]), torch.tensor([0.9, 0.8])
    torch.testing.assert_close(model(x, s, t).u, -official_forward(ema, x, 1 - s, t - s), rtol=1e-4, atol=1e-4)
    assert cli.main(["import-meanflow", "--checkpoint", str(tmp_path / "no.pth"), "--out", str(out)]) == 2
