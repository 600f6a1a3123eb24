"""Datasets of the experiments as unbatched `tf.data` pipelines.

Every loader returns a `Splits`: train and test datasets of
`(image, label)` pairs, images `float32` in `[0, 255]` with shape
`(height, width, channels)` (sizes may vary before the recipe resizes
them), labels `int32` class indices. Nothing is ever downloaded: tfds
datasets are opened with `download=False`, and a dataset that is not
prepared raises `DataNotPreparedError` saying how to prepare it.
"""

import dataclasses
import gzip
import importlib
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

CLASSES_FILE = (
    Path(__file__).resolve().parent / "data" / "imagenet100_classes.txt"
)
"""The CMC ImageNet-100 class list shipped with this package."""

_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


class DataNotPreparedError(RuntimeError):
    """A dataset is not on disk; the message says how to prepare it."""


class MissingDependencyError(RuntimeError):
    """An optional package needed by the chosen config is not installed."""


def require(module: str, purpose: str):
    """Imports `module` or raises `MissingDependencyError` naming the fix."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(
            f"{purpose} needs the Python package `{module}`, which is not "
            "installed; install it with `pip install keras-depthhet[train]`."
        ) from error


@dataclasses.dataclass
class Splits:
    """Train and test data of one experiment.

    Attributes:
        train: Unbatched `(image, label)` training examples.
        test: Unbatched `(image, label)` evaluation examples.
        num_train: Number of training examples.
        num_test: Number of evaluation examples.
        num_classes: Number of classes; labels lie in `[0, num_classes)`.
    """

    train: tf.data.Dataset
    test: tf.data.Dataset
    num_train: int
    num_test: int
    num_classes: int


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Splits:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes).

    Needs no network and no files: the data ships with scikit-learn. The
    stratified train/test split is fixed by `seed`. Pixel values 0-16 are
    scaled to 0-255.
    """
    datasets = require("sklearn.datasets", "The digits dataset")
    digits = datasets.load_digits()
    images = (digits.images * (255.0 / 16.0)).astype("float32")[..., None]
    labels = digits.target.astype("int32")
    return array_splits(images, labels, 10, test_fraction, seed)


