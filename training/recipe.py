"""The DeiT training recipe (Touvron et al. 2021) as tf.data and Keras parts.

Augmentation runs in `tf.data` (on the CPU, whichever backend trains):
random resized crop, horizontal flip and RandAugment per image, random
erasing, then MixUp or CutMix per batch, then normalisation. `keras.layers`
provides the flip, random erasing, MixUp and CutMix layers. Keras 3.15 has
no random resized crop layer, so `random_resized_crop` is the Inception
crop written with `tf.image`. Its `RandAugment` layer feeds the magnitude
straight to `RandomRotation` (as a fraction of a full turn) and
`RandomTranslation`, so magnitude 9 would mean rotations of up to 324
degrees; keras-cv's `RandAugment` uses the timm magnitude scale that DeiT's
`rand-m9-mstd0.5` refers to, so that one is used.
"""

import dataclasses

import keras
import tensorflow as tf

from training.data import Splits, require

PASS_SEEDS = 1_000_000
"""Shuffle seeds per config seed: pass `p` over the training data is
shuffled with seed `seed * PASS_SEEDS + p`, the analysis data of the growth
event after epoch `e` with `seed * PASS_SEEDS + PASS_SEEDS // 2 + e`, so
that any epoch's data can be rebuilt without replaying the epochs before
it."""


def learning_rate(train: dict) -> float:
    """Peak learning rate: `base_lr * batch_size / lr_reference_batch`."""
    return train["base_lr"] * train["batch_size"] / train["lr_reference_batch"]


