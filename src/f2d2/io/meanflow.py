"""Load an official MeanFlow (Gsunshine/py-meanflow) CIFAR-10 checkpoint into ``UNetFlowMap``.

What the official code saves (``training/load_and_save.py``): ``torch.save({"model": ..., "optimizer": ...,
"lr_schedule": ..., "epoch": ..., "args": argparse.Namespace})``, where ``model`` is the state dict of
a wrapper holding the raw network under ``net.``, its EMA under ``net_ema.`` (and extra EMAs under
``net_ema1.`` ...) and a ``num_updates`` counter. The network is EDM's DDPM++ ``SongUNet`` with
MeanFlow's settings: 128 channels, multipliers (2, 2, 2), 4 blocks per resolution, attention at 16,
resampling filter (1, 3, 3, 1), two time embeddings of 2 x 128 channels each.

Time convention: MeanFlow has t = 0 data, t = 1 noise and u(z, r, t) = net(z, (t, t - r)) with
z_r = z_t - (t - r) u. In f2d2's convention (t = 0 noise) the start time is s = 1 - t_mf, the end
t = 1 - r, so the network sees (1 - s, t - s) and our average velocity is -u_MF: ``time_flip``.

Key names map one to one (ours on the right):
``map_layer0/1`` -> ``emb_mlp.0/2``; ``enc.<R>x<R>_conv`` -> ``stem``; the other ``enc.*`` and ``dec.*``
blocks, in their insertion order -> ``encoder.<i>`` / ``decoder.<i>``; ``dec.<R>x<R>_aux_norm/aux_conv``
-> ``out_norm`` / ``out_conv``; inside a block ``norm0 conv0 affine norm1 conv1 skip norm2 qkv proj``
-> ``norm_in conv_in emb_proj norm_mid conv_out skip attn_norm attn_qkv attn_out``. The resampling
filters (buffers) are checked, ``map_augment`` (EDM augmentation labels, unused at inference) is dropped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from f2d2.nets.unet import UNetFlowMap

MEANFLOW_CIFAR10 = dict(
    in_channels=3,
    image_size=32,
    channels=128,
    channel_mult=[2, 2, 2],
    attn_resolutions=[16],
    num_res_blocks=4,
    time_mult=2,
    emb_mult=4,
    resample_filter=[1, 3, 3, 1],
    time_flip=True,
)
BLOCK_KEYS = {
    "norm0": "norm_in",
    "conv0": "conv_in",
    "affine": "emb_proj",
    "norm1": "norm_mid",
    "conv1": "conv_out",
    "skip": "skip",
    "norm2": "attn_norm",
    "qkv": "attn_qkv",
    "proj": "attn_out",
}


class MeanFlowCheckpointError(RuntimeError):
    """A MeanFlow checkpoint that cannot be read or mapped; the message names the file and the keys."""


def official_block_names(image_size: int, channel_mult: list[int], num_res_blocks: int) -> tuple[list, list, int]:
    """The official ``enc.*`` / ``dec.*`` block names in our ``encoder`` / ``decoder`` order, and the top resolution."""
    enc, dec = [], []
    for level in range(len(channel_mult)):
        res = image_size >> level
        if level > 0:
            enc.append(f"{res}x{res}_down")
        enc += [f"{res}x{res}_block{i}" for i in range(num_res_blocks)]
    for level in reversed(range(len(channel_mult))):
        res = image_size >> level
        dec += [f"{res}x{res}_in0", f"{res}x{res}_in1"] if level == len(channel_mult) - 1 else [f"{res}x{res}_up"]
        dec += [f"{res}x{res}_block{i}" for i in range(num_res_blocks + 1)]
    return enc, dec, image_size


def official_to_ours(cfg: dict) -> dict[str, str]:
    """Prefix map official module name -> our module name for a U-Net config."""
    enc, dec, top = official_block_names(cfg["image_size"], list(cfg["channel_mult"]), cfg["num_res_blocks"])
    names = {
        "map_layer0": "emb_mlp.0",
        "map_layer1": "emb_mlp.2",
        f"enc.{top}x{top}_conv": "stem",
        f"dec.{top}x{top}_aux_norm": "out_norm",
        f"dec.{top}x{top}_aux_conv": "out_conv",
    }
    names.update({f"enc.{n}": f"encoder.{i}" for i, n in enumerate(enc)})
    names.update({f"dec.{n}": f"decoder.{i}" for i, n in enumerate(dec)})
    return names


def convert_state_dict(official: dict[str, torch.Tensor], cfg: dict, resample_filter: list[float]) -> dict:
    """Our state dict from an official network state dict (keys without the ``net.`` prefix)."""
    names = official_to_ours(cfg)
    taps = torch.as_tensor(resample_filter, dtype=torch.float32)
    expected_filter = (torch.outer(taps, taps) / taps.sum() ** 2)[None, None]
    ours, unknown = {}, []
    for key, value in official.items():
        module, _, leaf = key.rpartition(".")
        if key.startswith("map_augment."):
            continue
        if leaf == "resample_filter":
            if value.shape != expected_filter.shape or not torch.allclose(value.float(), expected_filter):
                raise MeanFlowCheckpointError(
                    f"{key} is {value.flatten().tolist()}; expected the filter "
                    f"{list(resample_filter)} (set model.resample_filter to match)"
                )
            continue
        block, _, sub = module.rpartition(".")
        if module in names:
            ours[f"{names[module]}.{leaf}"] = value
        elif block in names and sub in BLOCK_KEYS:
            ours[f"{names[block]}.{BLOCK_KEYS[sub]}.{leaf}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise MeanFlowCheckpointError(
            f"official keys with no counterpart in this U-Net config: {unknown[:10]}"
            f"{' ...' if len(unknown) > 10 else ''}"
        )
    return ours


def read_meanflow_checkpoint(path: str | Path, weights: str = "net_ema") -> dict[str, torch.Tensor]:
    """The network state dict stored under ``weights`` (``net``, ``net_ema``, ``net_ema1``, ...) of an official file.

    Read with ``weights_only=True``; the stored ``args`` (an argparse.Namespace) is allowed explicitly.
    """
    path = Path(path)
    if not path.is_file():
        raise MeanFlowCheckpointError(f"MeanFlow checkpoint {path} not found")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MeanFlowCheckpointError(f"{path} could not be read safely: {type(e).__name__}: {e}") from e
    state = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise MeanFlowCheckpointError(f"{path} has no 'model' state dict; expected a py-meanflow checkpoint")
    prefix = weights + "."
    net = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not net:
        heads = sorted({k.split(".")[0] for k in state})
        raise MeanFlowCheckpointError(f"{path} holds no '{weights}.*' weights; its model has {heads}")
    return net


def load_meanflow(path: str | Path, *, weights: str = "net_ema", dropout: float = 0.0, **overrides) -> UNetFlowMap:
    """A flow map (time-flipped U-Net, no divergence head) with the weights of an official MeanFlow checkpoint.

    ``overrides`` change the architecture from MeanFlow's CIFAR-10 settings (``MEANFLOW_CIFAR10``).
    """
    cfg = {**MEANFLOW_CIFAR10, **overrides}
    model = UNetFlowMap(**cfg, dropout=dropout, flow_map=True)
    state = convert_state_dict(read_meanflow_checkpoint(path, weights), cfg, cfg["resample_filter"])
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise MeanFlowCheckpointError(f"{path} does not fit the U-Net {cfg}: {e}") from e
    missing = [k for k in result.missing_keys if not k.startswith("d_head.")]
    if missing or result.unexpected_keys:
        raise MeanFlowCheckpointError(
            f"{path} does not fit the U-Net {cfg}: missing {missing[:10]}, unexpected {result.unexpected_keys[:10]}"
        )
    return model
