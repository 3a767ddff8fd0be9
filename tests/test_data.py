"""Datasets: real parsing code on small files built here in the official on-disk formats.

Expected values come from the way each file was built (a pixel written at a known place), from
direct formulas, or from a plain per-sample reference loop, never from the code under test.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from r2kd.config import DataConfig
from r2kd.data.loader import BatchIterator, crop_flip
from r2kd.data.prepared import load_prepared
from r2kd.data.write import prepare
from r2kd.data.datasets import cifar, mnist, tiny_imagenet
from r2kd.data.write import channel_stats
from r2kd.errors import DataError

torch.set_num_threads(1)

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# builders of the official formats


def py2_pickle(obj) -> bytes:
    """Pickle like the Python 2 cPickle files CIFAR ships: protocol 2, arrays via
    numpy.core.multiarray._reconstruct with their raw bytes as a (latin1) string."""

    class Py2Pickler(pickle.Pickler):
        def reducer_override(self, o):
            if isinstance(o, np.ndarray):
                state = (1, o.shape, o.dtype, False, o.tobytes().decode("latin1"))
                return (_reconstruct, (np.ndarray, (0,), "b"), state)
            return NotImplemented

    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n")


def tar_gz(path: Path, members: dict[str, bytes]) -> bytes:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path.read_bytes()


def rng_images(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def make_cifar10(root: Path, per_batch: int = 3) -> dict:
    """A cifar-10-python.tar.gz with per_batch images in each of the six batches."""
    root.mkdir(parents=True, exist_ok=True)
    members, rows, labels = {}, {}, {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        rows[name] = rng_images(i, per_batch)
        labels[name] = [(i * per_batch + j) % 10 for j in range(per_batch)]
        members[name] = py2_pickle(
            {"batch_label": f"batch {i}", "labels": labels[name], "data": rows[name],
             "filenames": [f"img_{i}_{j}.png" for j in range(per_batch)]}
        )
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    members["batches.meta"] = py2_pickle({"num_cases_per_batch": per_batch, "label_names": names, "num_vis": 3072})
    archive = tar_gz(root / "cifar-10-python.tar.gz", {f"cifar-10-batches-py/{k}": v for k, v in members.items()})
    sums = {f"cifar-10-batches-py/{k}": md5(v) for k, v in members.items()}
    sums["cifar-10-python.tar.gz"] = md5(archive)
    return {"checksums": sums, "rows": rows, "labels": labels, "members": members, "names": names}


def make_cifar100(root: Path, n_train: int = 5, n_test: int = 4) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    rows = {"train": rng_images(10, n_train), "test": rng_images(11, n_test)}
    fine = {"train": [99, 0, 42, 7, 63][:n_train], "test": [5, 99, 1, 50][:n_test]}
    members = {
        split: py2_pickle({"filenames": [f"f{j}" for j in range(len(fine[split]))], "batch_label": split,
                           "fine_labels": fine[split], "coarse_labels": [f % 20 for f in fine[split]],
                           "data": rows[split]})
        for split in ("train", "test")
    }
    names = [f"class_{k:02d}" for k in range(100)]
    members["meta"] = py2_pickle({"fine_label_names": names, "coarse_label_names": [f"super_{k}" for k in range(20)]})
    archive = tar_gz(root / "cifar-100-python.tar.gz", {f"cifar-100-python/{k}": v for k, v in members.items()})
    sums = {f"cifar-100-python/{k}": md5(v) for k, v in members.items()}
    sums["cifar-100-python.tar.gz"] = md5(archive)
    return {"checksums": sums, "rows": rows, "labels": fine, "names": names}


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_idx(root: Path, folder: str = "MNIST", compress: bool = True) -> dict:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8], dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([0, 7, 7, 2, 9], dtype=np.uint8),
    }
    sums = {}
    for name, array in arrays.items():
        data = idx_bytes(array)
        if compress:
            data = gzip.compress(data, mtime=0)
            name = name + ".gz"
        (raw / name).write_bytes(data)
        sums[f"{folder}/raw/{name}"] = md5(data)
    return {"checksums": sums, "arrays": arrays, "raw": raw}


def jpeg_bytes(array: np.ndarray, mode: str = "RGB") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def make_tiny_imagenet(root: Path) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    wnids = ["n03000000", "n01000000", "n02000000"]  # deliberately unsorted, like wnids.txt
    top = "tiny-imagenet-200/"
    members: dict[str, bytes] = {
        top + "wnids.txt": ("\n".join(wnids) + "\n").encode(),
        top + "words.txt": ("n01000000\tgoldfish, Carassius auratus\nn02000000\tpizza\n"
                            "n03000000\tteapot\nn09999999\tunused entry\n").encode(),
    }
    train = {}
    for wnid in wnids:
        for k in range(2):
            if wnid == "n02000000" and k == 1:  # one greyscale image, as in the real set
                grey = rng.integers(0, 256, (64, 64), dtype=np.uint8)
                data = jpeg_bytes(grey, mode="L")
            else:
                data = jpeg_bytes(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
            name = f"{top}train/{wnid}/images/{wnid}_{k}.JPEG"
            members[name] = data
            train[name] = data
        members[f"{top}train/{wnid}/{wnid}_boxes.txt"] = b"ignored\t0\t0\t63\t63\n"
    val_classes = ["n02000000", "n01000000", "n03000000", "n01000000"]
    lines, val = [], []
    for k, wnid in enumerate(val_classes):
        data = jpeg_bytes(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        members[f"{top}val/images/val_{k}.JPEG"] = data
        lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63")
        val.append(data)
    members[top + "val/val_annotations.txt"] = ("\n".join(lines) + "\n").encode()
    members[top + "test/images/test_0.JPEG"] = jpeg_bytes(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    path = root / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return {"checksums": {"tiny-imagenet-200.zip": md5(path.read_bytes())}, "train": train, "val": val,
            "val_classes": val_classes, "path": path}


def decode(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).transpose(2, 0, 1)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --------------------------------------------------------------------------------------------
# config


def test_config_defaults_and_errors_name_the_key():
    cfg = DataConfig()
    assert (cfg.name, cfg.root, cfg.download, cfg.test_fraction, cfg.split_seed) == ("digits", "data/raw", False, 0.3, 0)
    for kwargs, key in [({"test_fraction": 1.0}, "test_fraction"), ({"name": "svhn"}, "name"),
                        ({"unknown": 1}, "unknown"), ({"train_limit": 0}, "train_limit"),
                        ({"name": "imagefolder"}, "image_size"), ({"image_size": 32}, "image_size")]:
        with pytest.raises(ValidationError) as info:
            DataConfig(**kwargs)
        assert info.value.errors()[0]["loc"] == (key,)
    assert DataConfig(name="imagefolder", image_size=16).image_size == 16


# --------------------------------------------------------------------------------------------
# digits


def test_digits_split_is_stratified_deterministic_and_complete(tmp_path):
    from sklearn.datasets import load_digits

    meta = prepare(DataConfig(name="digits", split_seed=7), tmp_path / "a")
    data = load_prepared(tmp_path / "a")
    assert meta["counts"]["train"] + meta["counts"]["test"] == 1797
    assert (meta["channels"], meta["image_size"], meta["crop_padding"], meta["hflip"]) == (1, 8, 1, False)

    # Every source image appears exactly once across the splits, converted by round(v * 255 / 16).
    bunch = load_digits()
    v = bunch.images.astype(np.int64)
    expected = (v * 255 * 2 + 16) // 32  # floor(255 v / 16 + 1/2), in integers
    assert expected[bunch.images == 8].min() == 128 and expected[bunch.images == 16].min() == 255
    src = sorted(bytes(img.astype(np.uint8).tobytes()) + bytes([int(t)]) for img, t in zip(expected, bunch.target))
    got_imgs = torch.cat([data.train_images, data.test_images]).numpy()
    got_lbls = torch.cat([data.train_labels, data.test_labels]).numpy()
    got = sorted(bytes(img[0].tobytes()) + bytes([int(t)]) for img, t in zip(got_imgs, got_lbls))
    assert got == src

    # Stratified: each class sends round(0.3 * its count) images (within 1) to test.
    class_total = np.bincount(bunch.target, minlength=10)
    test_count = np.bincount(data.test_labels.numpy(), minlength=10)
    assert np.all(np.abs(test_count - 0.3 * class_total) <= 1)
    assert meta["class_counts"]["test"] == test_count.tolist()

    # Same seed -> same files; another seed -> another split.
    again = prepare(DataConfig(name="digits", split_seed=7), tmp_path / "b")
    other = prepare(DataConfig(name="digits", split_seed=8), tmp_path / "c")
    assert again["content_sha256"] == meta["content_sha256"]
    assert other["content_sha256"]["test"] != meta["content_sha256"]["test"]

    # Normalisation statistics are those of the train split (float64 direct formula).
    train = data.train_images.double() / 255
    assert meta["mean"][0] == pytest.approx(train.mean().item(), abs=1e-12)
    assert meta["std"][0] == pytest.approx(train.std(unbiased=False).item(), abs=1e-12)


@pytest.mark.parametrize("labels", [
    "digits",
    np.repeat(np.arange(7), [2, 3, 5, 8, 13, 21, 40]),  # imbalanced: remainders tie and need random picks
    np.random.default_rng(3).integers(0, 4, size=101),
], ids=["digits", "imbalanced", "random"])
def test_digits_split_is_scikit_learns(labels):
    """The split without scikit-learn's import gives scikit-learn's indices, order included."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from r2kd.data.datasets.digits import split_indices

    if isinstance(labels, str):
        labels = load_digits().target
    for fraction in (0.1, 0.25, 0.3, 0.5, 0.77):
        for seed in range(12):
            expected = train_test_split(np.arange(len(labels)), test_size=fraction, random_state=seed,
                                        shuffle=True, stratify=labels)
            got = split_indices(labels, fraction, seed)
            assert [a.tolist() for a in got] == [a.tolist() for a in expected], (fraction, seed)


