"""Data loaders: digits, tfds (mocked), image folders, class lists."""

import gzip

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from training import data


def test_digits_split_is_fixed_stratified_and_scaled():
    splits = data.load_digits(test_fraction=0.2, seed=0)
    assert (splits.num_train, splits.num_test) == (1437, 360)
    test_labels = np.array([int(y) for _, y in splits.test])
    assert np.bincount(test_labels).min() >= 35
    images = np.stack([x.numpy() for x, _ in splits.train])
    assert images.shape == (1437, 8, 8, 1)
    assert images.min() == 0.0 and images.max() == 255.0
    again = data.load_digits(test_fraction=0.2, seed=0)
    first = [int(y) for _, y in again.test.take(20)]
    assert first == test_labels[:20].tolist()


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype("u1").tobytes())


def test_mnist_t10k_from_idx_files_split_by_seed(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 28, 28), dtype="u1")
    labels = np.repeat(np.arange(10), 5).astype("u1")
    _write_idx(tmp_path / data.MNIST_T10K_FILES[0], images)
    _write_idx(tmp_path / data.MNIST_T10K_FILES[1], labels)
    np.testing.assert_array_equal(
        data.read_idx(tmp_path / data.MNIST_T10K_FILES[0]), images
    )
    config = {"dataset": "mnist_t10k", "data_dir": str(tmp_path)}
    splits = data.load_splits({**config, "test_fraction": 0.2}, 10, seed=1)
    assert (splits.num_train, splits.num_test) == (40, 10)
    test = [(x.numpy(), int(y)) for x, y in splits.test]
    assert sorted(y for _, y in test) == list(range(10))  # stratified
    for image, label in test:
        assert image.shape == (28, 28, 1) and image.dtype == np.float32
        index = [
            i for i in range(50) if np.array_equal(images[i], image[..., 0])
        ]
        assert labels[index[0]] == label
    again = data.load_mnist_t10k(str(tmp_path), 0.2, seed=1)
    assert [int(y) for _, y in again.test] == [y for _, y in test]
    other = data.load_mnist_t10k(str(tmp_path), 0.2, seed=2)
    assert not all(
        np.array_equal(a.numpy(), b)
        for (a, _), (b, _) in zip(other.test, test, strict=True)
    )
    (tmp_path / data.MNIST_T10K_FILES[1]).unlink()
    with pytest.raises(data.DataNotPreparedError, match="t10k-labels"):
        data.load_mnist_t10k(str(tmp_path))
    with pytest.raises(data.DataNotPreparedError, match="data_dir=None"):
        data.load_mnist_t10k(None)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\1\2\3\4"))
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(tmp_path / "bad.gz")


def test_cifar100_from_mocked_tfds(tmp_path):
    with tfds.testing.mock_data(num_examples=6):
        splits = data.load_cifar100(str(tmp_path))
        image, label = next(iter(splits.train))
    assert splits.num_classes == 100 and splits.num_train == 6
    assert image.shape == (32, 32, 3) and image.dtype == tf.float32
    assert label.dtype == tf.int32


def test_unprepared_tfds_dataset_says_how_to_prepare(tmp_path):
    with pytest.raises(data.DataNotPreparedError, match="download_and_prepare"):
        data.load_cifar100(str(tmp_path))
    with pytest.raises(data.DataNotPreparedError, match="manual_dir"):
        data.load_imagenet_subset(data_dir=str(tmp_path))