def steps_per_epoch(train: dict, num_train: int) -> int:
    """Optimizer steps per epoch (full batches only, as the data drop the
    remainder), unless the config fixes `steps_per_epoch`."""
    if train["steps_per_epoch"]:
        return int(train["steps_per_epoch"])
    return max(1, num_train // train["batch_size"])


def learning_rate_schedule(
    train: dict, steps: int
) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up from `warmup_lr` to the peak, then cosine to `min_lr`.

    Args:
        train: The config's `train` section.
        steps: Optimizer steps per epoch.

    Returns:
        A `CosineDecay` schedule over `epochs * steps` steps.
    """
    peak = learning_rate(train)
    warmup = train["warmup_epochs"] * steps
    total = train["epochs"] * steps
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=train["warmup_lr"] if warmup else peak,
        decay_steps=max(1, total - warmup),
        alpha=train["min_lr"] / peak,
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )


def make_optimizer(train: dict, steps: int) -> keras.optimizers.AdamW:
    """AdamW with the schedule, weight decay off for `no_weight_decay` names.

    Weight decay is decoupled (`weight_decay * lr` per step, as in timm).
    Variables whose name contains one of `train["no_weight_decay"]` (norm
    scales and offsets, biases including growth biases, class token and
    position embedding) are not decayed.
    """
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate_schedule(train, steps),
        weight_decay=train["weight_decay"],
    )
    if train["no_weight_decay"]:
        optimizer.exclude_from_weight_decay(
            var_names=list(train["no_weight_decay"])
        )
    return optimizer


def make_loss(train: dict) -> keras.losses.Loss:
    """Cross-entropy on logits with label smoothing (targets are one-hot or
    mixed, so the smoothing applies after MixUp/CutMix as in timm)."""
    return keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=train["label_smoothing"]
    )


def random_resized_crop(image, size: int, area: tuple[float, float]):
    """Inception-style crop: random area fraction and aspect ratio in
    [3/4, 4/3], resized (bicubic) to `size` x `size`."""
    begin, crop_size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.zeros([1, 0, 4]),
        area_range=tuple(area),
        aspect_ratio_range=(3 / 4, 4 / 3),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    return tf.image.resize(crop, (size, size), method="bicubic")


def center_crop(image, size: int, fraction: float):
    """Resizes the shorter side to `size / fraction`, then crops the centre."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (size / fraction) / tf.reduce_min(shape)
    resized = tf.cast(tf.round(shape * scale), tf.int32)
    resized = tf.maximum(resized, size)
    image = tf.image.resize(image, resized, method="bicubic")
    return tf.image.resize_with_crop_or_pad(image, size, size)


def _normalizer(data: dict):
    mean = tf.constant(data["mean"], tf.float32) * 255.0
    std = tf.constant(data["std"], tf.float32) * 255.0
    return lambda images: (images - mean) / std


def _mix(augment: dict, seed: int):
    """Per batch: MixUp or CutMix (chosen with `mix_switch_prob`), either
    alone when the other's alpha is 0, or nothing when both are."""
    mixers = []
    if augment["mixup_alpha"] > 0:
        alpha = augment["mixup_alpha"]
        mixers.append(keras.layers.MixUp(alpha=alpha, seed=seed))
    if augment["cutmix_alpha"] > 0:
        alpha = augment["cutmix_alpha"]
        mixers.append(keras.layers.CutMix(factor=(alpha, alpha), seed=seed))
    if not mixers:
        return None
    switch = augment["mix_switch_prob"]

    def mix(images, labels):
        data = {"images": images, "labels": labels}
        if len(mixers) == 1:
            out = mixers[0](data, training=True)
        else:
            out = tf.cond(
                tf.random.uniform([]) < switch,
                lambda: mixers[1](data, training=True),
                lambda: mixers[0](data, training=True),
            )
        return out["images"], out["labels"]

    return mix


def _examples(splits: Splits, config: dict, start: int, stop: int):
    """Training examples `start` to `stop` of the run, counted over passes
    through the data, each pass shuffled with a seed of its own
    (`PASS_SEEDS`).

    The seeds are Python integers: TensorFlow cannot take a shuffle seed
    computed in the graph while the global seed is 0. The passes are
    concatenated as a balanced tree, so that the pipeline stays shallow
    and only one pass is read at a time.
    """
    buffer = min(config["data"]["shuffle_buffer"], splits.num_train)
    first, offset = divmod(start, splits.num_train)
    last = -(-stop // splits.num_train)
    seed = config["seed"] * PASS_SEEDS
    passes = [
        splits.train.shuffle(
            buffer, seed=seed + index, reshuffle_each_iteration=False
        )
        for index in range(first, max(last, first + 1))
    ]
    while len(passes) > 1:
        pairs = zip(passes[::2], passes[1::2], strict=False)
        joined = [a.concatenate(b) for a, b in pairs]
        passes = joined + passes[len(joined) * 2 :]
    return passes[0].skip(offset)


def train_dataset(
    splits: Splits, config: dict, initial_epoch: int = 0
) -> tf.data.Dataset:
    """Shuffled, augmented, batched, repeated training data.

    Yields `(images, one_hot_labels)` with normalised float32 images of
    shape `(batch, size, size, channels)`; labels are mixed when MixUp or
    CutMix is on. Batches run on across passes over the data (no partial
    batch), for the epochs from `initial_epoch` to `train.epochs`. The
    order of the examples is fixed by the config's seed, pass by pass, so
    the data of a run resumed at `initial_epoch` are those an
    uninterrupted run sees from that epoch on; random augmentations draw
    afresh.

    Args:
        splits: The experiment's data.
        config: The config (`data`, `augment`, `train` and `seed` are
            read).
        initial_epoch: Number of epochs already trained.

    Returns:
        A `tf.data.Dataset` of `(train.epochs - initial_epoch) *
        steps_per_epoch` batches.
    """
    data, augment, train = config["data"], config["augment"], config["train"]
    seed, size = config["seed"], data["image_size"]
    num_classes = splits.num_classes
    per_epoch = steps_per_epoch(train, splits.num_train) * train["batch_size"]

    def per_image(image, label):
        if augment["random_resized_crop"]:
            image = random_resized_crop(image, size, augment["crop_area"])
        else:
            image = tf.image.resize(image, (size, size), method="bicubic")
        return tf.clip_by_value(image, 0.0, 255.0), label

    dataset = _examples(
        splits, config, initial_epoch * per_epoch, train["epochs"] * per_epoch
    )
    dataset = dataset.map(per_image, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(train["batch_size"], drop_remainder=True)
    layers = []
    if augment["flip"]:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if augment["rand_augment"]:
        keras_cv = require("keras_cv", "RandAugment (augment.rand_augment)")
        layers.append(
            keras_cv.layers.RandAugment(
                value_range=(0, 255),
                augmentations_per_image=augment["rand_augment_num_ops"],
                magnitude=augment["rand_augment_magnitude"] / 10,
                magnitude_stddev=augment["rand_augment_magnitude_std"] / 10,
                rate=1.0,
                seed=seed,
            )
        )
    if augment["random_erasing"] > 0:
        prob = augment["random_erasing"]
        layers.append(
            keras.layers.RandomErasing(
                factor=(prob, prob), value_range=(0, 255), seed=seed
            )
        )
    mix = _mix(augment, seed)
    normalize = _normalizer(data)

    def per_batch(images, labels):
        # keras-cv's RandAugment loses the static shape, which
        # RandomErasing needs.
        shape = images.shape
        for layer in layers:
            images = tf.ensure_shape(layer(images, training=True), shape)
        labels = tf.one_hot(labels, num_classes)
        if mix is not None:
            images, labels = mix(images, labels)
        return normalize(images), labels

    dataset = dataset.map(per_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def eval_dataset(
    splits: Splits, config: dict, batch_size: int | None = None
) -> tf.data.Dataset:
    """Centre-cropped, normalised, batched test data with one-hot labels."""
    data = config["data"]
    size, fraction = data["image_size"], data["eval_crop_fraction"]
    normalize = _normalizer(data)

    def per_image(image, label):
        if fraction < 1.0:
            image = center_crop(image, size, fraction)
        else:
            image = tf.image.resize(image, (size, size), method="bicubic")
        image = normalize(tf.clip_by_value(image, 0.0, 255.0))
        return image, tf.one_hot(label, splits.num_classes)

    dataset = splits.test.map(per_image, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size or config["train"]["batch_size"])
    return dataset.prefetch(tf.data.AUTOTUNE)


def analysis_dataset(splits: Splits, config: dict, epoch: int):
    """Training images for the splitting analysis after epoch `epoch`.

    Un-augmented and un-mixed (prepared as `eval_dataset` prepares test
    images), so that the loss whose curvature is measured is the plain
    classification loss; shuffled with a seed of this event's own, so a
    resumed run analyses the batches an uninterrupted run would.
    """
    shuffled = splits.train.shuffle(
        min(splits.num_train, 10_000),
        seed=config["seed"] * PASS_SEEDS + PASS_SEEDS // 2 + epoch,
        reshuffle_each_iteration=False,
    )
    return eval_dataset(
        dataclasses.replace(splits, test=shuffled, num_test=splits.num_train),
        config,
    )