def test_digits_table_is_what_scikit_learn_loads():
    from sklearn.datasets import load_digits

    from r2kd.data.datasets.digits import bundled_table, load_table

    images, labels = load_table(bundled_table())
    bunch = load_digits()
    assert np.array_equal(images, bunch.images) and np.array_equal(labels, bunch.target)


def test_train_limit_keeps_first_per_class(tmp_path):
    prepare(DataConfig(), tmp_path / "f")
    full = load_prepared(tmp_path / "f")
    meta = prepare(DataConfig(train_limit=5, test_limit=2), tmp_path / "l")
    data = load_prepared(tmp_path / "l")
    assert meta["class_counts"] == {"train": [5] * 10, "test": [2] * 10}
    for cls in range(10):
        first = full.train_images[full.train_labels == cls][:5]
        assert torch.equal(data.train_images[data.train_labels == cls], first)


# --------------------------------------------------------------------------------------------
# CIFAR


def test_cifar10_roundtrip(tmp_path):
    root = tmp_path / "raw"
    built = make_cifar10(root)
    cfg = DataConfig(name="cifar10", root=str(root))
    meta = prepare(cfg, tmp_path / "out", checksums=built["checksums"])
    data = load_prepared(tmp_path / "out")
    assert data.train_images.shape == (15, 3, 32, 32) and data.test_images.shape == (3, 3, 32, 32)
    # Image 1 of data_batch_2 is train image 3 + 1 = 4; its pixel (channel 1, y 5, x 7) is stored at
    # 1024 * 1 + 32 * 5 + 7 of its row.
    assert data.train_images[4, 1, 5, 7].item() == built["rows"]["data_batch_2"][1, 1024 + 32 * 5 + 7]
    assert data.test_images[2, 2, 31, 0].item() == built["rows"]["test_batch"][2, 2048 + 32 * 31]
    expected_train = np.concatenate([built["rows"][f"data_batch_{k}"] for k in range(1, 6)])
    assert np.array_equal(data.train_images.numpy().reshape(15, -1), expected_train)
    assert data.train_labels.tolist() == sum((built["labels"][f"data_batch_{k}"] for k in range(1, 6)), [])
    assert data.test_labels.tolist() == built["labels"]["test_batch"]
    assert meta["class_names"] == built["names"] and meta["num_classes"] == 10
    assert meta["mean"] == [0.4914, 0.4822, 0.4465] and meta["std"] == [0.2470, 0.2435, 0.2616]
    assert (meta["crop_padding"], meta["hflip"]) == (4, True)
    assert meta["sources"]["cifar-10-batches-py/test_batch"] == sha256(built["members"]["test_batch"])
    assert len(meta["sources"]) == 7
    assert meta["verified"]["by"] == "official" and len(meta["verified"]["files"]) == 7
    # Read from the archive in memory: nothing is written under data.root (it may be read-only).
    assert leftovers(root) == ["cifar-10-python.tar.gz"]
    # An extracted folder (torchvision's layout) is read instead, with the same result.
    (root / "cifar-10-batches-py").mkdir()
    for name, data in built["members"].items():
        (root / "cifar-10-batches-py" / name).write_bytes(data)
    (root / "cifar-10-python.tar.gz").unlink()
    again = prepare(cfg, tmp_path / "out2", checksums=built["checksums"])
    assert again == meta
    (root / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4 is missing, so the extracted folder .*cifar-10-batches-py"):
        prepare(cfg, tmp_path / "out3", checksums=built["checksums"])


def test_cifar100_roundtrip_fine_labels(tmp_path):
    root = tmp_path / "raw"
    built = make_cifar100(root)
    meta = prepare(DataConfig(name="cifar100", root=str(root)), tmp_path / "out", checksums=built["checksums"])
    data = load_prepared(tmp_path / "out")
    assert data.train_labels.tolist() == [99, 0, 42, 7, 63]
    assert data.test_labels.tolist() == [5, 99, 1, 50]
    assert data.train_images[2, 0, 0, 1].item() == built["rows"]["train"][2, 1]
    assert data.test_images[3, 2, 10, 20].item() == built["rows"]["test"][3, 2048 + 320 + 20]
    assert meta["num_classes"] == 100 and meta["class_names"][99] == "class_99"
    assert meta["mean"] == [0.5071, 0.4867, 0.4408] and meta["std"] == [0.2675, 0.2565, 0.2761]


def test_cifar_published_checksums_match_torchvision():
    from torchvision.datasets import CIFAR10, CIFAR100

    for layout, table, tv in ((cifar.CIFAR10, cifar.CIFAR10_MD5, CIFAR10), (cifar.CIFAR100, cifar.CIFAR100_MD5, CIFAR100)):
        expected = {tv.filename: tv.tgz_md5, f"{tv.base_folder}/{tv.meta['filename']}": tv.meta["md5"]}
        expected.update({f"{tv.base_folder}/{name}": s for name, s in tv.train_list + tv.test_list})
        assert table == expected
        assert (layout.url, layout.archive, layout.folder) == (tv.url, tv.filename, tv.base_folder)


def test_cifar_wrong_md5_refused_before_extracting(tmp_path):
    root = tmp_path / "raw"
    make_cifar10(root)
    with pytest.raises(DataError, match="cifar-10-python.tar.gz.*MD5"):
        prepare(DataConfig(name="cifar10", root=str(root)), tmp_path / "out")  # published MD5s
    assert leftovers(root) == ["cifar-10-python.tar.gz"]
    assert leftovers(tmp_path / "out") == []


def test_cifar_repacked_archive_with_identical_members_is_accepted(tmp_path):
    root = tmp_path / "raw"
    built = make_cifar10(root)
    archive = root / "cifar-10-python.tar.gz"
    members = {f"cifar-10-batches-py/{k}": v for k, v in reversed(list(built["members"].items()))}
    tar_gz(archive, members)  # another order, another gzip header: another archive MD5
    assert md5(archive.read_bytes()) != built["checksums"]["cifar-10-python.tar.gz"]
    prepare(DataConfig(name="cifar10", root=str(root)), tmp_path / "out", checksums=built["checksums"])
    assert load_prepared(tmp_path / "out").train_images.shape[0] == 15

    other = tmp_path / "other"
    built = make_cifar10(other)
    tampered = dict(members, **{"cifar-10-batches-py/test_batch": built["members"]["data_batch_1"]})
    tar_gz(other / "cifar-10-python.tar.gz", tampered)
    with pytest.raises(DataError) as info:
        prepare(DataConfig(name="cifar10", root=str(other)), tmp_path / "out2", checksums=built["checksums"])
    message = str(info.value)
    assert "its member cifar-10-batches-py/test_batch has MD5" in message and "is corrupt" not in message
    assert f"at {(other / 'cifar-10-python.tar.gz').resolve()}" in message
    assert f"cifar-10-python.tar.gz: {sha256((other / 'cifar-10-python.tar.gz').read_bytes())}" in message
    assert built["checksums"]["cifar-10-python.tar.gz"] in message
    assert leftovers(other) == ["cifar-10-python.tar.gz"]  # nothing installed


def _assert_names_the_link_only(message: str, link: Path, target: Path) -> None:
    """The refusal names the configured path (the link) and never sends the user to its target."""
    assert str(link) in message, message
    assert str(target) not in message and target.name not in message, message
    assert "is a symbolic link: remove the link itself" in message and "do not overwrite or delete" in message
    assert "deleting this one" not in message


def test_symlinked_dataset_file_refusal_names_the_link_not_its_target(tmp_path):
    """A dataset file may be a link to anything (here a stand-in for /etc/shadow): the advice to
    replace or delete the bad file must name the link, never the file it points to."""
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    root = tmp_path / "raw"
    make_cifar10(root)
    target = elsewhere / "shadow"
    (root / "cifar-10-python.tar.gz").rename(target)
    link = root / "cifar-10-python.tar.gz"
    link.symlink_to(target)
    before = target.read_bytes()
    with pytest.raises(DataError) as info:  # the published MD5s: this archive is not the official one
        prepare(DataConfig(name="cifar10", root=str(root)), tmp_path / "out")
    _assert_names_the_link_only(str(info.value), link, target)
    assert target.read_bytes() == before and link.is_symlink()

    built = make_idx(tmp_path / "idx", compress=True)
    sums = official_idx_sums(built)
    name = "t10k-images-idx3-ubyte.gz"
    target = elsewhere / "passwd"
    (built["raw"] / name).rename(target)
    target.write_bytes(gzip.compress(idx_bytes(built["arrays"]["t10k-labels-idx1-ubyte"][:, None, None]), mtime=0))
    link = built["raw"] / name
    link.symlink_to(target)
    with pytest.raises(DataError) as info:
        prepare(DataConfig(name="mnist", root=str(tmp_path / "idx")), tmp_path / "out2", checksums=sums)
    _assert_names_the_link_only(str(info.value), link, target)


def test_cifar_truncated_archive_leaves_nothing(tmp_path):
    root = tmp_path / "raw"
    built = make_cifar10(root)
    archive = root / "cifar-10-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    sums = dict(built["checksums"], **{"cifar-10-python.tar.gz": md5(archive.read_bytes())})
    with pytest.raises(DataError, match="cifar-10-python.tar.gz is corrupt or truncated"):
        prepare(DataConfig(name="cifar10", root=str(root)), tmp_path / "out", checksums=sums)
    assert leftovers(root) == ["cifar-10-python.tar.gz"]  # nothing written under data.root
    assert not (tmp_path / "out" / "train.pt").exists()


def test_cifar_member_not_matching_published_md5_is_not_installed(tmp_path):
    root = tmp_path / "raw"
    built = make_cifar10(root)
    sums = dict(built["checksums"], **{"cifar-10-batches-py/data_batch_3": "0" * 32})
    with pytest.raises(DataError, match="data_batch_3.*MD5"):
        prepare(DataConfig(name="cifar10", root=str(root)), tmp_path / "out", checksums=sums)
    assert leftovers(root) == ["cifar-10-python.tar.gz"]


def test_cifar_pickle_with_foreign_global_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    root = tmp_path / "raw"
    built = make_cifar10(root)
    evil = pickle.dumps({"data": Evil(), "labels": []}, protocol=2)
    members = dict(built["members"], data_batch_1=evil)
    archive = tar_gz(root / "cifar-10-python.tar.gz", {f"cifar-10-batches-py/{k}": v for k, v in members.items()})
    sums = {f"cifar-10-batches-py/{k}": md5(v) for k, v in members.items()}
    sums["cifar-10-python.tar.gz"] = md5(archive)
    with pytest.raises(DataError, match="data_batch_1 is not a valid CIFAR.*refusing to load global (io|builtins).open"):
        prepare(DataConfig(name="cifar10", root=str(root)), tmp_path / "out", checksums=sums)
    assert not marker.exists()
    assert not (tmp_path / "out" / "train.pt").exists()
    pickle.loads(evil)["data"].close()  # what a plain pickle.load (torchvision's) would have done
    assert marker.exists()


def test_missing_archive_offline_names_file_and_directory(tmp_path, monkeypatch):
    import r2kd.data.sources as sources

    def no_network(*args, **kwargs):
        raise AssertionError("the network was reached with download: false")

    monkeypatch.setattr(sources, "download_file", no_network)
    root = tmp_path / "raw"
    cases = [("cifar10", "cifar-10-python.tar.gz", root), ("cifar100", "cifar-100-python.tar.gz", root),
             ("tiny_imagenet", "tiny-imagenet-200.zip", root), ("mnist", "train-images-idx3-ubyte", root / "MNIST" / "raw"),
             ("fashion_mnist", "train-images-idx3-ubyte", root / "FashionMNIST" / "raw")]
    for name, filename, directory in cases:
        with pytest.raises(DataError) as info:
            prepare(DataConfig(name=name, root=str(root)), tmp_path / "out")
        message = str(info.value)
        assert filename in message and str(directory.resolve()) in message and "data.download: true" in message
    assert leftovers(tmp_path / "out") == []


def test_download_true_fetches_the_archive_with_its_md5(tmp_path, monkeypatch):
    import shutil

    import r2kd.data.sources as sources

    built = make_cifar10(tmp_path / "mirror")
    calls = []

    def fake_download(url, directory, filename, md5_sum):
        calls.append((url, filename, md5_sum))
        shutil.copy(tmp_path / "mirror" / filename, Path(directory) / filename)

    monkeypatch.setattr(sources, "download_file", fake_download)
    (tmp_path / "raw").mkdir()
    prepare(DataConfig(name="cifar10", root=str(tmp_path / "raw"), download=True), tmp_path / "out",
            checksums=built["checksums"])
    assert calls == [(cifar.CIFAR10.url, "cifar-10-python.tar.gz", built["checksums"]["cifar-10-python.tar.gz"])]
    assert load_prepared(tmp_path / "out").train_images.shape[0] == 15


# --------------------------------------------------------------------------------------------
# MNIST family (IDX)


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_idx_roundtrip(tmp_path, compress):
    built = make_idx(tmp_path / "raw", compress=compress)
    meta = prepare(DataConfig(name="mnist", root=str(tmp_path / "raw")), tmp_path / "out",
                   checksums=built["checksums"])
    data = load_prepared(tmp_path / "out")
    arrays = built["arrays"]
    assert data.train_images.shape == (12, 1, 28, 28) and data.test_images.shape == (5, 1, 28, 28)
    assert data.train_images[3, 0, 10, 20].item() == arrays["train-images-idx3-ubyte"][3, 10, 20]
    assert np.array_equal(data.test_images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert data.train_labels.tolist() == [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]
    assert data.test_labels.tolist() == [0, 7, 7, 2, 9]
    assert (meta["channels"], meta["image_size"], meta["hflip"]) == (1, 28, False)
    suffix = ".gz" if compress else ""
    assert set(meta["sources"]) == {f"MNIST/raw/{n}{suffix}" for n in mnist.FILES}


def test_kmnist_and_fashion_use_torchvision_folders_and_sums(tmp_path):
    from torchvision.datasets import MNIST, KMNIST, FashionMNIST

    for layout, table, tv in ((mnist.MNIST, mnist.MNIST_MD5, MNIST), (mnist.KMNIST, mnist.KMNIST_MD5, KMNIST),
                              (mnist.FASHION_MNIST, mnist.FASHION_MNIST_MD5, FashionMNIST)):
        assert layout.folder == tv.__name__ and list(layout.mirrors) == list(tv.mirrors)
        # the .gz sums are torchvision's; the others are of the decompressed contents (sourced in mnist.py)
        assert {k: v for k, v in table.items() if k.endswith(".gz")} == {f"{tv.__name__}/raw/{f}": s for f, s in tv.resources}
        assert {k + ".gz" for k in table if not k.endswith(".gz")} <= set(table)
    assert len(mnist.MNIST_MD5) == len(mnist.FASHION_MNIST_MD5) == 8 and len(mnist.KMNIST_MD5) == 4
    built = make_idx(tmp_path / "raw", folder="KMNIST")
    meta = prepare(DataConfig(name="kmnist", root=str(tmp_path / "raw")), tmp_path / "out", checksums=built["checksums"])
    assert meta["class_names"][0] == "o" and meta["counts"] == {"train": 12, "test": 5}


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[:-7], "truncated"),
        (lambda b: b + b"\x00", "trailing bytes"),
        (lambda b: b"\x01" + b[1:], "magic"),
        (lambda b: b[:2] + b"\x09" + b[3:], "type code"),
        (lambda b: b[:3] + b"\x02" + b[4:], "dimensions"),
    ],
)
def test_bad_idx_file_raises_and_writes_nothing(tmp_path, damage, message):
    built = make_idx(tmp_path / "raw", compress=False)
    path = built["raw"] / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=f"train-images-idx3-ubyte.*{message}"):
        prepare(DataConfig(name="mnist", root=str(tmp_path / "raw")), tmp_path / "out")
    assert leftovers(tmp_path / "out") == []


