"""Image datasets: the generated set, CIFAR-10 and ImageNet-64 layouts, and errors that name the missing files."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch

from f2d2.data import CIFAR10, DataError, ImageNet64, Shapes, make_dataset


def test_shapes_are_seeded_images_in_model_space():
    a = make_dataset({"name": "shapes", "size": 8, "n_train": 64, "n_test": 16, "seed": 3})
    b = Shapes(size=8, n_train=64, n_test=16, seed=3)
    assert a.train_pixels().dtype == torch.uint8 and a.train_pixels().shape == (64, 3, 8, 8)
    assert a.test_pixels().shape == (16, 3, 8, 8)
    assert torch.equal(a.train_pixels(), b.train_pixels())
    assert not torch.equal(a.train_pixels(), Shapes(size=8, n_train=64, n_test=16, seed=4).train_pixels())
    x = a.sample(32, torch.Generator().manual_seed(0))
    assert x.shape == (32, 3, 8, 8) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.1  # not constant
    assert a.dim == 192 and a.model_defaults() == {"in_channels": 3, "image_size": 8}
    sub = a.test_subset(5, seed=1)
    assert sub.shape == (5, 3, 8, 8) and torch.equal(sub, a.test_subset(5, seed=1))
    assert torch.equal(a.test_subset(100, seed=1), a.test_pixels())  # n >= size: the whole split


def test_cifar10_missing_files_error_names_path_layout_and_source(tmp_path):
    with pytest.raises(DataError) as e:
        make_dataset({"name": "cifar10", "root": str(tmp_path / "nowhere")})
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg
    assert "data_batch_1" in msg and "test_batch" in msg and "cifar-10-python.tar.gz" in msg


def test_cifar10_reads_torchvision_batches_as_nchw(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10 as TV

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = {}
    for name in CIFAR10.FILES:
        rows[name] = rng.integers(0, 256, (4, 3072), dtype=np.uint8)  # R, G, B planes of 32 x 32
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rows[name], "labels": [0, 1, 2, 3]}, f)
    # the fake files fail torchvision's md5 checks, which it also applies to its metadata file
    monkeypatch.setattr(TV, "_check_integrity", lambda self: True)
    monkeypatch.setattr(TV, "_load_meta", lambda self: None)
    data = CIFAR10(root=str(tmp_path))
    assert data.train_pixels().shape == (20, 3, 32, 32) and data.test_pixels().shape == (4, 3, 32, 32)
    torch.testing.assert_close(data.test_pixels(), torch.from_numpy(rows["test_batch"].reshape(4, 3, 32, 32)))


def test_imagenet64_reads_npz_and_refuses_pickles_unless_allowed(tmp_path):
    rng = np.random.default_rng(0)
    for name in ImageNet64.NAMES:
        arr = rng.integers(0, 256, (3, 3 * 64 * 64), dtype=np.uint8)
        with open(tmp_path / name, "wb") as f:  # the pickle release
            pickle.dump({"data": arr, "labels": [1, 2, 3]}, f)
    with pytest.raises(DataError, match="allow_pickle"):
        ImageNet64(root=str(tmp_path))
    assert ImageNet64(root=str(tmp_path), allow_pickle=True).test_pixels().shape == (3, 3, 64, 64)
    for name in ImageNet64.NAMES:
        np.savez(tmp_path / f"{name}.npz", data=rng.integers(0, 256, (2, 3 * 64 * 64), dtype=np.uint8))
    data = make_dataset({"name": "imagenet64", "root": str(tmp_path)})
    assert data.train_pixels().shape == (20, 3, 64, 64) and data.test_pixels().shape == (2, 3, 64, 64)
    with np.load(tmp_path / "val_data.npz") as f:
        torch.testing.assert_close(data.test_pixels()[1, 2], torch.from_numpy(f["data"][1, 2 * 4096 :].reshape(64, 64)))


def test_imagenet64_missing_files_error(tmp_path):
    with pytest.raises(DataError) as e:
        ImageNet64(root=str(tmp_path))
    assert str(tmp_path) in str(e.value) and "val_data.npz" in str(e.value) and "(N, 12288)" in str(e.value)


def _imagenet64_npz(root, val_data) -> None:
    """The npz release under ``root``: two good images per training batch, ``val_data`` (bytes) as val_data.npz."""
    for name in ImageNet64.NAMES[:-1]:
        np.savez(root / f"{name}.npz", data=np.zeros((2, 3 * 64 * 64), dtype=np.uint8))
    (root / "val_data.npz").write_bytes(val_data)


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize(
    "val_data, words",
    [
        (_npz_bytes(data=np.zeros((2, 3 * 64 * 64))), "'data' is float64 (2, 12288); expected uint8 (N, 12288)"),
        (_npz_bytes(data=np.zeros((2, 64, 64), dtype=np.uint8)), "'data' is uint8 (2, 64, 64); expected uint8"),
        (_npz_bytes(data=np.zeros((2, 3 * 32 * 32), dtype=np.uint8)), "'data' is uint8 (2, 3072); expected uint8"),
        (_npz_bytes(pixels=np.zeros((2, 3 * 64 * 64), dtype=np.uint8)), "no item named 'data.npy'"),
        (_npz_bytes(data=np.zeros((2, 3 * 64 * 64), dtype=np.uint8))[:5000], "a truncated or damaged file?"),
    ],
    ids=["float64", "no channels", "32 x 32", "no data array", "cut short"],
)
def test_imagenet64_refuses_a_bad_npz_naming_it_when_built(tmp_path, val_data, words):
    """Checked from the arrays' headers when the dataset is built (and so before any pipeline job), not on first use."""
    _imagenet64_npz(tmp_path, val_data)
    with pytest.raises(DataError) as e:
        ImageNet64(root=str(tmp_path))
    assert str(tmp_path / "val_data.npz") in str(e.value) and words in str(e.value) and "\n" not in str(e.value)


def test_imagenet64_refuses_pickled_floats_naming_the_file(tmp_path):
    for name in ImageNet64.NAMES:
        with open(tmp_path / name, "wb") as f:
            pickle.dump({"data": np.zeros((2, 3 * 64 * 64))}, f)
    with pytest.raises(DataError) as e:
        ImageNet64(root=str(tmp_path), allow_pickle=True).train_pixels()
    assert str(e.value).startswith(f"{tmp_path / 'train_data_batch_1'}: 'data' is float64 (2, 12288); expected uint8")


def test_cifar10_batches_that_fail_torchvisions_md5_check_are_named(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in CIFAR10.FILES:  # float pixels: not the released files, whose MD5 torchvision checks
        with open(folder / name, "wb") as f:
            pickle.dump({"data": np.zeros((4, 3072)), "labels": [0, 1, 2, 3]}, f)
    with pytest.raises(DataError) as e:
        CIFAR10(root=str(tmp_path)).train_pixels()
    msg = str(e.value)
    assert all(str(folder / name) in msg for name in CIFAR10.FILES) and "MD5" in msg and "\n" not in msg
