"""The patches data set: uint8 patches of scikit-image's bundled photos, split by region with no overlap."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from f2d2.cli import main
from f2d2.data import IMAGE_NAMES, DataError, make_dataset
from f2d2.data.patches import CHECK_PHOTOS, DEFAULT_PHOTOS, OOD_PHOTOS, PHOTOS, Patches, read_photo


@pytest.fixture(scope="module", params=[8, 32])
def patches(request):
    return Patches(size=request.param)


def _photo(name: str, f: int) -> np.ndarray:
    img = read_photo(name)
    h, w = img.shape[0] // f, img.shape[1] // f
    return img[: h * f, : w * f].reshape(h, f, w, f, 3).mean((1, 3))


def _masks(d: Patches, split: str) -> dict[str, np.ndarray]:
    """Per photo, which pixels of the (downsampled) photo the split's patches cover."""
    masks = {}
    for name, r, c in d.patch_boxes(split):
        h, w = PHOTOS[name][2][0] // d.downsample, PHOTOS[name][2][1] // d.downsample
        assert 0 <= r <= h - d.size and 0 <= c <= w - d.size
        masks.setdefault(name, np.zeros((h, w), bool))[r : r + d.size, c : c + d.size] = True
    return masks


def test_pixels_are_uint8_of_the_configured_shape(patches):
    s = patches.size
    for pixels, split in ((patches.train_pixels(), "train"), (patches.test_pixels(), "test")):
        assert pixels.dtype == torch.uint8 and pixels.shape[1:] == (3, s, s) and pixels.is_contiguous()
        assert len(pixels) == len(patches.patch_boxes(split)) > 0
    assert patches.shape == (3, s, s) and patches.model_defaults() == {"in_channels": 3, "image_size": s}
    x = patches.sample(5, torch.Generator().manual_seed(0))
    assert x.shape == (5, 3, s, s) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1


@pytest.mark.parametrize(
    "options",
    [
        {"size": 8},
        {"size": 32},
        {"size": 8, "stride": 3, "downsample": 2},
        {"size": 16, "stride": 5, "test_fraction": 0.5, "downsample": 4, "images": ["coffee", "retina"]},
    ],
)
def test_no_test_patch_overlaps_a_training_patch(options):
    d = Patches(**options)
    train, test = _masks(d, "train"), _masks(d, "test")
    assert set(test) == set(train) == set(d.images)  # every photo gives patches to both splits
    for name in d.images:
        assert not (train[name] & test[name]).any(), name
    assert len(set(d.patch_boxes("train"))) == len(d.patch_boxes("train"))
    covered = sum(int(m.sum()) for m in test.values())
    assert covered == len(d.patch_boxes("test")) * d.size**2  # test patches share no pixel with each other either


@pytest.mark.parametrize("downsample", [1, 3])
def test_pixels_are_the_photo_at_the_boxes(downsample):
    d = Patches(
        size=8, downsample=downsample, images=["astronaut", "motorcycle", "grace_hopper"], n_train=20, n_test=20
    )
    photos = {n: _photo(n, downsample) for n in d.images}
    for split, pixels in (("train", d.train_pixels()), ("test", d.test_pixels())):
        for (name, r, c), patch in zip(d.patch_boxes(split), pixels):
            expected = photos[name][r : r + 8, c : c + 8].transpose(2, 0, 1)
            assert np.abs(patch.numpy().astype(float) - expected).max() <= 0.5


def test_the_split_is_deterministic():
    a, b = Patches(size=8, n_train=300, n_test=100, seed=3), Patches(size=8, n_train=300, n_test=100, seed=3)
    assert a.patch_boxes("train") == b.patch_boxes("train") and a.patch_boxes("test") == b.patch_boxes("test")
    assert torch.equal(a.train_pixels(), b.train_pixels()) and torch.equal(a.test_pixels(), b.test_pixels())
    assert len(a.train_pixels()) == 300 and len(a.test_pixels()) == 100
    full, other = Patches(size=8), Patches(size=8, n_train=300, n_test=100, seed=4)
    assert set(a.patch_boxes("train")) < set(full.patch_boxes("train"))
    order = {box: i for i, box in enumerate(full.patch_boxes("train"))}
    assert a.patch_boxes("train") == sorted(a.patch_boxes("train"), key=order.get)  # kept in grid order
    assert other.patch_boxes("train") != a.patch_boxes("train")
    assert len(Patches(size=8, n_test=10**6).patch_boxes("test")) == len(full.patch_boxes("test"))


