"""`model.architecture_from=RUN_DIR`: a grown architecture from scratch."""

import json

import keras
import numpy as np
import pytest

from keras_depthhet.growth import grow_model
from keras_depthhet.models import vit
from keras_depthhet.models.vit import growable_layer_map
from training import train
from training.config import (
    ConfigError,
    apply_overrides,
    load_config,
    vit_arguments,
)

GROWING = [
    "--set",
    "train.epochs=3",
    "--set",
    "train.steps_per_epoch=2",
    "--set",
    "model.depth=1",
    "--set",
    "growth.warmup=2",
    "--set",
    "growth.interval=10",
    "--set",
    "growth.layer_threshold=0",
    "--set",
    "growth.analysis_batches=1",
]
"""Three short epochs of a one-block ViT, one growth event after epoch 2."""

FROM_SCRATCH = [
    "--set",
    "train.epochs=2",
    "--set",
    "train.steps_per_epoch=2",
    "--set",
    "model.depth=1",
    "--set",
    "growth.enabled=False",
]


def _rounds(model) -> dict:
    return {
        name: [r.tolist() for r in layer.growth_rounds]
        for name, layer in growable_layer_map(model).items()
    }


@pytest.fixture(scope="module")
def grown_run(tmp_path_factory):
    """A finished growing run of the CLI on the digits."""
    workdir = tmp_path_factory.mktemp("grown") / "run"
    assert train.main(["--workdir", str(workdir), *GROWING]) == 0
    return workdir


@pytest.mark.integration
@pytest.mark.slow
def test_the_cli_trains_the_grown_architecture_from_scratch(
    grown_run, tmp_path, capsys
):
    workdir = tmp_path / "scratch"
    argv = ["--workdir", str(workdir), *FROM_SCRATCH]
    argv += ["--set", f"model.architecture_from={grown_run}"]
    assert train.main(argv) == 0
    capsys.readouterr()
    grown = keras.saving.load_model(grown_run / "model.keras")
    fresh = keras.saving.load_model(workdir / "model.keras")
    assert fresh.count_params() == grown.count_params() > 7_578
    assert _rounds(fresh) == _rounds(grown)
    assert any(_rounds(grown).values())
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["base_params"] == summary["final_params"]
    assert summary["final_params"] == grown.count_params()
    assert json.loads((workdir / "growth_events.json").read_text()) == []
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"]["architecture_from"] == str(grown_run)
    # Trained from fresh weights, not from the grown run's.
    for name, layer in growable_layer_map(fresh).items():
        old = growable_layer_map(grown)[name]
        assert not np.allclose(
            keras.ops.convert_to_numpy(layer.kernel),
            keras.ops.convert_to_numpy(old.kernel),
        )


@pytest.mark.integration
def test_another_stem_keeps_the_grown_blocks(grown_run):
    """16x16 images in 4x4 patches: 16 tokens, as 8x8 in 2x2 patches."""
    config = apply_overrides(
        load_config("digits_tiny"),
        [
            "model.depth=1",
            "model.image_size=16",
            "data.image_size=16",
            "model.patch_size=4",
            "model.num_classes=7",
            "growth.enabled=False",
            f"model.architecture_from={grown_run}",
        ],
    )
    run = train.check_architecture_source(config)
    model = train.architecture_model(config, run)
    grown = keras.saving.load_model(grown_run / "model.keras")
    assert _rounds(model) == _rounds(grown)
    assert model.input_shape == (None, 16, 16, 1)
    assert model.output_shape == (None, 7)
    # Only the patch projection (4x4 instead of 2x2 pixels) and the head
    # (7 classes instead of 10) change the count.
    patch = (16 - 4) * 32
    head = (7 - 10) * (32 + 1)
    assert model.count_params() == grown.count_params() + patch + head


def _fails(capsys, argv, *fragments):
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    for fragment in fragments:
        assert fragment in err
    return err


@pytest.fixture
def finished_run(tmp_path):
    """`grown_run` as the refusals see it, without its training.

    `check_architecture_source` reads no model: run.json (finished) and
    config.json (the growing command's) are what it checks; model.keras
    need only be there.
    """
    config = apply_overrides(load_config(train.DEFAULT_CONFIG), GROWING[1::2])
    run = tmp_path / "grown"
    run.mkdir()
    (run / "model.keras").write_bytes(b"")
    (run / "config.json").write_text(json.dumps(config))
    train.write_run_file(run, train.PROGRAM, "finished")
    return run


def test_bad_run_directories_are_refused_before_anything_is_written(
    finished_run, tmp_path, capsys
):
    workdir = tmp_path / "scratch"
    argv = ["--workdir", str(workdir), *FROM_SCRATCH]
    missing = tmp_path / "missing"
    _fails(
        capsys,
        [*argv, "--set", f"model.architecture_from={missing}"],
        "`model.architecture_from` must be the directory of a finished run",
        f"Received: model.architecture_from={str(missing)!r}",
    )
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "run.json").write_text(
        json.dumps({"program": "training.train", "status": "stopped"})
    )
    _fails(
        capsys,
        [*argv, "--set", f"model.architecture_from={unfinished}"],
        "its run is stopped, not finished",
    )
    _fails(
        capsys,
        [
            *argv,
            "--set",
            f"model.architecture_from={finished_run}",
            "--set",
            "model.mlp_width=1.0",
        ],
        "`model.mlp_width` must equal that of the run",
        "Received: model.mlp_width=1.0",
    )
    _fails(
        capsys,
        [
            "--workdir",
            str(workdir),
            "--set",
            f"model.architecture_from={finished_run}",
        ],
        "`growth.enabled` must be False when model.architecture_from is set",
    )
    assert not workdir.exists()


@pytest.mark.integration
def test_a_run_without_its_model_is_refused(grown_run, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("run.json", "config.json"):
        (copy / name).write_bytes((grown_run / name).read_bytes())
    config = apply_overrides(
        load_config("digits_tiny"),
        ["growth.enabled=False", f"model.architecture_from={copy}"],
    )
    with pytest.raises(ConfigError, match="it has no model.keras"):
        train.check_architecture_source(config)


@pytest.mark.integration
def test_paper_scale_config_builds_the_grown_deit_s(tmp_path):
    """`cifar100_deit_s_from_imagenet100` on a stand-in ImageNet-100 run
    (a reduced DeiT-S grown once, with that run's config)."""
    source = load_config("imagenet100_deit_s")
    grown = vit(**vit_arguments(source["model"]))
    plan = {"block_0_mlp_fc1": [0, 5, 9], "block_11_attn_qkv": [3]}
    grow_model(grown, plan)
    run = tmp_path / "imagenet100_deit_s"
    run.mkdir()
    grown.save(run / "model.keras")
    (run / "config.json").write_text(json.dumps(source))
    (run / "run.json").write_text(
        json.dumps({"program": "training.train", "status": "finished"})
    )
    config = apply_overrides(
        load_config("cifar100_deit_s_from_imagenet100"),
        [f"model.architecture_from={run}"],
    )
    assert config["data"]["dataset"] == "cifar100"
    assert not config["growth"]["enabled"]
    model = train.architecture_model(
        config, train.check_architecture_source(config)
    )
    assert model.count_params() == grown.count_params()
    assert model.count_params() == 11_071_204 + 2 * 385 * 3 + 2 * 385
    assert _rounds(model) == _rounds(grown)