def test_bad_gz_md5_and_truncated_gz(tmp_path):
    built = make_idx(tmp_path / "raw", compress=True)
    cfg = DataConfig(name="mnist", root=str(tmp_path / "raw"))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: its decompressed contents have MD5"):
        prepare(cfg, tmp_path / "out")  # the published MD5s do not match the test files
    path = built["raw"] / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-10])
    sums = dict(built["checksums"], **{"MNIST/raw/t10k-labels-idx1-ubyte.gz": md5(path.read_bytes())})
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz.*(gzip|truncated)"):
        prepare(cfg, tmp_path / "out", checksums=sums)
    assert leftovers(tmp_path / "out") == []


def official_idx_sums(built: dict, folder: str = "MNIST") -> dict:
    """gz sums of the files as built (the 'official' .gz) plus the MD5s of their decompressed contents."""
    sums = {f"{folder}/raw/{n}": md5(idx_bytes(a)) for n, a in built["arrays"].items()}
    sums.update({f"{folder}/raw/{n}.gz": md5(gzip.compress(idx_bytes(a), mtime=0)) for n, a in built["arrays"].items()})
    return sums


def test_regzipped_idx_files_are_verified_by_their_decompressed_contents(tmp_path):
    built = make_idx(tmp_path / "raw", compress=True)
    sums = official_idx_sums(built)
    for name, array in built["arrays"].items():  # a mirror that re-gzips: other .gz bytes, same contents
        (built["raw"] / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array), compresslevel=1, mtime=12345))
        assert md5((built["raw"] / f"{name}.gz").read_bytes()) != sums[f"MNIST/raw/{name}.gz"]
    meta = prepare(DataConfig(name="mnist", root=str(tmp_path / "raw")), tmp_path / "out", checksums=sums)
    data = load_prepared(tmp_path / "out")
    assert np.array_equal(data.train_images[:, 0].numpy(), built["arrays"]["train-images-idx3-ubyte"])
    assert set(meta["sources"]) == {f"MNIST/raw/{n}.gz" for n in mnist.FILES}