def test_every_photo_reads_at_its_size_and_the_ood_photos_are_never_defaults():
    for name, (_, _, size) in PHOTOS.items():
        img = read_photo(name)
        assert img.dtype == np.uint8 and img.shape == (*size, 3) and img.std() > 10, name
    assert set(OOD_PHOTOS) <= set(PHOTOS) and not set(OOD_PHOTOS) & set(DEFAULT_PHOTOS)
    assert set(CHECK_PHOTOS) <= set(PHOTOS) and not set(CHECK_PHOTOS) & {*DEFAULT_PHOTOS, *OOD_PHOTOS}


def test_pixel_statistics_are_not_degenerate(patches):
    for pixels in (patches.train_pixels(), patches.test_pixels()):
        x = pixels.float()
        assert x.std() > 20 and 40 < x.mean() < 215
        assert len(torch.unique(pixels.flatten(1), dim=0)) > 0.95 * len(pixels)  # patches differ
        assert (x.flatten(1).std(1) > 2).float().mean() > 0.9  # few flat patches


@pytest.mark.parametrize(
    "options, words",
    [
        ({"images": ["astronaut", "lena"]}, ["'lena'", "allowed", "chelsea"]),
        ({"images": "astronaut"}, ["images = 'astronaut'", "list"]),
        ({"images": []}, ["images = []", "non-empty"]),
        ({"images": ["coffee", "coffee"]}, ["distinct"]),
        ({"size": 320, "images": ["chelsea"]}, ["size = 320", "'chelsea' (300 x 451", "size <= 300"]),
        ({"size": 32, "test_fraction": 0.05}, ["test region", "zero test patches", "size = 32"]),
        ({"size": 32, "downsample": 4, "test_fraction": 0.9}, ["train region", "zero train patches"]),
        ({"test_fraction": 0}, ["test_fraction = 0", "(0, 1)"]),
        ({"size": 1}, ["size = 1", "integer >= 2"]),
        ({"stride": 0, "downsample": 1.5, "n_test": 0}, ["stride = 0", "downsample = 1.5", "n_test = 0"]),
    ],
)
def test_bad_options_raise_a_clear_error(options, words):
    with pytest.raises(DataError) as e:
        Patches(**options)
    for w in words:
        assert w in str(e.value)


def test_a_photo_of_another_size_than_expected_is_refused(monkeypatch):
    monkeypatch.setitem(PHOTOS, "chelsea", ("scikit-image", "chelsea", (300, 450)))
    d = Patches(images=["chelsea"])
    with pytest.raises(
        DataError,
        match=r"skimage.data.chelsea\(\) is uint8 \(300, 451, 3\); expected uint8 "
        r"\(300, 450, 3\)",
    ):
        d.train_pixels()
    with pytest.raises(DataError, match="split = 'val'"):
        d.patch_boxes("val")


def test_registered_and_read_through_the_cli(tmp_path, capsys):
    assert "patches" in IMAGE_NAMES
    d = make_dataset({"name": "patches", "size": 8})
    assert isinstance(d, Patches)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"data": {"name": "patches", "size": 8}}))
    assert (
        main(
            ["data", "--config", str(tmp_path / "c.yaml"), "--n", "10", "--seed", "1", "--out", str(tmp_path / "x.npy")]
        )
        == 0
    )
    x = np.load(tmp_path / "x.npy")
    assert x.dtype == np.uint8 and x.shape == (10, 3, 8, 8)
    np.testing.assert_array_equal(x, d.test_subset(10, 1).numpy())


def test_importing_the_data_package_leaves_skimage_unloaded():
    code = "import sys, f2d2.data; assert 'skimage' not in sys.modules, 'skimage imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
