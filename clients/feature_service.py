"""A host's online feature service (``fedrisk party serve``): its partial score for one customer.

The lender scoring an application of a vertical model asks each host for its part of the score.
The host answers from its own current table (CSV or Parquet, re-read when the file changes; or a
SQL table, re-read every ``sql_refresh_seconds``) with
its signed model part (checked against the federation's trusted keys at start), over mutual TLS
against the federation's CA.

- The customer crosses the wire only as a keyed hash (HMAC-SHA256 under the federation's
  identifier key, :meth:`IdentifierKey.keyed_hash`), never as a raw identifier.
- With two or more hosts each host adds its share of a zero-sum pairwise mask (the training run's
  X25519 keys, :class:`secure_agg.vertical.PairwiseMasks`) keyed by the lender's request id, so
  the lender learns only the sum of the host parts. A request id is answered once: reusing it
  would let the lender subtract two masked answers.
- A customer the host does not know gets an explicit ``unknown`` answer; with masking it still
  carries the host's mask share (its score part is 0), so the other hosts' masks cancel.
- The reason is a code naming the host's top risk-raising feature group and the host's own text
  for it, never a raw value.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from fedrisk.errors import FedRiskError
from fedrisk.federation.identifiers import IdentifierKey, IdentifierKind, keyed_hashes
from fedrisk.federation.online_scoring import (
    KEEP_ALIVE_SECONDS,
    PARTIAL_SCORE_PATH,
    PARTIAL_SCORES_PATH,
    CodedReason,
    ScoreAnswer,
    ScoreBatch,
    ScoreBatchAnswer,
    ScoreRefusal,
    ScoreRequest,
)
from fedrisk.ml.vertical import KNOWN_COLUMN, PartyPreprocessor
from fedrisk.release.artifact import load_trusted_keys
from fedrisk.release.vertical import VerticalPart, read_part
from secure_agg.vertical import PairwiseMasks, pairwise_masks

if TYPE_CHECKING:
    from sqlalchemy import Engine

_Body = TypeVar("_Body", ScoreRequest, ScoreBatch)

OWN_X25519 = "own.x25519"
SQL_TABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$"
"""``table`` or ``schema.table``: a plain identifier, never SQL."""
SEEN_REQUESTS = 100_000
"""How many request ids a service remembers to refuse a reuse (bounded memory)."""


class FeatureServiceError(FedRiskError, ValueError):
    """The feature service's settings, part or data are unusable, or a request is refused."""


class ServiceSettings(BaseModel):
    """A host's ``party serve`` settings file (JSON; paths only, nothing secret in it but
    possibly a database URL's password, masked in reprs).

    The host's table is either ``data`` (a CSV or Parquet file) or ``sql_url`` + ``sql_table``
    (any database SQLAlchemy reaches; ``id_column`` is its key column).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    part: Path
    """The host's released part (``<release_dir>/<model_id>/<party>``)."""
    trusted_keys: Path
    """Directory of the parties' Ed25519 public keys (``<party>.pub``)."""
    data: Path | None = None
    sql_url: SecretStr | None = None
    """SQLAlchemy URL of the database holding the host's table (instead of ``data``)."""
    sql_table: str | None = Field(default=None, pattern=SQL_TABLE_PATTERN)
    """The table (``name`` or ``schema.name``) read from ``sql_url``."""
    sql_refresh_seconds: float = Field(default=60.0, ge=0.0, le=86_400.0)
    """A SQL table is read again at most this long after the last read (0: every request)."""
    id_column: str
    id_kind: IdentifierKind = "opaque"
    default_country_code: str = "86"
    identifier_key: Path
    masks_dir: Path | None = None
    """The training run's pairwise keys: ``own.x25519`` and each other host's ``<name>.x25519``."""
    reasons: dict[str, str] = Field(default_factory=dict)
    """The host's own reason text per feature group (raw column name)."""
    certificate: Path
    private_key: Path
    ca_certificate: Path

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.data is None) == (self.sql_url is None):
            raise ValueError(
                "the host's table must be given once, as data (a CSV or Parquet file) or as "
                f"sql_url + sql_table; got data={self.data}, sql_url "
                f"{'set' if self.sql_url is not None else 'unset'}"
            )
        if (self.sql_url is None) != (self.sql_table is None):
            raise ValueError(f"sql_url and sql_table must be set together; got {self.sql_table=}")
        return self


@dataclass(frozen=True)
class _Table:
    version: int
    """The file's mtime (ns) for a file, the monotonic time (ns) of the read for a SQL table."""
    rows: dict[str, int]
    scores: npt.NDArray[np.float64]
    top: list[str | None]