def test_plain_idx_files_are_checked_against_the_uncompressed_sums(tmp_path):
    built = make_idx(tmp_path / "raw", compress=False)
    sums = official_idx_sums(built)
    prepare(DataConfig(name="mnist", root=str(tmp_path / "raw")), tmp_path / "ok", checksums=sums)
    images = built["arrays"]["t10k-images-idx3-ubyte"].copy()
    images[0, 0, 0] ^= 1  # still a well-formed IDX file, but not the official one
    path = built["raw"] / "t10k-images-idx3-ubyte"
    path.write_bytes(idx_bytes(images))
    with pytest.raises(DataError) as info:
        prepare(DataConfig(name="mnist", root=str(tmp_path / "raw")), tmp_path / "out", checksums=sums)
    message = str(info.value)
    assert f"{path}: it has MD5 {md5(idx_bytes(images))}" in message and "corrupt" not in message
    assert sums["MNIST/raw/t10k-images-idx3-ubyte"] in message and sums["MNIST/raw/t10k-images-idx3-ubyte.gz"] in message
    assert f"place the official t10k-images-idx3-ubyte.gz (MD5 {sums['MNIST/raw/t10k-images-idx3-ubyte.gz']}) at " \
           f"{path.parent.resolve()}/t10k-images-idx3-ubyte.gz" in message
    assert f"MNIST/raw/t10k-images-idx3-ubyte: {sha256(idx_bytes(images))}" in message  # the pin to add
    assert "data.download" not in message and "download it again" not in message
    assert leftovers(tmp_path / "out") == []


