"""What ``fedrisk run`` submits and resumes: the validated run config, through Flower's parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flwr.common.config import parse_config_args

from fedrisk.errors import ConfigError
from fedrisk.federation.run_config import FederationConfig, parse_run_config
from server.coordinator.deployed_runs import RUN_FILE, resumable_run
from server.coordinator.runs import run_config_arg

CONFIG = FederationConfig(
    run_id="run-0123456789ab",
    rounds=4,
    model="mlp",
    hidden=(32, 8),
    round_timeout=0.5,
    learning_rate=1e-5,
    server_dir="/runs/with space/run-0123456789ab",
)


def write_run(workspace: Path, run_config: dict[str, object]) -> Path:
    run_dir = workspace / "runs" / str(run_config["run-id"])
    run_dir.mkdir(parents=True)
    (run_dir / RUN_FILE).write_text(json.dumps(run_config), encoding="utf-8")
    return run_dir


def test_submitted_run_config_parses_back_through_flowers_parser() -> None:
    arg = run_config_arg(CONFIG.to_run_config())

    assert parse_run_config(parse_config_args([arg])) == CONFIG


def test_resume_continues_the_unfinished_run_with_its_settings(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, CONFIG.to_run_config())

    run = resumable_run(tmp_path)

    assert run.run_dir == run_dir
    assert run.config == CONFIG.model_copy(update={"resume": True})
    assert run.run_config["resume"] is True


def test_resume_reads_a_run_file_holding_only_some_keys(tmp_path: Path) -> None:
    # Runs started before every key was written: the others keep the app's defaults.
    write_run(tmp_path, {"run-id": "run-old", "rounds": 2, "model": "lr", "seed": 4})

    run = resumable_run(tmp_path)

    assert run.config == FederationConfig(run_id="run-old", rounds=2, seed=4, resume=True)


def test_resume_refuses_a_run_file_with_a_bad_value(tmp_path: Path) -> None:
    write_run(tmp_path, {"run-id": "run-bad", "rounds": 0})

    with pytest.raises(ConfigError, match="rounds must be greater than or equal to 1; got 0"):
        resumable_run(tmp_path)
