"""Scoring settings: every variable read in one place, and no silent development key."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from typer.testing import CliRunner

import server.scoring
from server.scoring.cli import cli
from server.scoring.settings import DEFAULT_IDENTIFIER_KEY, ENV_PREFIX, Settings


@pytest.fixture(autouse=True)
def no_fedrisk_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment without any FEDRISK_* variable."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def test_production_settings_without_an_identifier_key_are_refused(tmp_path: Path) -> None:
    # act / assert
    with pytest.raises(ValidationError, match="identifier_key must be set") as refused:
        Settings(registry_dir=tmp_path)
    assert "FEDRISK_IDENTIFIER_KEY" in str(refused.value)
    assert "development" in str(refused.value)


def test_the_published_development_key_is_refused_in_production(tmp_path: Path) -> None:
    # act / assert
    with pytest.raises(ValidationError, match="published development key"):
        Settings(registry_dir=tmp_path, identifier_key=SecretStr(DEFAULT_IDENTIFIER_KEY))


def test_development_mode_is_the_explicit_switch_for_the_development_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # act
    explicit = Settings(registry_dir=tmp_path, development=True)
    monkeypatch.setenv("FEDRISK_DEVELOPMENT", "1")
    from_environment = Settings(registry_dir=tmp_path)

    # assert
    assert explicit.uses_development_key and from_environment.uses_development_key
    assert explicit.identifier_key_bytes() == DEFAULT_IDENTIFIER_KEY.encode()


def test_secrets_and_settings_are_read_from_fedrisk_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # arrange
    monkeypatch.setenv("FEDRISK_IDENTIFIER_KEY", "lender-secret")
    monkeypatch.setenv("FEDRISK_API_KEY_CACHE_SECONDS", "2.5")
    monkeypatch.setenv("FEDRISK_DB_URL", "sqlite:///lender.db")
    monkeypatch.setenv("FEDRISK_GRAPH_RING_SIZE", "7")
    monkeypatch.setenv("FEDRISK_GRAPH_HUB_DEGREE", "70")

    # act
    settings = Settings(registry_dir=tmp_path, graph_hub_degree=90)

    # assert
    assert settings.identifier_key_bytes() == b"lender-secret"
    assert not settings.uses_development_key
    assert settings.api_key_cache_seconds == 2.5
    assert settings.insecure_dev is False
    assert settings.db_url == "sqlite:///lender.db"
    assert settings.graph_ring_size == 7
    assert settings.graph_hub_degree == 90  # a value passed in wins over the environment
    assert "lender-secret" not in repr(settings)


def test_an_empty_variable_counts_as_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # arrange
    monkeypatch.setenv("FEDRISK_IDENTIFIER_KEY", "")
    monkeypatch.setenv("FEDRISK_INSECURE_DEV", "")

    # act / assert
    with pytest.raises(ValidationError, match="identifier_key must be set"):
        Settings(registry_dir=tmp_path)
    assert Settings(registry_dir=tmp_path, development=True).insecure_dev is False


def test_a_bad_variable_is_refused_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # arrange
    monkeypatch.setenv("FEDRISK_WRITE_QUEUE", "none")

    # act / assert
    with pytest.raises(ValidationError, match="write_queue"):
        Settings(registry_dir=tmp_path, development=True)


def test_serve_refuses_to_start_without_an_identifier_key(tmp_path: Path) -> None:
    # act
    result = CliRunner().invoke(cli, ["serve", "--registry", str(tmp_path)])

    # assert
    assert result.exit_code == 2
    assert "FEDRISK_IDENTIFIER_KEY" in result.output
    assert "--development" in result.output


def test_no_module_of_the_service_reads_the_environment_itself() -> None:
    # arrange
    package = Path(server.scoring.__file__).parent
    readers: list[str] = []

    # act
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
            if name in ("environ", "getenv", "environb", "getenvb"):
                readers.append(f"{path.relative_to(package)}:{node.lineno}")  # type: ignore[attr-defined]

    # assert
    assert readers == [], "environment read outside server/scoring/settings.py"
