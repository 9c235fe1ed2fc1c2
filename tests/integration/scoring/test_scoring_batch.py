"""Batch scoring: CSV and Parquet uploads streamed back as scored CSV, through a real server."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrisk.decisions.lifecycle import (
    ApplicationPolicy,
    BehaviourAction,
    BehaviourPolicy,
    BehaviourSignals,
    LimitBand,
    decide_application,
    decide_behaviour,
    load_policy,
)
from fedrisk.decisions.scorecard import ScorecardScaling
from fedrisk.ml.inference import NumpyScorer
from server.scoring.batch import behaviour_band, decide_application_batch
from server.scoring.registry import ModelRegistry
from server.scoring.service import OUTCOME
from tests.support.artifacts import TrainedModel, build_registry
from tests.support.scoring import ScoringServer, server_at

pytestmark = pytest.mark.integration


def frame(trained: TrainedModel, rows: int) -> pd.DataFrame:
    sample = trained.sample[[trained.schema.id_column, *trained.schema.feature_names]]
    reps = -(-rows // len(sample))
    out = pd.concat([sample] * reps, ignore_index=True).iloc[:rows].copy()
    out[trained.schema.id_column] = np.arange(1, rows + 1)
    return out


def expected_pd(trained: TrainedModel, data: pd.DataFrame) -> np.ndarray:
    from fedrisk.ml.features import Preprocessor

    pre = Preprocessor.from_dict(trained.preprocessing)
    return NumpyScorer(trained.spec, np.asarray(trained.weights)).predict_proba(pre.transform(data))


def read_csv(content: bytes) -> pd.DataFrame:
    return pd.read_csv(
        io.BytesIO(content), dtype={"error": "string", "decision": "string", "price_tier": "string"}
    )


def test_csv_upload_is_scored_row_by_row(
    shared_server: ScoringServer, trained: TrainedModel
) -> None:
    # arrange
    data = frame(trained, 3000)
    body = data.to_csv(index=False).encode()

    # act
    with shared_server.client(timeout=60) as client:
        response = client.post(
            "/v1/batch/application", content=body, headers={"content-type": "text/csv"}
        )

    # assert
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["x-model-id"] == "acard-v1"
    out = read_csv(response.content)
    assert len(out) == 3000
    assert list(out["customer_id"]) == list(range(1, 3001))
    np.testing.assert_allclose(out["pd"].to_numpy(), expected_pd(trained, data), rtol=1e-6)
    assert out["error"].isna().all()
    policy = load_policy().application
    for i in (0, 17, 999):
        one = decide_application(float(out["pd"][i]), float(out["score"][i]), policy=policy)
        assert out["decision"][i] == OUTCOME[one.decision]
        assert (one.credit_limit is None and np.isnan(out["credit_limit"][i])) or out[
            "credit_limit"
        ][i] == one.credit_limit


def test_parquet_and_multipart_uploads_with_reasons(
    shared_server: ScoringServer, trained: TrainedModel
) -> None:
    # arrange
    data = frame(trained, 500)
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(data, preserve_index=False), sink)
    parquet = sink.getvalue()

    # act
    with shared_server.client(timeout=60) as client:
        raw = client.post(
            "/v1/batch/behaviour",
            content=parquet,
            headers={"content-type": "application/vnd.apache.parquet"},
        )
        multipart = client.post(
            "/v1/batch/collection",
            params={"reasons": "true"},
            files={"file": ("rows.parquet", parquet, "application/octet-stream")},
        )

    # assert
    assert raw.status_code == 200, raw.text
    behaviour = read_csv(raw.content)
    assert len(behaviour) == 500 and set(behaviour["risk_band"]) <= {
        "raise_eligible",
        "keep",
        "cut",
    }
    assert multipart.status_code == 200, multipart.text
    collection = read_csv(multipart.content)
    np.testing.assert_allclose(collection["recovery_probability"] + collection["pd"], 1.0)
    # every row carries exactly the ranker's reasons (a row better than the baseline on every
    # feature has none), and every reason is a code
    registry = ModelRegistry(shared_server.registry)
    registry.load_all(only=["ccard-v1"])
    model = registry.models["ccard-v1"]
    expected = [[r.code for r in rr] for rr in model.reasons(model.score_frame(data))]
    for i in range(4):
        got = [None if pd.isna(v) else v for v in collection[f"reason_{i + 1}"]]
        assert got == [codes[i] if i < len(codes) else None for codes in expected]
    assert all(code.startswith("RC-") for codes in expected for code in codes)
    assert sum(1 for codes in expected if codes) > 0.9 * len(expected)


def test_bad_rows_get_an_error_and_the_rest_is_scored(
    shared_server: ScoringServer, trained: TrainedModel
) -> None:
    # arrange
    data = frame(trained, 6).astype(object)
    data.loc[1, "age"] = 500  # out of range
    data.loc[2, "income"] = "lots"  # not a number
    data.loc[3, "region"] = "atlantis"  # unknown category
    data.loc[4, "age"] = None  # required
    lines = data.to_csv(index=False).splitlines()
    lines.insert(3, lines[3] + ",extra,fields")  # a malformed line
    body = ("\n".join(lines) + "\n").encode()

    # act
    with shared_server.client(timeout=60) as client:
        response = client.post(
            "/v1/batch/application", content=body, headers={"content-type": "text/csv"}
        )

    # assert
    assert response.status_code == 200, response.text
    out = read_csv(response.content)
    assert len(out) == 7
    errors = list(out["error"].fillna(""))
    assert errors[0] == "" and errors[5] == ""
    assert "age must be in" in errors[1]
    assert "income must be a number" in errors[2]
    assert "region must be one of" in errors[3]
    assert "age is required" in errors[4]
    assert "malformed CSV line" in errors[6]
    assert out["pd"].notna().sum() == 2


def test_upload_problems_are_4xx(shared_server: ScoringServer, trained: TrainedModel) -> None:
    # arrange
    data = frame(trained, 5)

    # act
    with shared_server.client(timeout=60) as client:
        missing = client.post(
            "/v1/batch/application",
            content=data.drop(columns=["age"]).to_csv(index=False).encode(),
            headers={"content-type": "text/csv"},
        )
        not_parquet = client.post(
            "/v1/batch/application",
            content=b"not parquet at all",
            headers={"content-type": "application/vnd.apache.parquet"},
        )
        wrong_type = client.post(
            "/v1/batch/application", content=b"{}", headers={"content-type": "application/json"}
        )
        empty = client.post(
            "/v1/batch/application", content=b"", headers={"content-type": "text/csv"}
        )
        header_only = client.post(
            "/v1/batch/application",
            content=(",".join(data.columns) + "\n").encode(),
            headers={"content-type": "text/csv"},
        )
        unknown = client.post(
            "/v1/batch/mortgage", content=b"a\n1\n", headers={"content-type": "text/csv"}
        )

    # assert
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "age"]
    assert not_parquet.status_code == 422
    assert wrong_type.status_code == 422 and wrong_type.json()["detail"][0]["loc"] == [
        "header",
        "content-type",
    ]
    assert empty.status_code == 422
    assert header_only.status_code == 200 and header_only.text.startswith(
        "row,customer_id,pd,score"
    )
    assert len(header_only.text.strip().splitlines()) == 1
    assert unknown.status_code == 404


def test_batch_jobs_are_audited_and_uploads_over_the_limit_get_413(
    tmp_path: Path, trained: TrainedModel
) -> None:
    # arrange
    registry = tmp_path / "registry"
    build_registry(registry, {"acard-v1": "application"})
    small = frame(trained, 50).to_csv(index=False).encode()
    large = frame(trained, 2000).to_csv(index=False).encode()

    # act
    with (
        server_at(tmp_path, registry, args=("--max-upload-bytes", "100000")) as server,
        server.client(timeout=60) as client,
    ):
        ok = client.post(
            "/v1/batch/application", content=small, headers={"content-type": "text/csv"}
        )
        too_big = client.post(
            "/v1/batch/application", content=large, headers={"content-type": "text/csv"}
        )
        chunked = client.post(
            "/v1/batch/application",
            content=iter([large[i : i + 65536] for i in range(0, len(large), 65536)]),
            headers={"content-type": "text/csv"},
        )
        audit = client.get("/v1/audit/verify").json()
        jobs = (
            sqlite3.connect(server.db_url.removeprefix("sqlite:///"))
            .execute("SELECT rows, input_sha256 FROM batch_jobs")
            .fetchall()
        )

    # assert
    assert ok.status_code == 200 and len(ok.text.strip().splitlines()) == 51
    assert too_big.status_code == 413 and chunked.status_code == 413
    assert audit["ok"] is True and audit["records"] >= 2
    assert jobs[0][0] == 50 and jobs[0][1] == ok.headers["x-input-sha256"]


def test_vectorised_application_policy_matches_the_per_applicant_decision() -> None:
    # arrange
    policy = load_policy().application
    scaling = ScorecardScaling()
    pds = np.concatenate([np.linspace(1e-4, 0.6, 400), [0.08, 0.25, 0.0800001]])
    scores = scaling.score(pds)

    # act
    decisions, limits, tiers, _aprs = decide_application_batch(pds, scores, policy=policy)

    # assert
    for i, (p, s) in enumerate(zip(pds, scores, strict=True)):
        one = decide_application(float(p), float(s), policy=policy)
        assert decisions[i] == OUTCOME[one.decision], (p, s)
        assert (one.credit_limit is None and np.isnan(limits[i])) or limits[i] == one.credit_limit
        assert tiers[i] == one.price_tier


# ------------------------------------------------------------ vectorised == per-applicant

PD = st.floats(0.0, 1.0)
SCORE = st.floats(300.0, 900.0)


@st.composite
def cutoff_pair(draw: st.DrawFn, basis: str) -> tuple[float, float]:
    """(favourable, unfavourable) cut-offs valid for ``basis``."""
    if basis == "pd":
        low, high = sorted(draw(st.lists(st.floats(0.001, 0.999), min_size=2, max_size=2)))
        return (low, high) if low < high else (low, min(high + 0.0005, 0.9995))
    low, high = sorted(draw(st.lists(st.floats(400.0, 800.0), min_size=2, max_size=2)))
    return (high, low) if low < high else (high + 1.0, low)


@st.composite
def rows_at_cutoffs(
    draw: st.DrawFn, cutoffs: tuple[float, ...], basis: str
) -> tuple[np.ndarray, np.ndarray]:
    """Random PDs and scores, some exactly at a cut-off (where the rules are easiest to break)."""
    n = draw(st.integers(1, 60))
    pds = np.array(draw(st.lists(PD, min_size=n, max_size=n)))
    scores = np.array(draw(st.lists(SCORE, min_size=n, max_size=n)))
    edges = np.array([c for c in cutoffs if (basis == "pd") == (0 <= c <= 1)])
    if edges.size:
        at = draw(st.lists(st.integers(0, n - 1), max_size=n))
        picks = draw(st.lists(st.integers(0, edges.size - 1), min_size=len(at), max_size=len(at)))
        target = pds if basis == "pd" else scores
        target[at] = edges[picks]
    return pds, scores


@st.composite
def application_case(
    draw: st.DrawFn,
) -> tuple[ApplicationPolicy, np.ndarray, np.ndarray]:
    basis = draw(st.sampled_from(["pd", "score"]))
    approve, decline = draw(cutoff_pair(basis))
    mins = sorted(set(draw(st.lists(st.integers(400, 800), min_size=1, max_size=5))))
    bands = tuple(
        LimitBand(min_score=m, limit=1000.0 * (i + 1), price_tier=f"T{i}", apr=0.3 - 0.02 * i)
        for i, m in enumerate(mins)
    )
    policy = ApplicationPolicy(
        basis=basis, approve_cutoff=approve, decline_cutoff=decline, limit_bands=bands
    )
    pds, scores = draw(rows_at_cutoffs((approve, decline, *mins), basis))
    if basis == "pd":  # band edges are scores: put some rows on them too
        scores[: len(mins)] = np.resize(np.asarray(mins, dtype=float), min(len(mins), len(scores)))
    return policy, pds, scores


@settings(max_examples=300, deadline=None)
@given(case=application_case())
def test_application_batch_agrees_with_the_per_applicant_decision(
    case: tuple[ApplicationPolicy, np.ndarray, np.ndarray],
) -> None:
    # arrange
    policy, pds, scores = case

    # act
    decisions, limits, tiers, aprs = decide_application_batch(pds, scores, policy=policy)

    # assert
    for i, (p, s) in enumerate(zip(pds, scores, strict=True)):
        one = decide_application(float(p), float(s), policy=policy)
        assert decisions[i] == OUTCOME[one.decision], (p, s)
        assert tiers[i] == one.price_tier
        for got, want in ((limits[i], one.credit_limit), (aprs[i], one.apr)):
            assert (want is None and np.isnan(got)) or got == want


@st.composite
def behaviour_case(draw: st.DrawFn) -> tuple[BehaviourPolicy, np.ndarray, np.ndarray]:
    basis = draw(st.sampled_from(["pd", "score"]))
    raise_at, cut_at = draw(cutoff_pair(basis))
    policy = BehaviourPolicy(basis=basis, raise_cutoff=raise_at, cut_cutoff=cut_at)
    pds, scores = draw(rows_at_cutoffs((raise_at, cut_at), basis))
    return policy, pds, scores


@settings(max_examples=300, deadline=None)
@given(case=behaviour_case())
def test_behaviour_band_agrees_with_the_per_account_decision(
    case: tuple[BehaviourPolicy, np.ndarray, np.ndarray],
) -> None:
    # arrange: an account with no early warnings and room to raise, so the cut-offs alone decide
    policy, pds, scores = case
    band_of = {
        BehaviourAction.RAISE: "raise_eligible",
        BehaviourAction.KEEP: "keep",
        BehaviourAction.CUT: "cut",
    }

    # act
    bands = behaviour_band(pds, scores, policy=policy)

    # assert
    for i, (p, s) in enumerate(zip(pds, scores, strict=True)):
        one = decide_behaviour(
            float(p), float(s), current_limit=1000.0, signals=BehaviourSignals(), policy=policy
        )
        assert bands[i] == band_of[one.action], (p, s)
