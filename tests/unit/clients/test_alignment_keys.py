"""Which identifier key a party aligns with: its handed key file, else its secret context."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.alignment import identifier_key
from clients.party import PartyConfig, PartyRefusedError
from fedrisk.federation.identifiers import IdentifierKey
from fedrisk.federation.run_config import parse_run_config

RUN = parse_run_config({"run-id": "r1"})


def _config(tmp_path: Path, **paths: Path) -> PartyConfig:
    return PartyConfig(
        name="telecom",
        train=tmp_path / "train.csv",
        test=tmp_path / "test.csv",
        schema_file=tmp_path / "schema.toml",
        **paths,
    )


def test_a_handed_key_file_wins_over_the_secret_context(tmp_path: Path) -> None:
    handed = IdentifierKey.derive(bytes(range(32, 96)), federation="f")
    handed.save(tmp_path / "identifier.key")
    (tmp_path / "context.secret").write_bytes(bytes(64))

    both = _config(
        tmp_path,
        identifier_key=tmp_path / "identifier.key",
        secret_context=tmp_path / "context.secret",
    )
    only_context = _config(tmp_path, secret_context=tmp_path / "context.secret")

    assert identifier_key(both, RUN) == handed
    assert identifier_key(only_context, RUN) == IdentifierKey.derive(
        bytes(64), federation="fedrisk"
    )


def test_a_party_without_any_key_refuses_an_encrypted_run(tmp_path: Path) -> None:
    with pytest.raises(PartyRefusedError, match="must hold the federation's identifier key"):
        identifier_key(_config(tmp_path), RUN)
    (tmp_path / "identifier.key").write_text("not a key")
    with pytest.raises(PartyRefusedError, match="identifier key unavailable"):
        identifier_key(_config(tmp_path, identifier_key=tmp_path / "identifier.key"), RUN)
