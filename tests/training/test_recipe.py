"""DeiT recipe: learning rate, schedule, weight-decay exclusions, pipelines."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_depthhet.models import growable_layers, vit
from training import recipe
from training.config import load_config
from training.configs.common import base_config
from training.data import Splits


def test_learning_rate_scales_with_batch():
    train = base_config()["train"]
    assert recipe.learning_rate(train) == pytest.approx(5e-4 * 1024 / 512)


def test_schedule_warms_up_then_follows_cosine():
    train = dict(
        base_config()["train"],
        epochs=10,
        warmup_epochs=2,
        batch_size=512,
        warmup_lr=0.0,
        min_lr=5e-5,
    )
    schedule = recipe.learning_rate_schedule(train, steps=10)
    peak = 5e-4

    def lr(step):
        return float(keras.ops.convert_to_numpy(schedule(step)))

    assert lr(0) == pytest.approx(0.0, abs=1e-12)
    assert lr(10) == pytest.approx(peak / 2, rel=1e-5)
    assert lr(20) == pytest.approx(peak, rel=1e-5)
    # Halfway through the 80 cosine steps: min + (peak - min) / 2.
    assert lr(60) == pytest.approx(5e-5 + (peak - 5e-5) / 2, rel=1e-4)
    assert lr(100) == pytest.approx(5e-5, rel=1e-4)


@pytest.mark.slow
def test_weight_decay_skips_norms_biases_tokens_and_growth_biases():
    model = vit(
        image_size=8,
        patch_size=4,
        num_channels=1,
        num_classes=3,
        dim=8,
        depth=1,
        num_heads=2,
    )
    growable_layers(model)[2].grow([0, 1])
    train = dict(base_config()["train"], weight_decay=0.5, warmup_epochs=0)
    optimizer = recipe.make_optimizer(train, steps=10)
    variables = model.trainable_variables
    optimizer.build(variables)
    before = [keras.ops.convert_to_numpy(v).copy() for v in variables]
    # Zero gradients leave Adam's update at zero: only decay moves weights.
    grads = [np.zeros(v.shape, "float32") for v in variables]
    optimizer.apply_gradients(zip(grads, variables, strict=True))
    lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    decayed = {}
    for variable, old in zip(variables, before, strict=True):
        new = keras.ops.convert_to_numpy(variable)
        decayed[variable.path] = not np.allclose(new, old)
        if decayed[variable.path]:
            np.testing.assert_allclose(new, old * (1 - 0.5 * lr), rtol=1e-5)
    names = {path.split("/")[-1]: d for path, d in decayed.items()}
    assert names["kernel"] and names["growth_kernel_plus"]
    for kept in ("bias", "gamma", "beta", "token", "embedding"):
        assert not names[kept], kept
    assert not names["growth_bias_plus"]


def _splits(images, labels, num_classes):
    data = tf.data.Dataset.from_tensor_slices((images, labels))
    return Splits(data, data, len(labels), len(labels), num_classes)


def test_digits_pipelines_shapes_normalisation_and_labels():
    config = load_config("digits_tiny")
    images = np.full((70, 8, 8, 1), 255.0, "float32")
    labels = np.arange(70, dtype="int32") % 10
    splits = _splits(images, labels, 10)
    x, y = next(iter(recipe.train_dataset(splits, config)))
    assert x.shape == (64, 8, 8, 1) and y.shape == (64, 10)
    np.testing.assert_allclose(x.numpy(), (1.0 - 0.3) / 0.4, rtol=1e-5)
    np.testing.assert_array_equal(y.numpy().sum(axis=1), 1.0)
    batches = list(recipe.eval_dataset(splits, config))
    assert [b[0].shape[0] for b in batches] == [64, 6]
    np.testing.assert_array_equal(
        np.argmax(batches[0][1].numpy(), axis=1), labels[:64]
    )


def test_full_recipe_pipeline_mixes_labels():
    config = load_config("cifar100_deit_s")
    config["data"]["image_size"] = 32
    config["train"]["batch_size"] = 8
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (16, 40, 48, 3)).astype("float32")
    labels = np.arange(16, dtype="int32")
    x, y = next(
        iter(recipe.train_dataset(_splits(images, labels, 100), config))
    )
    assert x.shape == (8, 32, 32, 3)
    y = y.numpy()
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    # MixUp or CutMix gives each image two classes unless the draw is 0/1.
    assert (np.count_nonzero(y > 1e-6, axis=1) >= 1).all()
    assert np.isfinite(x.numpy()).all()


def test_random_resized_crop_and_center_crop_sizes():
    image = tf.random.uniform((50, 80, 3)) * 255
    assert recipe.random_resized_crop(image, 24, (0.08, 1.0)).shape == (
        24,
        24,
        3,
    )
    flat = tf.fill((50, 80, 3), 7.0)
    crop = recipe.center_crop(flat, 32, 0.875)
    assert crop.shape == (32, 32, 3)
    np.testing.assert_allclose(crop.numpy(), 7.0, rtol=1e-4)


def test_steps_per_epoch_drops_remainder():
    train = dict(base_config()["train"], batch_size=64)
    assert recipe.steps_per_epoch(train, 1437) == math.floor(1437 / 64)
    assert recipe.steps_per_epoch(dict(train, steps_per_epoch=5), 1437) == 5


def _labels(dataset, batches):
    return [np.argmax(y.numpy(), axis=1) for _, y in dataset.take(batches)]


def test_train_data_resume_at_any_epoch():
    config = load_config("digits_tiny")
    config["train"].update(batch_size=8, epochs=5)
    labels = np.arange(30, dtype="int32") % 10
    images = np.broadcast_to(labels[:, None, None, None], (30, 8, 8, 1))
    splits = _splits(images.astype("float32"), labels, 10)
    steps = recipe.steps_per_epoch(config["train"], splits.num_train)
    whole = recipe.train_dataset(splits, config)
    assert len(whole) == 5 * steps
    every = _labels(whole, 5 * steps)
    # Batches run across passes: 3 steps of 8 from 30 examples per epoch.
    for epoch in (1, 2, 4):
        resumed = recipe.train_dataset(splits, config, initial_epoch=epoch)
        assert len(resumed) == (5 - epoch) * steps
        tail = _labels(resumed, (5 - epoch) * steps)
        np.testing.assert_array_equal(tail, every[epoch * steps :])
    # Each pass is a fresh permutation of the 30 examples.
    stream = np.concatenate(every)
    for start in (0, 30, 60, 90):
        np.testing.assert_array_equal(
            np.sort(stream[start : start + 30]), np.sort(labels)
        )
    assert not np.array_equal(stream[:30], stream[30:60])


def test_analysis_data_depend_on_the_event_epoch_only():
    config = load_config("digits_tiny")
    labels = np.arange(200, dtype="int32") % 10
    images = np.zeros((200, 8, 8, 1), "float32")
    splits = _splits(images, labels, 10)
    first = _labels(recipe.analysis_dataset(splits, config, 8), 2)
    again = _labels(recipe.analysis_dataset(splits, config, 8), 2)
    other = _labels(recipe.analysis_dataset(splits, config, 17), 2)
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))
    assert not np.array_equal(np.concatenate(first), np.concatenate(other))
