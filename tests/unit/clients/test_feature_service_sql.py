"""A host's feature service reading its table from SQL (SQLAlchemy URL + table + key column):
the same answers as from its CSV, on a real SQLite database, and the table's current rows."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from clients.feature_service import FeatureServiceError, HostScorer, ServiceSettings, load_settings
from fedrisk.federation.online_scoring import ScoreRequest
from tests.support.feature_hosts import CUSTOMERS, MODEL_ID, HostServices, write_hosts


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> HostServices:
    return write_hosts(tmp_path_factory.mktemp("hosts"))


def _sql_settings(hosts: HostServices, db: Path, **extra: object) -> ServiceSettings:
    """The shop's settings with its table in SQLite instead of its CSV."""
    with sqlite3.connect(db) as connection:
        hosts.frames["shop"].to_sql("shop_customers", connection, index=False)
    csv = load_settings(hosts.root / "shop" / "serve.json")
    return csv.model_copy(
        update={
            "data": None,
            "sql_url": SecretStr(f"sqlite:///{db}"),
            "sql_table": "shop_customers",
            **extra,
        }
    )


def _ask(scorer: HostScorer, customer: str, hosts: HostServices) -> tuple[str, float]:
    answer = scorer.answer(
        ScoreRequest(
            request_id=uuid.uuid4().hex,
            customer=hosts.key.keyed_hash(customer, kind="opaque"),
            model_id=MODEL_ID,
        )
    )
    return answer.status, answer.score - scorer.masks.mask(  # type: ignore[union-attr]
        1, label=f"serve/{MODEL_ID}/{answer.request_id}"
    )[0]


def test_a_sql_table_gives_the_same_answers_as_the_csv(hosts: HostServices, tmp_path: Path) -> None:
    from_sql = HostScorer(_sql_settings(hosts, tmp_path / "shop.db"))
    from_csv = HostScorer(load_settings(hosts.root / "shop" / "serve.json"))

    for customer in CUSTOMERS:
        status, score = _ask(from_sql, customer, hosts)

        assert status == _ask(from_csv, customer, hosts)[0]
        # masks are large: their cancellation leaves ~1e-8
        assert score == pytest.approx(hosts.plain_part("shop", customer), abs=1e-6)


def test_the_sql_table_is_read_again_after_the_refresh_interval(
    hosts: HostServices, tmp_path: Path
) -> None:
    db = tmp_path / "shop.db"
    scorer = HostScorer(_sql_settings(hosts, db, sql_refresh_seconds=0.0))
    assert _ask(scorer, "C9999", hosts)[0] == "unknown"
    newcomer = hosts.frames["shop"].iloc[[0]].assign(customer_id="C9999")
    with sqlite3.connect(db) as connection:
        newcomer.to_sql("shop_customers", connection, index=False, if_exists="append")

    assert _ask(scorer, "C9999", hosts)[0] == "known"


def test_a_missing_table_or_two_sources_are_refused(hosts: HostServices, tmp_path: Path) -> None:
    settings = _sql_settings(hosts, tmp_path / "shop.db")
    with pytest.raises(FeatureServiceError, match="sql_table nowhere must be readable"):
        HostScorer(settings.model_copy(update={"sql_table": "nowhere"}))
    both = {**settings.model_dump(), "data": hosts.root / "shop" / "data.csv"}
    with pytest.raises(ValidationError, match="must be given once"):
        ServiceSettings.model_validate(both)
    with pytest.raises(ValidationError, match="sql_table"):
        ServiceSettings.model_validate({**settings.model_dump(), "sql_table": "x; DROP TABLE y"})