def test_idx_refusals_name_the_pin_when_no_uncompressed_sum_is_published(tmp_path):
    """KMNIST: only the .gz MD5s are published; a plain copy cannot be checked, and the refusal says
    so (not "corrupt") and gives the exact data.checksums line, with the file's SHA-256."""
    built = make_idx(tmp_path / "raw", folder="KMNIST", compress=False)
    assert all(key.endswith(".gz") for key in mnist.KMNIST_MD5)
    with pytest.raises(DataError) as info:
        prepare(DataConfig(name="kmnist", root=str(tmp_path / "raw")), tmp_path / "out")
    message = str(info.value)
    official = mnist.KMNIST_MD5["KMNIST/raw/train-images-idx3-ubyte.gz"]
    assert f"place the official train-images-idx3-ubyte.gz (MD5 {official}) at " \
           f"{built['raw'].resolve()}/train-images-idx3-ubyte.gz" in message
    assert "cannot be checked against the official release" in message and "corrupt" not in message
    sha = sha256(idx_bytes(built["arrays"]["train-images-idx3-ubyte"]))
    assert f"data:\n    checksums:\n      KMNIST/raw/train-images-idx3-ubyte: {sha}" in message
    assert "data.download" not in message


# --------------------------------------------------------------------------------------------
# Tiny-ImageNet


def test_tiny_imagenet_roundtrip(tmp_path):
    built = make_tiny_imagenet(tmp_path / "raw")
    meta = prepare(DataConfig(name="tiny_imagenet", root=str(tmp_path / "raw")), tmp_path / "out",
                   checksums=built["checksums"])
    data = load_prepared(tmp_path / "out")
    assert meta["class_ids"] == ["n01000000", "n02000000", "n03000000"]  # sorted wnids
    assert meta["class_names"] == ["goldfish, Carassius auratus", "pizza", "teapot"]
    assert data.train_labels.tolist() == [0, 0, 1, 1, 2, 2]
    top = "tiny-imagenet-200/train/"
    order = [f"{top}{w}/images/{w}_{k}.JPEG" for w in meta["class_ids"] for k in range(2)]
    for i, member in enumerate(order):
        assert np.array_equal(data.train_images[i].numpy(), decode(built["train"][member])), member
    grey = data.train_images[3]  # n02000000_1 was greyscale: three equal channels
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    assert data.test_labels.tolist() == [1, 0, 2, 0]  # from val_annotations.txt
    for i, raw in enumerate(built["val"]):
        assert np.array_equal(data.test_images[i].numpy(), decode(raw))
    assert (meta["image_size"], meta["crop_padding"], meta["hflip"]) == (64, 8, True)
    assert meta["sources"] == {"tiny-imagenet-200.zip": sha256(built["path"].read_bytes())}
    # The reference normalises Tiny-ImageNet with the ImageNet constants, not the train split's own
    # statistics (until issue 10 this test asserted the train-split statistics).
    assert meta["mean"] == [0.485, 0.456, 0.406]
    assert meta["std"] == [0.229, 0.224, 0.225]
    assert meta["stats_from"] == "imagenet"
    train = data.train_images.double() / 255
    assert meta["mean"] != pytest.approx(train.mean(dim=(0, 2, 3)).tolist(), abs=1e-3)
    assert data.meta["mean"] == meta["mean"] and data.meta["std"] == meta["std"]  # load_prepared accepts it


def test_tiny_imagenet_batches_use_the_imagenet_constants(tmp_path):
    from r2kd.data.loader import BatchIterator

    built = make_tiny_imagenet(tmp_path / "raw")
    prepare(DataConfig(name="tiny_imagenet", root=str(tmp_path / "raw")), tmp_path / "out", checksums=built["checksums"])
    data = load_prepared(tmp_path / "out")
    x, _ = next(iter(BatchIterator(data.test_images, data.test_labels, batch_size=4, mean=data.meta["mean"],
                                   std=data.meta["std"], train=False, generator=None)))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(x, (data.test_images.float() / 255 - mean) / std, atol=1e-5)