def _group(column: str) -> str | None:
    """The raw feature a matrix column comes from (``plan=gold`` -> ``plan``)."""
    if column == KNOWN_COLUMN:
        return None
    return column.split("=", 1)[0]


class HostScorer:
    """Answers :class:`ScoreRequest` s from the host's table and its verified part."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.part: VerticalPart = read_part(
            settings.part, trusted_keys=load_trusted_keys(settings.trusted_keys)
        )
        if self.part.role != "host":
            raise FeatureServiceError(
                f"part must be a host's; got the {self.part.role}'s part of {self.part.party}"
            )
        self.key = IdentifierKey.load(settings.identifier_key)
        self.masks = self._masks()
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._engine: Engine | None = None
        self._table = self._read()

    def _masks(self) -> PairwiseMasks | None:
        folder = self.settings.masks_dir
        if folder is None:
            return None
        peers = {
            p.stem: p.read_bytes() for p in sorted(folder.glob("*.x25519")) if p.name != OWN_X25519
        }
        if not peers:
            return None
        return pairwise_masks(self.part.party, (folder / OWN_X25519).read_bytes(), peers)

    def _read_file(self, path: Path) -> tuple[int, pd.DataFrame]:
        try:
            mtime = path.stat().st_mtime_ns
            if path.suffix == ".parquet":
                frame = pd.read_parquet(path)
            else:
                frame = pd.read_csv(path, dtype={self.settings.id_column: str})
        except (OSError, ValueError) as e:
            raise FeatureServiceError(f"data {path} must be a readable CSV or Parquet: {e}") from e
        return mtime, frame

    def _read_sql(self, url: str, table: str) -> tuple[int, pd.DataFrame]:
        import sqlalchemy as sa

        schema, _, name = table.rpartition(".")
        started = time.monotonic_ns()
        try:
            if self._engine is None:
                self._engine = sa.create_engine(url)
            selected = sa.Table(
                name, sa.MetaData(), schema=schema or None, autoload_with=self._engine
            )
            with self._engine.connect() as connection:
                frame = pd.read_sql(sa.select(selected), connection)
        except (sa.exc.SQLAlchemyError, ValueError) as e:
            where = self._engine.url.render_as_string() if self._engine is not None else "?"
            raise FeatureServiceError(
                f"sql_table {table} must be readable from {where}: {e}"
            ) from e
        return started, frame

    def _read(self) -> _Table:
        if self.settings.data is not None:
            version, frame = self._read_file(self.settings.data)
            source = self.settings.data.name
        else:
            assert self.settings.sql_url is not None and self.settings.sql_table is not None
            version, frame = self._read_sql(
                self.settings.sql_url.get_secret_value(), self.settings.sql_table
            )
            source = f"table {self.settings.sql_table}"
        if self.settings.id_column not in frame.columns:
            raise FeatureServiceError(
                f"id column must be a column of {source}; got {self.settings.id_column!r}"
            )
        hashes = keyed_hashes(
            [str(v) for v in frame[self.settings.id_column].tolist()],
            self.settings.id_kind,
            key=self.key,
            default_country_code=self.settings.default_country_code,
        )
        prep = PartyPreprocessor.from_dict(self.part.preprocessing)
        matrix = prep.transform(frame, np.ones(len(frame), dtype=bool))
        contributions = matrix * np.asarray(self.part.weights)
        groups = sorted({g for c in self.part.columns if (g := _group(c)) is not None})
        by_group = np.zeros((len(frame), len(groups)))
        for j, column in enumerate(self.part.columns):
            group = _group(column)
            if group is not None:
                by_group[:, groups.index(group)] += contributions[:, j]
        best = by_group.argmax(axis=1) if groups else np.zeros(len(frame), dtype=int)
        top = [
            groups[b] if groups and by_group[i, b] > 0 else None
            for i, b in enumerate(best.tolist())
        ]
        return _Table(
            version=version,
            rows={h: i for i, h in enumerate(hashes)},
            scores=contributions.sum(axis=1),
            top=top,
        )

    def _current(self) -> _Table:
        """The table, re-read when the file changed since, or a SQL table after
        ``sql_refresh_seconds`` (the host's *current* data)."""
        if self.settings.data is None:
            age = (time.monotonic_ns() - self._table.version) / 1e9
            if age >= self.settings.sql_refresh_seconds:
                self._table = self._read()
            return self._table
        try:
            mtime = self.settings.data.stat().st_mtime_ns
        except OSError:
            return self._table
        if mtime != self._table.version:
            self._table = self._read()
        return self._table

    def answer(self, request: ScoreRequest) -> ScoreAnswer:
        """This host's (masked) part for the customer, or ``unknown``.

        Raises
        ------
        FeatureServiceError
            If the model is not this host's or the request id was answered before.
        """
        if request.model_id != self.part.model_id:
            raise FeatureServiceError(
                f"model_id must be {self.part.model_id!r}; got {request.model_id!r}"
            )
        with self._lock:
            if request.request_id in self._seen:
                raise FeatureServiceError(
                    f"request_id must be fresh; got {request.request_id!r} again"
                )
            self._seen[request.request_id] = None
            if len(self._seen) > SEEN_REQUESTS:
                self._seen.popitem(last=False)
            table = self._current()
        row = table.rows.get(request.customer)
        score = float(table.scores[row]) if row is not None else 0.0
        if self.masks is not None:
            label = f"serve/{request.model_id}/{request.request_id}"
            score += float(self.masks.mask(1, label=label)[0])
        reason = None
        group = table.top[row] if row is not None else None
        if group is not None:
            text = self.settings.reasons.get(group, f"{group} (reported by {self.part.party})")
            reason = CodedReason(code=f"{self.part.party}.{group}", text=text)
        return ScoreAnswer(
            party=self.part.party,
            model_id=self.part.model_id,
            request_id=request.request_id,
            status="known" if row is not None else "unknown",
            score=score,
            masked=self.masks is not None,
            reason=reason,
        )


def create_app(settings: ServiceSettings) -> object:
    """The FastAPI app: ``POST /v1/partial-score`` (one question), ``POST /v1/partial-scores``
    (a batch of questions, each answered as if asked alone) and ``GET /healthz``."""
    from fastapi import FastAPI, Request, Response
    from fastapi.responses import JSONResponse

    scorer = HostScorer(settings)
    app = FastAPI(title=f"fedrisk feature service of {scorer.part.party}")

    # Async handlers: an answer is a dict lookup and a few floats, cheaper than a hop through
    # the thread pool.
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"party": scorer.part.party, "model_id": scorer.part.model_id}

    # A plain Starlette route, its body parsed and its answer written by pydantic directly:
    # FastAPI's request-model and response-model paths (dependency solving, validating the
    # answer again, ``jsonable_encoder``) cost this service about half its CPU per answer.
    async def parsed(request: Request, kind: type[_Body]) -> _Body | Response:
        """The request's JSON body as ``kind``, or the 422 answer (no input echoed back)."""
        try:
            return kind.model_validate_json(await request.body())
        except ValidationError as e:
            detail = e.errors(include_url=False, include_context=False, include_input=False)
            return JSONResponse(status_code=422, content={"detail": detail})

    async def partial_score(request: Request) -> Response:
        asked = await parsed(request, ScoreRequest)
        if isinstance(asked, Response):
            return asked
        try:
            answer = scorer.answer(asked)
        except FeatureServiceError as e:
            return JSONResponse(status_code=409, content={"detail": str(e)})
        return Response(answer.model_dump_json(), media_type="application/json")

    async def partial_scores(request: Request) -> Response:
        batch = await parsed(request, ScoreBatch)
        if isinstance(batch, Response):
            return batch
        answers: list[ScoreAnswer | ScoreRefusal] = []
        for asked in batch.requests:
            try:
                answers.append(scorer.answer(asked))
            except FeatureServiceError as e:
                answers.append(ScoreRefusal(request_id=asked.request_id, detail=str(e)))
        return Response(
            ScoreBatchAnswer(answers=answers).model_dump_json(), media_type="application/json"
        )

    app.router.add_route(PARTIAL_SCORE_PATH, partial_score, methods=["POST"])
    app.router.add_route(PARTIAL_SCORES_PATH, partial_scores, methods=["POST"])

    return app


def serve(settings: ServiceSettings, *, host: str, port: int) -> None:
    """Run the service with mutual TLS: clients must present a certificate of the federation's
    CA."""
    import ssl

    import uvicorn

    uvicorn.run(
        create_app(settings),  # type: ignore[arg-type]
        host=host,
        port=port,
        ssl_certfile=str(settings.certificate),
        ssl_keyfile=str(settings.private_key),
        ssl_ca_certs=str(settings.ca_certificate),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
        log_level="warning",
        # Keep-alive connections of the lender must not hold a stopping service for long.
        timeout_graceful_shutdown=1,
        # The lender closes idle connections first (it keeps them KEEP_ALIVE_SECONDS).
        timeout_keep_alive=int(KEEP_ALIVE_SECONDS) + 30,
    )


def load_settings(path: Path) -> ServiceSettings:
    """Read a settings file; relative paths are taken relative to its folder."""
    try:
        raw = ServiceSettings.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FeatureServiceError(f"service settings {path} must be valid: {e}") from e
    base = path.parent
    updates = {
        name: base / value
        for name, value in raw.model_dump().items()
        if isinstance(value, Path) and not value.is_absolute()
    }
    return raw.model_copy(update=updates)
