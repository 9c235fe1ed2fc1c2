"""Tests for the torch risk models, their weight vectors and pickle-free model files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from fedrisk.errors import ModelError
from fedrisk.ml.inference import parameter_layout
from fedrisk.ml.models import (
    MODEL_FILE,
    WEIGHTS_FILE,
    ModelSpec,
    build_model,
    count_parameters,
    get_logit_offset,
    load_model,
    load_vector,
    model_to_vector,
    save_model,
    set_logit_offset,
)

MLP = ModelSpec(kind="mlp", n_features=7, hidden=(5, 3))
LR = ModelSpec(kind="lr", n_features=7)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("spec", [LR, MLP], ids=["lr", "mlp"])
def test_model_outputs_one_logit_per_row(spec: ModelSpec) -> None:
    model = build_model(spec, generator=gen())
    out = model(torch.randn(11, 7, generator=gen(1)))
    assert out.shape == (11,)


def test_build_is_deterministic_and_leaves_global_rng_alone() -> None:
    # Arrange
    before = torch.get_rng_state()

    # Act
    a = model_to_vector(build_model(MLP, generator=gen(3)))
    b = model_to_vector(build_model(MLP, generator=gen(3)))
    c = model_to_vector(build_model(MLP, generator=gen(4)))

    # Assert
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert torch.equal(before, torch.get_rng_state())


def test_logistic_regression_starts_at_zero() -> None:
    np.testing.assert_array_equal(model_to_vector(build_model(LR, generator=gen())), 0.0)


def test_count_parameters() -> None:
    assert count_parameters(LR) == 8
    assert count_parameters(MLP) == (7 * 5 + 5) + (5 * 3 + 3) + (3 + 1)
    assert count_parameters(ModelSpec(kind="mlp", n_features=23)) == 24 * 64 + 65 * 32 + 33


def test_vector_follows_parameter_layout_order() -> None:
    # Arrange
    model = build_model(MLP, generator=gen())

    # Act
    vector = model_to_vector(model)

    # Assert
    state = model.state_dict()
    layout = parameter_layout(MLP)
    assert [name for name, _ in layout] == list(state)
    expected = np.concatenate([state[name].numpy().ravel() for name, _ in layout])
    np.testing.assert_array_equal(vector, expected.astype(np.float64))
    assert vector.dtype == np.float64 and vector.shape == (count_parameters(MLP),)


def test_load_vector_round_trips_and_checks_length() -> None:
    # Arrange
    model = build_model(MLP, generator=gen())
    vector = np.random.default_rng(0).normal(size=count_parameters(MLP)).astype(np.float32)

    # Act
    load_vector(model, vector)

    # Assert
    np.testing.assert_array_equal(model_to_vector(model), vector.astype(np.float64))
    with pytest.raises(ModelError, match=f"{count_parameters(MLP)} values"):
        load_vector(model, vector[:-1])
    with pytest.raises(ModelError, match="finite"):
        load_vector(model, np.full(count_parameters(MLP), np.nan))


def test_logit_offset_is_not_part_of_the_weight_vector() -> None:
    model = build_model(LR, generator=gen())
    set_logit_offset(model, -1.25)
    assert get_logit_offset(model) == -1.25
    assert "logit_offset" not in model.state_dict()
    assert model_to_vector(model).shape == (count_parameters(LR),)
    with pytest.raises(ModelError, match="finite"):
        set_logit_offset(model, float("inf"))


def test_spec_validation() -> None:
    with pytest.raises(ValidationError):
        ModelSpec(kind="mlp", n_features=3, hidden=(4, 0))
    with pytest.raises(ValidationError):
        ModelSpec.model_validate({"kind": "tree", "n_features": 3})
    with pytest.raises(ValidationError):
        ModelSpec(kind="lr", n_features=0)
    with pytest.raises(ValidationError):
        ModelSpec.model_validate({"kind": "lr", "n_features": 3, "extra": 1})


@pytest.mark.parametrize("spec", [LR, MLP], ids=["lr", "mlp"])
def test_save_and_load_round_trip(spec: ModelSpec, tmp_path: Path) -> None:
    # Arrange
    model = build_model(spec, generator=gen(2))
    load_vector(model, np.random.default_rng(1).normal(size=count_parameters(spec)))
    set_logit_offset(model, -1.3)
    x = torch.randn(5, 7, generator=gen(9))

    # Act
    save_model(model, spec, tmp_path / "m")
    loaded, loaded_spec = load_model(tmp_path / "m")

    # Assert
    assert loaded_spec == spec
    np.testing.assert_array_equal(model_to_vector(loaded), model_to_vector(model))
    assert get_logit_offset(loaded) == -1.3
    assert torch.equal(loaded(x), model(x))
    header = json.loads((tmp_path / "m" / MODEL_FILE).read_text())
    assert header["dtype"] == "<f8"
    assert (tmp_path / "m" / WEIGHTS_FILE).stat().st_size == 8 * count_parameters(spec)


def test_save_refuses_a_spec_that_does_not_match(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="spec must describe"):
        save_model(build_model(MLP, generator=gen()), LR, tmp_path)


def saved(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    save_model(build_model(MLP, generator=gen()), MLP, directory)
    return directory


def test_load_detects_flipped_weight_byte(tmp_path: Path) -> None:
    directory = saved(tmp_path)
    weights = bytearray((directory / WEIGHTS_FILE).read_bytes())
    weights[17] ^= 0x01
    (directory / WEIGHTS_FILE).write_bytes(bytes(weights))
    with pytest.raises(ModelError, match="checksum"):
        load_model(directory)


def test_load_detects_truncated_weights(tmp_path: Path) -> None:
    directory = saved(tmp_path)
    data = (directory / WEIGHTS_FILE).read_bytes()
    (directory / WEIGHTS_FILE).write_bytes(data[:-3])
    with pytest.raises(ModelError, match="must hold"):
        load_model(directory)


@pytest.mark.parametrize(
    "header",
    [b"{not json", b'{"format": "pickle"}', b"\xff\xfe", b'{"format": "fedrisk.model/1"}'],
)
def test_load_rejects_corrupted_header(tmp_path: Path, header: bytes) -> None:
    directory = saved(tmp_path)
    (directory / MODEL_FILE).write_bytes(header)
    with pytest.raises(ModelError):
        load_model(directory)


def test_load_rejects_missing_files(tmp_path: Path) -> None:
    directory = saved(tmp_path)
    (directory / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelError, match="must hold"):
        load_model(directory)
    with pytest.raises(ModelError):
        load_model(tmp_path / "nowhere")
