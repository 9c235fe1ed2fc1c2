"""The run config: one builder (FederationConfig.to_run_config), one parser (parse_run_config)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from fedrisk.errors import ConfigError
from fedrisk.federation.run_config import FederationConfig, parse_run_config, run_config_keys

FAB_PYPROJECT = (
    Path(__file__).resolve().parents[4] / "server" / "coordinator" / "flower_app" / "pyproject.toml"
)

CUSTOM = FederationConfig(
    run_id="run-abc",
    rounds=7,
    model="mlp",
    hidden=(16, 8, 4),
    seed=9,
    plaintext=True,
    min_parties=2,
    allow_fewer_parties=True,
    fraction=0.5,
    round_timeout=42.5,
    local_epochs=3,
    batch_size=64,
    learning_rate=0.01,
    optimizer="sgd",
    release_party="bank",
    stage="behaviour",
    public_context="/ctx/public.bin",
    server_dir="/runs/run-abc",
    sim_workspace="/sim",
    resume=True,
    proximal_mu=0.1,
    server_optimizer="fedyogi",
    server_learning_rate=0.1,
    trees=50,
    tree_depth=3,
    tree_learning_rate=0.05,
    tree_lambda=2.0,
    tree_bins=64,
    tree_colsample=0.5,
)


@pytest.mark.parametrize("config", [FederationConfig(), CUSTOM], ids=["defaults", "custom"])
def test_run_config_round_trips(config: FederationConfig) -> None:
    run_config = config.to_run_config()

    assert parse_run_config(run_config) == config
    assert all(isinstance(v, str | int | float | bool) for v in run_config.values())


def test_run_config_names_every_key_of_the_flower_app_with_its_defaults() -> None:
    fab = tomllib.loads(FAB_PYPROJECT.read_text(encoding="utf-8"))["tool"]["flwr"]["app"]["config"]

    assert list(FederationConfig().to_run_config()) == run_config_keys()
    assert set(run_config_keys()) == set(fab)
    assert parse_run_config(fab) == FederationConfig()


def test_field_names_and_run_config_keys_build_the_same_config() -> None:
    by_key = parse_run_config({"min-parties": 4, "round-timeout": 5.0, "hidden": "8,2"})
    by_name = parse_run_config({"min_parties": 4, "round_timeout": 5.0, "hidden": (8, 2)})

    assert by_key == by_name
    assert by_key.to_run_config()["hidden"] == "8,2"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("model", "foo", "model must be 'lr', 'mlp', 'scorecard' or 'gbdt'; got 'foo'"),
        ("rounds", 0, "rounds must be greater than or equal to 1; got 0"),
        ("rounds", "x", "rounds must be a valid integer; got 'x'"),
        ("fraction", 1.5, "fraction must be less than or equal to 1; got 1.5"),
        ("round-timeout", 0, "round-timeout must be greater than 0; got 0"),
        ("plaintext", "maybe", "plaintext must be a valid boolean; got 'maybe'"),
        ("stage", "x", "stage must be 'application', 'behaviour' or 'collection'; got 'x'"),
        ("hidden", "64,x", "hidden must be comma-separated integers; got '64,x'"),
        ("hidden", "64,0", "hidden must be greater than or equal to 1; got 0"),
        ("min-parties", 2, "min-parties must be at least 3; got 2"),
        ("min_parties", 2, "min-parties must be at least 3; got 2"),
        (
            "server-optimizer",
            "sgd",
            "server-optimizer must be 'fedavg', 'fedadam' or 'fedyogi'; got 'sgd'",
        ),
        ("proximal-mu", -1, "proximal-mu must be greater than or equal to 0; got -1"),
        ("tree-colsample", 0, "tree-colsample must be greater than 0; got 0"),
        ("tree-depth", 11, "tree-depth must be less than or equal to 10; got 11"),
        ("bogus", 1, "run-config keys must be among ['run-id', 'rounds', "),
    ],
)
def test_bad_values_are_refused_naming_the_key_and_the_value(
    key: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_run_config({key: value})


def test_every_bad_value_is_listed_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_run_config({"model": "foo", "seed": -1, "batch_size": 0})

    lines = str(caught.value).splitlines()
    assert lines == [
        "invalid run config:",
        "  - model must be 'lr', 'mlp', 'scorecard' or 'gbdt'; got 'foo'",
        "  - seed must be greater than or equal to 0; got -1",
        "  - batch-size must be greater than or equal to 1; got 0",
    ]
