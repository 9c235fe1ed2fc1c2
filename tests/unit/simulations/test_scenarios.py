"""Tests for simulations.scenarios: the lifecycle scenario registry and its end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedrisk.data.datasets import dataset_paths, dataset_schema
from fedrisk.data.partitions import parse_partition
from fedrisk.errors import ConfigError
from fedrisk.release.artifact import load_trusted_keys, read_artifact
from simulations.runner import prepare_data
from simulations.scenarios import (
    SCENARIOS,
    SMOKE_SCENARIO,
    TrainingPlan,
    get_scenario,
    run_scenario,
)
from simulations.studies import PARTITION_KINDS, partition_text

# Lending Club fields only known after the loan is granted (payments, recoveries, status).
POST_ORIGINATION = {
    "loan_status",
    "total_pymnt",
    "total_pymnt_inv",
    "total_rec_prncp",
    "total_rec_int",
    "total_rec_late_fee",
    "recoveries",
    "collection_recovery_fee",
    "last_pymnt_d",
    "last_pymnt_amnt",
    "next_pymnt_d",
    "out_prncp",
    "out_prncp_inv",
    "last_credit_pull_d",
    "last_fico_range_high",
    "last_fico_range_low",
    "hardship_flag",
    "debt_settlement_flag",
    "settlement_status",
}


def test_every_lifecycle_stage_has_a_scenario() -> None:
    stages = {s.stage for s in SCENARIOS.values()}

    assert stages == {"application", "behaviour", "collection"}
    assert set(SCENARIOS) == {
        "application-lending-club",
        "application-credit-data",
        "behaviour-taiwan",
        "collection-taiwan",
    }
    assert not any(s.synthetic for s in SCENARIOS.values())
    assert SMOKE_SCENARIO.synthetic
    assert "synthetic" in SMOKE_SCENARIO.name
    assert SMOKE_SCENARIO.name not in SCENARIOS


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_data_splits_and_settings_are_consistent(name: str) -> None:
    scenario = SCENARIOS[name]

    schema = dataset_schema(scenario.dataset)

    assert scenario.parties >= 3
    assert schema.target_column is not None
    for kind in PARTITION_KINDS:
        spec = parse_partition(partition_text(scenario, kind))
        if spec.kind == "by":
            assert spec.column in schema.feature_names
    assert parse_partition(scenario.feature_skew).kind == "by"
    for model in ("lr", "mlp"):
        spec = scenario.spec(model=model, seed=2)
        assert spec.stage == scenario.stage
        assert spec.rounds == scenario.plan(model).rounds
        assert spec.seed == 2
        assert spec.parties == scenario.parties


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_label_skewed_splits_train_with_the_label_skew_plan(name: str) -> None:
    scenario = SCENARIOS[name]

    for model in ("lr", "mlp"):
        skewed = scenario.spec(model=model, partition="dirichlet:0.3")
        balanced = scenario.spec(model=model, partition="iid")
        plan = scenario.plan(model, label_skew=True)

        assert skewed.optimizer == plan.optimizer == "sgd"
        assert skewed.learning_rate == plan.learning_rate > 0
        assert skewed.rounds == plan.rounds
        assert balanced.optimizer == "default"
        assert balanced.learning_rate == scenario.plan(model).learning_rate


def test_a_scenario_without_a_label_skew_plan_keeps_its_own() -> None:
    spec = SMOKE_SCENARIO.spec(model="lr", partition="dirichlet:0.3")

    assert spec.optimizer == "default"
    assert spec.rounds == SMOKE_SCENARIO.lr.rounds


def test_a_scorecard_trains_with_its_own_plan_where_given_else_the_lrs() -> None:
    own = SMOKE_SCENARIO.model_copy(
        update={
            "scorecard": TrainingPlan(rounds=7, learning_rate=0.02),
            "label_skew_scorecard": TrainingPlan(rounds=9, optimizer="sgd", learning_rate=0.1),
        }
    )

    assert own.spec(model="scorecard").rounds == 7
    assert own.spec(model="scorecard", partition="dirichlet:0.3").rounds == 9
    assert own.spec(model="lr").rounds == SMOKE_SCENARIO.lr.rounds
    # without its own plans a scorecard's LR keeps the LR's settings
    assert SMOKE_SCENARIO.plan("scorecard") == SMOKE_SCENARIO.lr
    skewed = SMOKE_SCENARIO.model_copy(update={"label_skew_lr": TrainingPlan(rounds=4)})
    assert skewed.plan("scorecard", label_skew=True).rounds == 4


def test_the_lending_club_a_card_uses_application_time_features_only() -> None:
    scenario = SCENARIOS["application-lending-club"]

    features = set(dataset_schema(scenario.dataset).feature_names)

    assert not features & POST_ORIGINATION
    assert scenario.partition == "by:addr_state"


def test_the_c_card_uses_the_derived_collection_target() -> None:
    scenario = SCENARIOS["collection-taiwan"]

    schema = dataset_schema(scenario.dataset)

    assert scenario.stage == "collection"
    assert schema.target_column == "not_cured"
    assert "default.payment.next.month" not in schema.feature_names


def test_unknown_scenario_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="scenario must be one of application-lending-club"):
        get_scenario("c-card")
    assert get_scenario("smoke-synthetic") is SMOKE_SCENARIO


def test_a_bad_partition_fails_before_any_run() -> None:
    with pytest.raises(ConfigError):
        SCENARIOS["behaviour-taiwan"].spec(partition="by age")


@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_study_partition_gives_parties_with_both_classes(name: str) -> None:
    scenario = SCENARIOS[name]
    missing = [p for p in dataset_paths(scenario.dataset) if not p.is_file()]
    if missing:
        pytest.skip(f"real dataset {scenario.dataset!r} is not available: {missing[0]}")

    for kind in PARTITION_KINDS:
        data = prepare_data(scenario.spec(partition=partition_text(scenario, kind)))

        target = data.dataset.schema.target_column
        assert len(data.parties) == scenario.parties
        for party in data.parties:
            assert party.train[target].nunique() == 2, (kind, party.name)
            assert party.test[target].nunique() == 2, (kind, party.name)
        if kind == "quantity":
            total = len(data.pooled_train) + len(data.pooled_test)
            smallest = min(len(p.train) + len(p.test) for p in data.parties)
            assert smallest / total <= 0.05


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.realdata
def test_scenarios_train_encrypted_and_release_stage_artifacts_into_one_registry(
    tmp_path: Path,
) -> None:
    scenario = SCENARIOS["collection-taiwan"]
    if not dataset_paths(scenario.dataset)[0].is_file():
        pytest.skip("real dataset 'taiwan' is not available")
    registry = tmp_path / "registry"

    first = run_scenario(SMOKE_SCENARIO, registry=registry)
    run = run_scenario(scenario, registry=registry, rounds=3)

    trusted = load_trusted_keys(registry / "trusted_keys")
    artifact = read_artifact(run.outcome.artifact_dir, trusted_keys=trusted)
    # The first release still verifies after the second one added its parties' keys.
    earlier = read_artifact(first.outcome.artifact_dir, trusted_keys=trusted)
    assert artifact.stage == "collection"
    assert earlier.stage == "application"
    assert artifact.he_params is not None
    assert artifact.schema.target_column == "not_cured"
    assert run.outcome.artifact_dir.parent == registry
    results = json.loads(run.results_path.read_text(encoding="utf-8"))
    assert results["scenario"] == "collection-taiwan"
    assert results["model_id"] == artifact.model_id
    assert results["federated"]["auc"] > 0.65
    assert abs(results["federated"]["auc"] - results["centralized"]["auc"]) < 0.05


def test_the_c_card_label_skew_mlp_steps_with_fedyogi_and_trees_need_no_plan() -> None:
    collection = SCENARIOS["collection-taiwan"]

    skewed = collection.spec(model="mlp", partition="dirichlet:0.3")
    balanced = collection.spec(model="mlp", partition="iid")
    trees = collection.spec(model="gbdt", partition="dirichlet:0.3", trees=40)

    assert (skewed.server_optimizer, skewed.server_learning_rate) == ("fedyogi", 0.1)
    assert balanced.server_optimizer == "fedavg" and balanced.proximal_mu == 0.0
    assert trees.model == "gbdt" and trees.trees == 40