MNIST_T10K_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
"""The two files of the MNIST test set, in its original IDX format."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """A gzip-compressed IDX file of unsigned bytes (MNIST's format)."""
    with gzip.open(path, "rb") as file:
        data = file.read()
    if data[:2] != b"\0\0" or data[2] != 8:
        raise ValueError(
            f"File {str(path)!r} is not an IDX file of unsigned bytes."
        )
    rank = data[3]
    shape = np.frombuffer(data, ">u4", count=rank, offset=4).astype(int)
    return np.frombuffer(data, "u1", offset=4 + 4 * rank).reshape(shape)


def load_mnist_t10k(
    data_dir: str | None, test_fraction: float = 0.2, seed: int = 0
) -> Splits:
    """The MNIST test set (10,000 28x28 images) split into train and test.

    MNIST ships with no dependency of this package, so the two files
    `t10k-images-idx3-ubyte.gz` and `t10k-labels-idx1-ubyte.gz` are read
    from `data_dir` (`--set data.data_dir=DIR`). The stratified split is
    fixed by `seed`; `test_fraction=0.2` gives 8,000 / 2,000 images.

    Raises:
        DataNotPreparedError: if `data_dir` is not given or lacks a file.
    """
    missing = [
        name
        for name in MNIST_T10K_FILES
        if data_dir is None or not (Path(data_dir) / name).is_file()
    ]
    if missing:
        raise DataNotPreparedError(
            f"The mnist_t10k dataset reads {' and '.join(missing)} from "
            "data.data_dir, which does not hold them; pass --set "
            f"data.data_dir=DIR with both files in DIR. Received: "
            f"data.data_dir={data_dir!r}"
        )
    images = read_idx(Path(data_dir) / MNIST_T10K_FILES[0])
    labels = read_idx(Path(data_dir) / MNIST_T10K_FILES[1])
    return array_splits(
        images.astype("float32")[..., None],
        labels.astype("int32"),
        10,
        test_fraction,
        seed,
    )


def array_splits(
    images, labels, num_classes: int, test_size: float | int, seed: int
) -> Splits:
    """In-memory arrays split into stratified train and test sets.

    Args:
        images: Array `(N, height, width, channels)`.
        labels: Integer array `(N,)` in `[0, num_classes)`.
        num_classes: Number of classes.
        test_size: Fraction (float) or number (int) of test images.
        seed: Fixes the split.
    """
    model_selection = require("sklearn.model_selection", "Splitting arrays")
    x_train, x_test, y_train, y_test = model_selection.train_test_split(
        images,
        labels,
        test_size=test_size,
        random_state=seed,
        stratify=labels,
    )
    return Splits(
        train=tf.data.Dataset.from_tensor_slices((x_train, y_train)),
        test=tf.data.Dataset.from_tensor_slices((x_test, y_test)),
        num_train=len(y_train),
        num_test=len(y_test),
        num_classes=num_classes,
    )


def _prepare_hint(name: str, data_dir: str | None) -> str:
    where = f", data_dir={data_dir!r}" if data_dir else ""
    return (
        f'python -c "import tensorflow_datasets as tfds; '
        f"tfds.builder('{name}'{where}).download_and_prepare()\""
    )


def _open_tfds(builder, split: str, data_dir, hint: str, **kwargs):
    try:
        return builder.as_dataset(split=split, **kwargs)
    except AssertionError as error:
        raise DataNotPreparedError(
            f"tfds dataset '{builder.name}' is not prepared in "
            f"{data_dir or '~/tensorflow_datasets'}; prepare it once with: "
            f"{hint}"
        ) from error


def _count(dataset: tf.data.Dataset) -> int:
    return int(dataset.reduce(np.int64(0), lambda n, _: n + 1))


def _tfds_count(builder, split: str, dataset: tf.data.Dataset) -> int:
    splits = builder.info.splits
    if split in splits:
        return int(splits[split].num_examples)
    return _count(dataset)


def _as_example(image, label):
    return tf.cast(image, tf.float32), tf.cast(label, tf.int32)


def load_cifar100(data_dir: str | None = None) -> Splits:
    """tfds `cifar100` (50,000 train and 10,000 test images, 32x32x3)."""
    tfds = require("tensorflow_datasets", "The cifar100 dataset")
    builder = tfds.builder("cifar100", data_dir=data_dir)
    hint = _prepare_hint("cifar100", data_dir)
    out = {}
    for split in ("train", "test"):
        dataset = _open_tfds(builder, split, data_dir, hint, as_supervised=True)
        out[split] = (
            dataset.map(_as_example),
            _tfds_count(builder, split, dataset),
        )
    return Splits(
        train=out["train"][0],
        test=out["test"][0],
        num_train=out["train"][1],
        num_test=out["test"][1],
        num_classes=100,
    )


def read_class_list(path: str | os.PathLike) -> list[str]:
    """Reads a class list file: one WordNet ID a line, `#` comments.

    Returns:
        The IDs sorted, so that class `i` is the `i`-th of them.

    Raises:
        DataNotPreparedError: if the file is missing.
        ValueError: if it repeats an ID or names none.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotPreparedError(
            f"Class list file {str(path)!r} does not exist; give one WordNet "
            "ID per line (the shipped list is training/data/"
            "imagenet100_classes.txt)."
        )
    lines = [line.strip() for line in path.read_text().splitlines()]
    ids = [line for line in lines if line and not line.startswith("#")]
    if not ids or len(set(ids)) != len(ids):
        raise ValueError(
            "Argument `classes_file` must list distinct class IDs, one a "
            f"line. Received: {str(path)!r} with {len(ids)} IDs, "
            f"{len(ids) - len(set(ids))} repeated"
        )
    return sorted(ids)


def sample_classes(
    all_ids: list[str], num_classes: int, seed: int
) -> list[str]:
    """`num_classes` of `all_ids` drawn without replacement with `seed`."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(all_ids), size=num_classes, replace=False)
    return sorted(all_ids[i] for i in chosen)


def _remap_labels(dataset, source_ids: list[str], chosen: list[str]):
    """Keeps examples of `chosen` classes, relabelled 0..len(chosen)-1."""
    mapping = np.full(len(source_ids), -1, "int32")
    for new, wnid in enumerate(chosen):
        mapping[source_ids.index(wnid)] = new
    table = tf.constant(mapping)

    def relabel(image, label):
        return image, tf.gather(table, tf.cast(label, tf.int32))

    return dataset.map(relabel).filter(lambda _, label: label >= 0)


def _choose_classes(all_ids, num_classes, classes_file, sampling_seed):
    if sampling_seed is not None:
        return sample_classes(sorted(all_ids), num_classes, sampling_seed)
    chosen = read_class_list(classes_file or CLASSES_FILE)
    missing = sorted(set(chosen) - set(all_ids))
    if len(chosen) != num_classes or missing:
        raise ValueError(
            f"The class list must name {num_classes} classes of the source "
            f"dataset. Received: {len(chosen)} IDs, unknown ones: "
            f"{missing[:5]}"
        )
    return chosen


def load_imagenet_subset(
    num_classes: int = 100,
    *,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    image_folder: str | None = None,
    classes_file: str | None = None,
    class_sampling_seed: int | None = None,
) -> Splits:
    """ImageNet-100 (or any class subset of ImageNet-1k).

    Classes come from `classes_file` (default: the shipped CMC list) or,
    when `class_sampling_seed` is set, are drawn at random from the 1,000
    with that seed, as in the paper. The images come from one of:

    - `image_folder`: a tree `image_folder/{train,val}/<wnid>/<image>`
      (only the chosen classes' folders need to exist);
    - tfds `imagenet2012` in `data_dir`; if it is not prepared and
      `manual_dir` holds `ILSVRC2012_img_train.tar` and
      `ILSVRC2012_img_val.tar`, it is prepared from them first (no network,
      but hours of work and about 150 GB).

    Returns:
        `Splits` over the chosen classes, relabelled in sorted ID order.
    """
    if image_folder:
        return _load_image_folder(
            image_folder, num_classes, classes_file, class_sampling_seed
        )
    tfds = require("tensorflow_datasets", "The imagenet2012 dataset")
    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    if manual_dir and not builder.is_prepared():
        config = tfds.download.DownloadConfig(manual_dir=manual_dir)
        builder.download_and_prepare(download_config=config)
    hint = (
        "download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from "
        "image-net.org into a folder and pass "
        "--set data.manual_dir=FOLDER (or use --set data.image_folder=ROOT "
        "with ROOT/{train,val}/<wnid>/ images)"
    )
    source_ids = list(builder.info.features["label"].names)
    chosen = _choose_classes(
        source_ids, num_classes, classes_file, class_sampling_seed
    )
    out = {}
    for split, name in (("train", "train"), ("validation", "test")):
        dataset = _open_tfds(builder, split, data_dir, hint, as_supervised=True)
        dataset = _remap_labels(dataset.map(_as_example), source_ids, chosen)
        labels = _open_tfds(
            builder,
            split,
            data_dir,
            hint,
            decoders={"image": tfds.decode.SkipDecoding()},
        ).map(lambda example: (example["image"], example["label"]))
        count = _count(_remap_labels(labels, source_ids, chosen))
        out[name] = (dataset, count)
    return Splits(
        train=out["train"][0],
        test=out["test"][0],
        num_train=out["train"][1],
        num_test=out["test"][1],
        num_classes=num_classes,
    )


def _decode(path, label):
    image = tf.io.decode_image(
        tf.io.read_file(path), channels=3, expand_animations=False
    )
    return tf.cast(image, tf.float32), label


def _load_image_folder(root, num_classes, classes_file, sampling_seed):
    root = Path(root)
    splits = {}
    for split, name in (("train", "train"), ("val", "test")):
        folder = root / split
        if not folder.is_dir():
            raise DataNotPreparedError(
                f"Image folder {str(folder)!r} does not exist; expected "
                f"{str(root)!r} to hold train/<wnid>/ and val/<wnid>/ images."
            )
        present = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if name == "train":
            chosen = _choose_classes(
                present, num_classes, classes_file, sampling_seed
            )
        missing = [wnid for wnid in chosen if not (folder / wnid).is_dir()]
        if missing:
            raise DataNotPreparedError(
                f"Image folder {str(folder)!r} lacks {len(missing)} of the "
                f"chosen classes (e.g. {missing[0]}); it needs one folder per "
                "class, named by WordNet ID."
            )
        paths, labels = [], []
        for label, wnid in enumerate(chosen):
            files = sorted(
                str(p)
                for p in (folder / wnid).iterdir()
                if p.suffix.lower() in _IMAGE_SUFFIXES
            )
            paths += files
            labels += [label] * len(files)
        dataset = tf.data.Dataset.from_tensor_slices(
            (paths, np.asarray(labels, "int32"))
        )
        splits[name] = (
            dataset.map(_decode, num_parallel_calls=tf.data.AUTOTUNE),
            len(paths),
        )
    return Splits(
        train=splits["train"][0],
        test=splits["test"][0],
        num_train=splits["train"][1],
        num_test=splits["test"][1],
        num_classes=num_classes,
    )


def load_splits(data: dict, num_classes: int, seed: int) -> Splits:
    """The dataset named by a config's `data` section.

    Args:
        data: The config's `data` dict (`dataset` is one of `digits`,
            `mnist_t10k`, `cifar100`, `imagenet100`).
        num_classes: The model's number of classes.
        seed: Seed of the digits and MNIST train/test splits.

    Returns:
        The `Splits`.
    """
    name = data["dataset"]
    if name == "digits":
        splits = load_digits(data["test_fraction"], seed)
    elif name == "mnist_t10k":
        splits = load_mnist_t10k(data["data_dir"], data["test_fraction"], seed)
    elif name == "cifar100":
        splits = load_cifar100(data["data_dir"])
    elif name == "imagenet100":
        splits = load_imagenet_subset(
            num_classes,
            data_dir=data["data_dir"],
            manual_dir=data["manual_dir"],
            image_folder=data["image_folder"],
            classes_file=data["classes_file"],
            class_sampling_seed=data["class_sampling_seed"],
        )
    else:
        raise ValueError(
            "Argument `data.dataset` must be one of 'digits', 'mnist_t10k', "
            f"'cifar100', 'imagenet100'. Received: data.dataset={name!r}"
        )
    if splits.num_classes != num_classes:
        raise ValueError(
            f"Dataset {name!r} has {splits.num_classes} classes but "
            f"`model.num_classes` is {num_classes}."
        )
    return splits