def test_tiny_imagenet_corrupt_zip(tmp_path):
    built = make_tiny_imagenet(tmp_path / "raw")
    cfg = DataConfig(name="tiny_imagenet", root=str(tmp_path / "raw"))
    with pytest.raises(DataError, match="tiny-imagenet-200.zip: MD5 .*; the official tiny-imagenet-200.zip has 9052"):
        prepare(cfg, tmp_path / "out")
    path = built["path"]
    path.write_bytes(path.read_bytes()[:-200])  # cuts the central directory
    with pytest.raises(DataError, match="tiny-imagenet-200.zip"):
        prepare(cfg, tmp_path / "out", checksums={"tiny-imagenet-200.zip": md5(path.read_bytes())})
    assert leftovers(tmp_path / "out") == []
    assert tiny_imagenet.TINY_IMAGENET_MD5 == {"tiny-imagenet-200.zip": "90528d7ca1a48142e341f4ef8d21d0de"}


# --------------------------------------------------------------------------------------------
# imagefolder


def write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_imagefolder_roundtrip_and_resize(tmp_path):
    root = tmp_path / "tree"
    rng = np.random.default_rng(9)
    exact = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    write_png(root / "train" / "zebra" / "b.png", exact)
    write_png(root / "train" / "zebra" / "a.PNG", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    write_png(root / "train" / "ant" / "big.png", np.full((40, 24, 3), 200, dtype=np.uint8))  # resized
    write_png(root / "train" / "ant" / "grey.png", np.full((16, 16), 77, dtype=np.uint8))
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    write_png(root / "test" / "zebra" / "t.png", exact)
    meta = prepare(DataConfig(name="imagefolder", root=str(root), image_size=16), tmp_path / "out")
    data = load_prepared(tmp_path / "out")
    assert meta["class_names"] == ["ant", "zebra"] and meta["test_dir"] == "test"
    assert data.train_labels.tolist() == [0, 0, 1, 1]  # ant/big, ant/grey, zebra/a.PNG, zebra/b
    assert torch.all(data.train_images[0] == 200)  # a flat image stays flat when resized
    assert torch.all(data.train_images[1] == 77)  # grey -> RGB
    assert np.array_equal(data.train_images[3].numpy(), exact.transpose(2, 0, 1))
    assert np.array_equal(data.test_images[0].numpy(), exact.transpose(2, 0, 1)) and data.test_labels.tolist() == [1]
    assert len(meta["sources"]) == 5 and "train/ant/big.png" in meta["sources"]

    write_png(root / "val" / "yak" / "y.png", exact)  # val/ wins over test/, and has an unknown class
    with pytest.raises(DataError, match="yak"):
        prepare(DataConfig(name="imagefolder", root=str(root), image_size=16), tmp_path / "out2")
    with pytest.raises(DataError, match="train"):
        prepare(DataConfig(name="imagefolder", root=str(tmp_path / "none"), image_size=16), tmp_path / "out3")


# --------------------------------------------------------------------------------------------
# load_prepared


def test_load_prepared_refuses_missing_corrupt_and_mixed_files(tmp_path):
    with pytest.raises(DataError, match="meta.json does not exist"):
        load_prepared(tmp_path / "nothing")
    prepare(DataConfig(split_seed=1), tmp_path / "a")
    prepare(DataConfig(split_seed=2), tmp_path / "b")
    (tmp_path / "a" / "test.pt").write_bytes((tmp_path / "b" / "test.pt").read_bytes())
    with pytest.raises(DataError, match="test.pt does not match meta.json"):
        load_prepared(tmp_path / "a")
    (tmp_path / "b" / "train.pt").write_bytes(b"garbage")
    with pytest.raises(DataError, match="train.pt .*rerun the prepare stage"):
        load_prepared(tmp_path / "b")
    (tmp_path / "b" / "train.pt").unlink()
    with pytest.raises(DataError, match="train.pt does not exist"):
        load_prepared(tmp_path / "b")
    (tmp_path / "b" / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match="meta.json"):
        load_prepared(tmp_path / "b")
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["name"] == "digits"


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda m: m.update(std=[0.0]), "std"),
        (lambda m: m.update(std=[-0.2]), "std"),
        (lambda m: m.pop("mean"), "mean"),
        (lambda m: m.update(mean=[0.1, 0.2, 0.3]), "mean"),  # three channels for one-channel images
        (lambda m: m.update(channels=3), "mean"),  # the tensors' channels no longer match mean/std
        (lambda m: m.update(num_classes="ten"), "num_classes"),
        (lambda m: m.update(hflip="yes"), "hflip"),
        (lambda m: m.update(crop_padding=-1), "crop_padding"),
        (lambda m: m.update(class_names=["a"]), "class_names"),
        (lambda m: m.update(counts={"train": 5}), "counts"),
        (lambda m: m.update(content_sha256={"train": "x", "test": "y"}), "content_sha256"),
        (lambda m: m.update(format_version=2), "format_version"),
    ],
)
def test_hand_edited_meta_json_is_refused_naming_the_file_and_key(tmp_path, edit, key):
    prepare(DataConfig(train_limit=3, test_limit=1), tmp_path)
    meta_path = tmp_path / "meta.json"
    meta = json.loads(meta_path.read_text())
    edit(meta)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError) as info:
        load_prepared(tmp_path)
    message = str(info.value)
    assert str(meta_path) in message and repr(key) in message and "rerun the prepare stage" in message