def test_imagenet_subset_from_mocked_tfds_keeps_and_relabels_classes(tmp_path):
    names = tfds.builder("imagenet2012").info.features["label"].names
    chosen = [names[5], names[900], names[17]]
    classes = tmp_path / "classes.txt"
    classes.write_text("# three classes\n" + "\n".join(chosen) + "\n")
    labels = np.array([5, 1, 900, 17, 2, 17, 5], "int64")

    def as_dataset(self, split, decoders=None, as_supervised=False, **kw):
        images = np.zeros((len(labels), 4, 6, 3), "uint8")
        images[:, 0, 0, 0] = labels % 256
        ds = tf.data.Dataset.from_tensor_slices(
            {"image": images, "label": labels}
        )
        if as_supervised:
            ds = ds.map(lambda e: (e["image"], e["label"]))
        return ds

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        splits = data.load_imagenet_subset(
            3, data_dir=str(tmp_path), classes_file=str(classes)
        )
        got = [(int(x[0, 0, 0]), int(y)) for x, y in splits.train]
    # Sorted IDs: names[5] < names[17] < names[900] -> labels 0, 1, 2.
    assert got == [(5, 0), (900 % 256, 2), (17, 1), (17, 1), (5, 0)]
    assert splits.num_train == 5 and splits.num_test == 5


def _write_tree(root, wnids, per_class=2):
    for split in ("train", "val"):
        for i, wnid in enumerate(wnids):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for j in range(per_class):
                pixels = np.full((5, 7, 3), 10 * i + j, "uint8")
                (folder / f"{j}.png").write_bytes(
                    tf.io.encode_png(pixels).numpy()
                )


def test_image_folder_with_class_list_and_seeded_sampling(tmp_path):
    wnids = ["n003", "n001", "n002", "n004"]
    _write_tree(tmp_path, wnids)
    classes = tmp_path / "classes.txt"
    classes.write_text("n002\nn004\n")
    splits = data.load_imagenet_subset(
        2, image_folder=str(tmp_path), classes_file=str(classes)
    )
    got = sorted((int(x[0, 0, 0]), int(y)) for x, y in splits.test)
    # n002 is folder index 2 (values 20, 21), n004 index 3 (30, 31).
    assert got == [(20, 0), (21, 0), (30, 1), (31, 1)]
    sampled = data.load_imagenet_subset(
        3, image_folder=str(tmp_path), class_sampling_seed=3
    )
    again = data.load_imagenet_subset(
        3, image_folder=str(tmp_path), class_sampling_seed=3
    )
    assert sampled.num_train == 6
    first = [int(x[0, 0, 0]) for x, _ in sampled.train]
    assert first == [int(x[0, 0, 0]) for x, _ in again.train]


def test_image_folder_errors(tmp_path):
    with pytest.raises(data.DataNotPreparedError, match="train"):
        data.load_imagenet_subset(2, image_folder=str(tmp_path))
    _write_tree(tmp_path, ["n001", "n002"])
    classes = tmp_path / "classes.txt"
    classes.write_text("n001\nn009\n")
    with pytest.raises(ValueError, match="n009"):
        data.load_imagenet_subset(
            2, image_folder=str(tmp_path), classes_file=str(classes)
        )


def test_shipped_class_list_and_sampling():
    ids = data.read_class_list(data.CLASSES_FILE)
    assert len(ids) == 100 and ids == sorted(set(ids))
    assert "n02869837" in ids and "n02090622" in ids
    all_ids = [f"n{i:08d}" for i in range(1000)]
    sample = data.sample_classes(all_ids, 100, seed=0)
    assert sample == data.sample_classes(all_ids, 100, seed=0)
    assert sample != data.sample_classes(all_ids, 100, seed=1)
    assert len(set(sample)) == 100


def test_class_list_errors(tmp_path):
    with pytest.raises(data.DataNotPreparedError, match="does not exist"):
        data.read_class_list(tmp_path / "missing.txt")
    path = tmp_path / "dup.txt"
    path.write_text("n1\nn1\n")
    with pytest.raises(ValueError, match="distinct"):
        data.read_class_list(path)


def test_load_splits_rejects_unknown_dataset_and_class_mismatch():
    config = {"dataset": "mnist"}
    with pytest.raises(ValueError, match="data.dataset"):
        data.load_splits(config, 10, 0)
    config = {"dataset": "digits", "test_fraction": 0.2}
    with pytest.raises(ValueError, match="num_classes"):
        data.load_splits(config, 100, 0)