def test_channel_stats_match_float64_formula():
    x = torch.randint(0, 256, (7, 3, 5, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = channel_stats(x)
    ref = x.double() / 255
    assert mean == pytest.approx(ref.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert std == pytest.approx(ref.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-12)


# --------------------------------------------------------------------------------------------
# BatchIterator


def toy(n=10, c=3, h=6, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g), torch.arange(n)


MEAN, STD = [0.2, 0.5, 0.7], [0.3, 0.25, 0.1]


def denorm_u8(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, -1, 1, 1)
    return torch.round((x.double() * std + mean) * 255).to(torch.uint8)


def batches(images, labels, seed, **kw):
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    kw.setdefault("batch_size", 4)
    it = BatchIterator(images, labels, mean=MEAN, std=STD, generator=g, **kw)
    return [(x.clone(), y.clone()) for x, y in it], it


def test_eval_order_and_normalisation():
    images, labels = toy()
    out, it = batches(images, labels, None, train=False)
    assert len(it) == 3 and [y.tolist() for _, y in out] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    x = torch.cat([b for b, _ in out])
    assert x.dtype == torch.float32
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, -1, 1, 1)
    ref = (images.double() / 255 - mean) / std
    assert torch.allclose(x.double(), ref, atol=1e-5, rtol=0)
    _, it = batches(images, labels, None, train=False, drop_last=True)
    assert len(it) == 2 and len(list(it)) == 2


def test_same_generator_state_same_batches_and_epochs_differ():
    images, labels = toy(n=20)
    kw = dict(train=True, crop_padding=2, hflip=True)
    a, it = batches(images, labels, 3, **kw)
    b, _ = batches(images, labels, 3, **kw)
    c, _ = batches(images, labels, 4, **kw)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not all(torch.equal(ya, yc) for (_, ya), (_, yc) in zip(a, c))
    second = [y for _, y in it]  # a second epoch draws a new permutation
    assert not all(torch.equal(y1, y2) for (_, y1), y2 in zip(a, second))
    assert sorted(torch.cat(second).tolist()) == list(range(20))


def test_padding_zero_hflip_gives_input_or_mirror():
    images, labels = toy(n=40)
    out, _ = batches(images, labels, 0, train=True, crop_padding=0, hflip=True)
    flipped = 0
    for x, y in out:
        got = denorm_u8(x)
        src = images[y]
        for g, s in zip(got, src):
            same, mirror = torch.equal(g, s), torch.equal(g, s.flip(-1))
            assert same or mirror
            flipped += int(mirror and not same)
    assert 5 <= flipped <= 35  # p = 0.5 over 40 samples


def test_crop_matches_per_sample_reference():
    images, labels = toy(n=9, h=6, w=5)
    pad = 2
    out, _ = batches(images, labels, 11, train=True, crop_padding=pad, hflip=True, batch_size=4)
    # The documented draw order: permutation, then (dy, dx) per epoch position, then flips.
    g = torch.Generator().manual_seed(11)
    perm = torch.randperm(9, generator=g)
    offsets = torch.randint(0, 2 * pad + 1, (9, 2), generator=g)
    flips = torch.rand(9, generator=g) < 0.5
    got = denorm_u8(torch.cat([x for x, _ in out]))
    assert torch.cat([y for _, y in out]).tolist() == perm.tolist()
    for k in range(9):
        src = np.pad(images[perm[k]].numpy(), ((0, 0), (pad, pad), (pad, pad)))
        dy, dx = offsets[k].tolist()
        ref = src[:, dy : dy + 6, dx : dx + 5]
        if flips[k]:
            ref = ref[:, :, ::-1]
        assert np.array_equal(got[k].numpy(), ref), k
    # Some crops reach into the zero border: the padding is black in pixel space.
    assert (got == 0).any()


def test_crop_flip_on_float_and_identity():
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).view(2, 1, 3, 3)
    same = crop_flip(x, torch.tensor([[1, 1], [1, 1]]), torch.tensor([False, True]), 1)
    assert torch.equal(same[0], x[0]) and torch.equal(same[1], x[1].flip(-1))


def test_iterator_rejects_bad_inputs():
    images, labels = toy()
    with pytest.raises(ValueError, match="uint8"):
        BatchIterator(images.float(), labels, batch_size=2, mean=MEAN, std=STD, train=False, generator=None)
    with pytest.raises(ValueError, match="per channel"):
        BatchIterator(images, labels, batch_size=2, mean=[0.5], std=[0.5], train=False, generator=None)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_batches_on_cuda_as_on_cpu():
    images, labels = toy(n=30)
    kw = dict(train=True, crop_padding=2, hflip=True)
    cpu, _ = batches(images, labels, 5, **kw)
    gpu, _ = batches(images, labels, 5, device=torch.device("cuda"), **kw)
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert xg.device.type == "cuda" and torch.equal(yc, yg.cpu())
        assert torch.allclose(xc, xg.cpu(), atol=1e-6)


# --------------------------------------------------------------------------------------------
# your own copy of an official dataset: verified by content, or pinned (data.checksums)


def snapshot(root: Path) -> dict:
    """Every path under root with its mode, size, mtime and content hash."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns,
                                            sha256(path.read_bytes()) if path.is_file() else None)
    return out


@pytest.mark.parametrize("form", ["regzipped", "decompressed"])
def test_own_copy_of_mnist_verifies_by_content_and_meta_says_so(tmp_path, form):
    """A distribution re-compresses the official files (other .gz bytes, same contents) or ships them
    unpacked: both pass by the MD5 of their contents, and meta.json records that."""
    built = make_idx(tmp_path / "raw", compress=True)
    sums = official_idx_sums(built)
    for name, array in built["arrays"].items():
        (built["raw"] / f"{name}.gz").unlink()
        if form == "regzipped":
            (built["raw"] / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array), compresslevel=9, mtime=777))
        else:
            (built["raw"] / name).write_bytes(idx_bytes(array))
    meta = prepare(DataConfig(name="mnist", root=str(tmp_path / "raw")), tmp_path / "out", checksums=sums)
    suffix = ".gz" if form == "regzipped" else ""
    assert meta["verified"] == {"by": "official", "files": {
        f"MNIST/raw/{n}{suffix}": {"by": "official", "how": "MD5 of the official decompressed contents"}
        for n in mnist.FILES}}
    assert load_prepared(tmp_path / "out").meta["verified"] == meta["verified"]


def test_a_distribution_package_layout_is_found_and_verified(tmp_path):
    """Debian's dataset-fashion-mnist installs the four re-gzipped files straight in
    /usr/share/datasets/fashion-mnist/ (no torchvision folders): data.root pointing there works, and
    the files are verified by their contents (checked by hand against the real package, 2026-12-06)."""
    built = make_idx(tmp_path / "raw", compress=True)
    sums = official_idx_sums(built)
    flat = tmp_path / "usr-share-datasets-mnist"
    flat.mkdir()
    for name, array in built["arrays"].items():
        (flat / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array), compresslevel=9, mtime=777))
    meta = prepare(DataConfig(name="mnist", root=str(flat)), tmp_path / "out", checksums=sums)
    assert meta["verified"] == {"by": "official", "files": {
        f"{n}.gz": {"by": "official", "how": "MD5 of the official decompressed contents"} for n in mnist.FILES}}


def test_read_only_root_is_never_written(tmp_path):
    """data.root as a distribution installs it: read-only. Tests run as root, where chmod does not
    stop writes, so the proof is that nothing under root changed or appeared."""
    cases = [("mnist", lambda r: make_idx(r)["checksums"]), ("cifar10", lambda r: make_cifar10(r)["checksums"]),
             ("cifar100", lambda r: make_cifar100(r)["checksums"]),
             ("tiny_imagenet", lambda r: make_tiny_imagenet(r)["checksums"])]
    for name, make in cases:
        root = tmp_path / name
        sums = make(root)
        for path in [root, *root.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        before = snapshot(root)
        try:
            meta = prepare(DataConfig(name=name, root=str(root)), tmp_path / f"out-{name}", checksums=sums)
        finally:
            assert snapshot(root) == before, name
            for path in [root, *root.rglob("*")]:
                path.chmod(path.stat().st_mode | 0o200)
        assert meta["verified"]["by"] == "official"


def test_user_pin_accepts_the_pinned_copy_and_refuses_any_other(tmp_path):
    """KMNIST publishes no hash of the decompressed files: a re-gzipped copy needs your pin, and the
    refusal says exactly what to add. The pin is checked, recorded in meta.json and in the params
    provenance records, and a different file under that name is refused naming both hashes."""
    built = make_idx(tmp_path / "raw", folder="KMNIST", compress=True)
    sums = {k: v for k, v in official_idx_sums(built, "KMNIST").items() if k.endswith(".gz")}
    name = "t10k-labels-idx1-ubyte.gz"
    path = built["raw"] / name
    path.write_bytes(gzip.compress(idx_bytes(built["arrays"]["t10k-labels-idx1-ubyte"]), mtime=99))
    actual = sha256(path.read_bytes())
    rel = f"KMNIST/raw/{name}"
    with pytest.raises(DataError) as info:
        prepare(DataConfig(name="kmnist", root=str(tmp_path / "raw")), tmp_path / "out", checksums=sums)
    message = str(info.value)
    assert f"{path}: MD5 {md5(path.read_bytes())} is not that of the official {name}" in message
    assert "no hash of the decompressed contents of kmnist files is published" in message
    assert f"checksums:\n      {rel}: {actual}" in message and "corrupt" not in message
    assert leftovers(tmp_path / "out") == []

    cfg = DataConfig(name="kmnist", root=str(tmp_path / "raw"), checksums={rel: actual.upper()})
    meta = prepare(cfg, tmp_path / "out", checksums=sums)
    assert meta["verified"]["by"] == "user"
    assert meta["verified"]["files"][rel] == {"by": "user", "how": "data.checksums SHA-256"}
    assert meta["verified"]["files"]["KMNIST/raw/train-images-idx3-ubyte.gz"]["by"] == "official"
    assert meta["params"]["data"]["checksums"] == {rel: actual}  # what provenance records of params
    assert meta["sources"][rel] == actual

    path.write_bytes(gzip.compress(idx_bytes(built["arrays"]["t10k-labels-idx1-ubyte"]), mtime=100))
    other = sha256(path.read_bytes())
    with pytest.raises(DataError) as info:
        prepare(cfg, tmp_path / "out2", checksums=sums)
    message = str(info.value)
    assert str(path) in message and actual in message and other in message and "not the copy you pinned" in message
    assert leftovers(tmp_path / "out2") == []

    # A pin is checked even when the published sums would accept the file.
    official_rel = "KMNIST/raw/train-images-idx3-ubyte.gz"
    with pytest.raises(DataError, match="not the copy you pinned"):
        prepare(DataConfig(name="kmnist", root=str(tmp_path / "raw"), checksums={official_rel: "0" * 64}),
                tmp_path / "out3", checksums=sums)


def test_pins_for_archives_and_pins_that_check_nothing(tmp_path):
    # CIFAR: an archive with other members (here a swapped test batch) passes only when pinned.
    root = tmp_path / "raw"
    built = make_cifar10(root)
    members = dict(built["members"], test_batch=py2_pickle(
        {"labels": [1, 2, 3], "data": rng_images(42, 3), "batch_label": "x", "filenames": ["a", "b", "c"]}))
    tar_gz(root / "cifar-10-python.tar.gz", {f"cifar-10-batches-py/{k}": v for k, v in members.items()})
    actual = sha256((root / "cifar-10-python.tar.gz").read_bytes())
    with pytest.raises(DataError, match=f"cifar-10-python.tar.gz: {actual}"):
        prepare(DataConfig(name="cifar10", root=str(root)), tmp_path / "out", checksums=built["checksums"])
    cfg = DataConfig(name="cifar10", root=str(root), checksums={"cifar-10-python.tar.gz": actual})
    meta = prepare(cfg, tmp_path / "out", checksums=built["checksums"])
    files = meta["verified"]["files"]
    assert meta["verified"]["by"] == "user" and files["cifar-10-python.tar.gz"]["by"] == "user"
    assert files["cifar-10-batches-py/test_batch"]["by"] == "user"
    assert files["cifar-10-batches-py/data_batch_1"]["by"] == "official"  # an identical member still checks
    assert load_prepared(tmp_path / "out").test_labels.tolist() == [1, 2, 3]

    # Tiny-ImageNet: only the zip's MD5 is published; a re-packed zip passes only when pinned.
    tiny = make_tiny_imagenet(tmp_path / "tiny")
    sha = sha256(tiny["path"].read_bytes())
    with pytest.raises(DataError, match=f"(?s)No hash of its contents .* is published.*tiny-imagenet-200.zip: {sha}"):
        prepare(DataConfig(name="tiny_imagenet", root=str(tmp_path / "tiny")), tmp_path / "t1")
    meta = prepare(DataConfig(name="tiny_imagenet", root=str(tmp_path / "tiny"),
                              checksums={"tiny-imagenet-200.zip": sha}), tmp_path / "t1")
    assert meta["verified"] == {"by": "user", "files": {"tiny-imagenet-200.zip": {
        "by": "user", "how": "data.checksums SHA-256"}}}

    # A pin naming a file prepare did not read is refused, not ignored.
    with pytest.raises(DataError, match="pins MNIST/raw/typo.gz, which preparing tiny_imagenet .* did not read"):
        prepare(DataConfig(name="tiny_imagenet", root=str(tmp_path / "tiny"),
                           checksums={"tiny-imagenet-200.zip": sha, "MNIST/raw/typo.gz": sha}), tmp_path / "t2")
    assert leftovers(tmp_path / "t2") == []


@pytest.mark.parametrize("pins, message", [
    ({"../etc/passwd": "a" * 64}, "must not contain '..'"),
    ({"/etc/passwd": "a" * 64}, "must be relative to data.root"),
    ({"MNIST//x.gz": "a" * 64}, "empty parts"),
    ({"MNIST\\raw\\x.gz": "a" * 64}, "with / separators"),
    ({"MNIST/raw/x.gz": "a" * 63}, "64 hex digits"),
    ({"MNIST/raw/x.gz": "g" * 64}, "64 hex digits"),
])
def test_checksums_config_is_validated(pins, message):
    with pytest.raises(ValidationError, match=message):
        DataConfig(name="mnist", checksums=pins)
    with pytest.raises(ValidationError, match="data.checksums applies to the official datasets"):
        DataConfig(name="digits", checksums={"a.gz": "a" * 64})
