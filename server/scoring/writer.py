"""Group-commit writer: decisions and their audit records are appended in shared transactions.

Request handlers hand a finished decision to :meth:`GroupCommitWriter.submit_decision` and await it;
the writer takes whatever is queued (up to ``max_batch``), writes every decision row, its audit
record, fraud links and review item in ONE transaction, commits, and only then resolves the
waiting requests. So a response is sent only for a committed decision, and a crash before the
commit leaves none of the batch behind (no half-written decision, no acknowledged-but-lost one).

Notes
-----
The audit chain needs appends in a total order. A single writer (the event loop, or one thread)
gives that order without a lock on the request path; the head row is still locked inside each
transaction (``BEGIN IMMEDIATE`` on SQLite, ``FOR UPDATE`` on PostgreSQL), so the CLI can append
while the service runs.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import JSON, Engine, Table, insert
from sqlalchemy.engine import Connection

from server.scoring.audit import (
    COMPACT,
    DECISION_FIELDS,
    GENESIS_HASH,
    AuditChain,
    audited_transaction,
)
from server.scoring.db.engine import write_connection
from server.scoring.db.rollup import UPSERT_QMARK, add_counts, batch_counts
from server.scoring.db.tables import (
    audit_log,
    decision_feature_bins,
    decisions,
    fraud_links,
    review_items,
)

if TYPE_CHECKING:
    from server.scoring.anchor import AuditAnchor

logger = logging.getLogger(__name__)


class WriterBusyError(RuntimeError):
    """The write queue is full: the caller should answer 503 and let the client retry."""


class WriterClosedError(RuntimeError):
    """The writer has been stopped."""


@dataclass
class DecisionWrite:
    """Everything persisted for one decision; ``row`` has every ``decisions`` column but
    ``audit_seq``."""

    row: dict[str, Any]
    links: list[dict[str, Any]] = field(default_factory=list)
    review: dict[str, Any] | None = None
    feature_bins: dict[str, int] = field(default_factory=dict)
    """The decision's bin per reference feature (for CSI); the raw values are not stored."""


JobFn = Callable[[Connection, AuditChain], Any]


@dataclass
class _Pending:
    payload: DecisionWrite | JobFn
    loop: asyncio.AbstractEventLoop | None
    future: asyncio.Future[Any] | None
    done: threading.Event | None = None
    result: Any = None
    error: BaseException | None = None


_STOP = object()


Rows = list[dict[str, Any]]


def _collect(chain: AuditChain, items: Sequence[DecisionWrite]) -> tuple[Rows, Rows, Rows, Rows]:
    """Append each decision's audit records; return the rows of decisions, links, reviews and
    feature bins."""
    decision_rows: Rows = []
    link_rows: Rows = []
    review_rows: Rows = []
    bin_rows: Rows = []
    for item in items:
        row = item.row
        payload = {name: row[name] for name in DECISION_FIELDS}
        seq = chain.append("decision", payload, created_at=row["created_at"])
        decision_rows.append({**row, "audit_seq": seq})
        link_rows.extend(item.links)
        bin_rows.extend(
            {"decision_id": row["decision_id"], "feature": name, "bin": b}
            for name, b in item.feature_bins.items()
        )
        if item.review is not None:
            review = item.review
            chain.append(
                "review_queued",
                {
                    "decision_id": row["decision_id"],
                    "kind": review["kind"],
                    "reason": review["reason"],
                },
                created_at=row["created_at"],
            )
            review_rows.append(review)
    return decision_rows, link_rows, review_rows, bin_rows


def write_decisions(
    connection: Connection, chain: AuditChain, items: Sequence[DecisionWrite]
) -> None:
    """Insert decisions with their audit records in the caller's transaction (also used to
    load generated portfolios)."""
    decision_rows, link_rows, review_rows, bin_rows = _collect(chain, items)
    if connection.dialect.name == "sqlite":
        _insert_raw(connection, decisions, decision_rows)
        _insert_raw(connection, fraud_links, link_rows)
        _insert_raw(connection, review_items, review_rows)
        _insert_raw(connection, decision_feature_bins, bin_rows)
    else:
        connection.execute(insert(decisions), decision_rows)
        if link_rows:
            connection.execute(insert(fraud_links), link_rows)
        if review_rows:
            connection.execute(insert(review_items), review_rows)
        if bin_rows:
            connection.execute(insert(decision_feature_bins), bin_rows)
    # the CSI rollup, in the same transaction as the bins it counts
    add_counts(connection, batch_counts((item.row, item.feature_bins) for item in items))
    chain.flush()


_JSON_COLUMNS = {
    table.name: frozenset(c.name for c in table.c if isinstance(c.type, JSON))
    for table in (decisions, fraud_links, review_items, decision_feature_bins)
}


def _insert_raw(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """executemany with plain tuples (SQLite): skips SQLAlchemy's per-statement compilation and
    per-row bind processing, which cost more than the insert itself on the request path."""
    if not rows:
        return
    json_columns = _JSON_COLUMNS[table.name]
    names = [c.name for c in table.c if c.name in rows[0]]
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    params = [
        tuple(COMPACT.encode(r[n]) if n in json_columns else r[n] for n in names) for r in rows
    ]
    connection.exec_driver_sql(sql, params)


class _SqliteBatchWriter:
    """Commits decision batches on a plain sqlite3 connection.

    On the request path SQLAlchemy's per-statement work (statement construction, cache keys,
    events, result set-up) cost about 0.7 ms per transaction, several times SQLite's own work;
    this path issues the same statements through the driver directly. The SQL and the
    audit hashing are the ones the SQLAlchemy path uses, so both produce identical rows.
    """

    def __init__(self, database: str, *, busy_timeout_ms: int) -> None:
        self._connection = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        cursor = self._connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it
        cursor.close()

    def write(self, items: Sequence[DecisionWrite]) -> AuditChain:
        """Commit ``items``; returns the chain as committed (for the checkpoint signer)."""
        cursor = self._connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            head = cursor.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
            chain = (
                AuditChain(connection=None, seq=0, hash=GENESIS_HASH, _has_head=False)
                if head is None
                else AuditChain(connection=None, seq=int(head[0]), hash=str(head[1]))
            )
            decision_rows, link_rows, review_rows, bin_rows = _collect(chain, items)
            _executemany(cursor, decisions, decision_rows)
            _executemany(cursor, fraud_links, link_rows)
            _executemany(cursor, review_items, review_rows)
            _executemany(cursor, decision_feature_bins, bin_rows)
            counts = batch_counts((item.row, item.feature_bins) for item in items)
            if counts:
                cursor.executemany(UPSERT_QMARK, counts)
            _executemany(cursor, audit_log, chain.pending)
            if chain.has_head:
                cursor.execute(
                    "UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (chain.seq, chain.hash)
                )
            else:
                cursor.execute(
                    "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?)",
                    (chain.seq, chain.hash),
                )
            cursor.execute("COMMIT")
            return chain
        except BaseException:
            if self._connection.in_transaction:
                cursor.execute("ROLLBACK")
            raise
        finally:
            cursor.close()

    def close(self) -> None:
        self._connection.close()


def _executemany(cursor: sqlite3.Cursor, table: Table, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    json_columns = _JSON_COLUMNS.get(table.name, frozenset())
    names = [c.name for c in table.c if c.name in rows[0]]
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    cursor.executemany(
        sql,
        [tuple(COMPACT.encode(r[n]) if n in json_columns else r[n] for n in names) for r in rows],
    )


class _Checkpointer:
    """Moves SQLite's WAL back into the database file on a background thread.

    The writer connection has auto-checkpoint off: a checkpoint copies ~1000 pages and fsyncs,
    which inside a commit on the event loop stalled every request for tens of milliseconds.
    PASSIVE checkpoints never block the writer; the WAL is truncated when the service stops.
    """

    def __init__(self, engine: Engine, *, interval: float = 0.5) -> None:
        self._engine = engine
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
            self._thread.start()

    def _checkpoint(self, mode: str) -> None:
        with self._engine.connect() as connection:
            connection.exec_driver_sql(f"PRAGMA wal_checkpoint({mode})")
            connection.rollback()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._checkpoint("PASSIVE")
            except Exception:  # a busy or locked database: try again next round
                logger.debug("WAL checkpoint failed", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
            try:
                self._checkpoint("TRUNCATE")
            except Exception:  # best effort at shutdown
                logger.debug("final WAL checkpoint failed", exc_info=True)


class GroupCommitWriter:
    """Group-commit writer with a bounded queue, inline (SQLite) or on its own thread (PostgreSQL).

    Parameters
    ----------
    engine
        Database engine.
    mode
        ``inline``: the commit runs on the event loop, once per loop turn, for every decision
        that became ready in that turn (SQLite: a local commit takes well under a millisecond, and
        staying on one thread avoids a GIL hand-off per statement, which cost several ms per
        commit under load). ``thread``: a writer thread does the commits (network databases,
        where a round trip must not block the loop). Default: inline for SQLite.
    max_queue
        Pending writes allowed before :class:`WriterBusyError` (back-pressure, HTTP 503).
    max_batch
        Decisions committed together at most.
    on_failure
        Called (on the event loop) with a decision that could not be committed, so in-memory
        state tied to it can be undone or retried.
    busy_timeout_ms
        SQLite only: how long an inline commit waits for another process's write lock.
    anchor
        Signs checkpoints of the chain head: every committed transaction's head is handed to
        it (never the head read back from the database); closed after the last commit.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        mode: Literal["inline", "thread"] | None = None,
        max_queue: int = 10_000,
        max_batch: int = 512,
        on_failure: Callable[[DecisionWrite], None] | None = None,
        busy_timeout_ms: int = 2000,
        anchor: AuditAnchor | None = None,
    ) -> None:
        self._engine = engine
        self._anchor = anchor
        sqlite = engine.dialect.name == "sqlite"
        self.mode: Literal["inline", "thread"] = mode or ("inline" if sqlite else "thread")
        self._max_queue = max_queue
        self._max_batch = max_batch
        self._on_failure = on_failure
        self._busy_timeout_ms = busy_timeout_ms if sqlite else None
        self._connection: Connection | None = None
        self._closed = False
        self.commits = 0
        self.committed_decisions = 0
        self._inline: list[_Pending] = []
        self._scheduled = False
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._checkpointer = _Checkpointer(engine) if sqlite else None
        self._raw: _SqliteBatchWriter | None = None
        database = engine.url.database
        if sqlite and self.mode == "inline" and database and database != ":memory:":
            self._raw = _SqliteBatchWriter(database, busy_timeout_ms=busy_timeout_ms)
            assert self._checkpointer is not None
            self._checkpointer.start()
        if self.mode == "thread":
            self._thread = threading.Thread(target=self._run, name="scoring-writer", daemon=True)
            self._thread.start()

    # -- submission -------------------------------------------------------------------------
    def _enqueue(self, pending: _Pending) -> None:
        if self._closed:
            raise WriterClosedError("the decision writer is stopped")
        if self.mode == "inline":
            if len(self._inline) >= self._max_queue:
                raise WriterBusyError("decision write queue is full; retry later")
            self._inline.append(pending)
            if not self._scheduled:
                self._scheduled = True
                assert pending.loop is not None
                pending.loop.call_soon(self._flush_inline)
            return
        try:
            self._queue.put_nowait(pending)
        except queue.Full as e:
            raise WriterBusyError("decision write queue is full; retry later") from e

    async def submit_decision(self, item: DecisionWrite) -> None:
        """Persist one decision; returns after its transaction committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._enqueue(_Pending(item, loop, future))
        await future

    async def run_job(self, fn: JobFn) -> Any:
        """Run ``fn(connection, chain)`` in its own write transaction (after queued writes)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._enqueue(_Pending(fn, loop, future))
        return await future

    def submit_job_nowait(self, fn: JobFn) -> None:
        """Record ``fn`` from any thread without an event loop; a failure is only logged."""
        if self.mode == "inline":
            try:
                self.run_job_sync(fn)
            except Exception:  # best effort by contract: log and carry on
                logger.exception("writer job failed")
            return
        self._enqueue(_Pending(fn, None, None, done=threading.Event()))

    def run_job_sync(self, fn: JobFn, *, timeout: float = 60.0) -> Any:
        """Blocking variant of :meth:`run_job` for code outside the event loop (start-up, CLI).

        Inline mode runs it right here on its own connection: the database's write lock (and
        the locked chain head) orders it with the loop's commits.
        """
        if self._closed:
            raise WriterClosedError("the decision writer is stopped")
        if self.mode == "inline":
            return audited_transaction(self._engine, fn, on_commit=self._observe)
        pending = _Pending(fn, None, None, done=threading.Event())
        self._enqueue(pending)
        assert pending.done is not None
        if not pending.done.wait(timeout):
            raise TimeoutError(f"writer job did not finish within {timeout} s")
        if pending.error is not None:
            raise pending.error
        return pending.result

    @property
    def anchor(self) -> AuditAnchor | None:
        """What signs and exports checkpoints of this writer's chain (None: unanchored)."""
        return self._anchor

    def close(self, *, timeout: float = 30.0) -> None:
        """Write what is queued, then stop."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
        elif self._inline:
            self._flush_inline()
        self._drop_connection()
        if self._raw is not None:
            self._raw.close()
        if self._checkpointer is not None:
            self._checkpointer.stop()
        if self._anchor is not None:
            self._anchor.close()

    @property
    def backlog(self) -> int:
        """Writes waiting to be committed."""
        return len(self._inline) if self.mode == "inline" else self._queue.qsize()

    # -- committing -------------------------------------------------------------------------
    def _observe(self, chain: AuditChain) -> None:
        if self._anchor is not None:
            self._anchor.observe(chain)

    def _conn(self) -> Connection:
        if self._connection is None:
            connection = write_connection(self._engine)
            if self._busy_timeout_ms is not None:
                connection.exec_driver_sql(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
                # checkpoints run on the checkpointer thread, not inside a commit on the loop
                connection.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
                connection.commit()  # the pragmas autobegan a transaction; end it
                if self._checkpointer is not None:
                    self._checkpointer.start()
            self._connection = connection
        return self._connection

    def _drop_connection(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:  # the connection is already broken; nothing more to do
                logger.debug("closing a broken writer connection failed", exc_info=True)
            self._connection = None

    def _flush_inline(self) -> None:
        self._scheduled = False
        items, self._inline = self._inline, []
        self._process(items)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            items = [item]
            stop = False
            while len(items) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                items.append(nxt)
            self._process(items)
            if stop:
                break
        self._drop_connection()

    def _process(self, items: list[_Pending]) -> None:
        """Commit queued items in order: runs of decisions together, each job on its own."""
        i = 0
        while i < len(items):
            item = items[i]
            if not isinstance(item.payload, DecisionWrite):
                self._finish([item], self._run_job(item.payload))
                i += 1
                continue
            j = i
            while (
                j < len(items)
                and j - i < self._max_batch
                and isinstance(items[j].payload, DecisionWrite)
            ):
                j += 1
            self._commit_decisions(items[i:j])
            i = j

    def _transaction(
        self, body: Callable[[Connection, AuditChain], list[Any]]
    ) -> list[Any] | BaseException:
        connection = self._conn()
        try:
            with connection.begin():
                chain = AuditChain.open(connection)
                results = body(connection, chain)
                chain.flush()
            self._observe(chain)
            return results
        except Exception as e:
            if connection.invalidated or connection.closed:
                self._drop_connection()
            return e

    def _run_job(self, fn: JobFn) -> list[Any] | BaseException:
        return self._transaction(lambda c, ch: [fn(c, ch)])

    def _write(self, items: list[DecisionWrite]) -> list[Any] | BaseException:
        if self._raw is not None:
            try:
                chain = self._raw.write(items)
            except Exception as e:
                return e
            self._observe(chain)
            return [None] * len(items)

        def body(connection: Connection, chain: AuditChain) -> list[Any]:
            write_decisions(connection, chain, items)
            return [None] * len(items)

        return self._transaction(body)

    def _commit_decisions(self, batch: list[_Pending]) -> None:
        items = [p.payload for p in batch if isinstance(p.payload, DecisionWrite)]
        outcome = self._write(items)
        if isinstance(outcome, BaseException) and len(batch) > 1:
            # one bad decision must not sink the others: retry each in its own transaction
            logger.warning(
                "group commit of %d decisions failed (%s); retrying one by one", len(batch), outcome
            )
            for pending in batch:
                single = pending.payload
                assert isinstance(single, DecisionWrite)
                self._finish([pending], self._write([single]))
            return
        if not isinstance(outcome, BaseException):
            self.commits += 1
            self.committed_decisions += len(items)
        self._finish(batch, outcome)

    def _finish(self, batch: list[_Pending], outcome: list[Any] | BaseException) -> None:
        failed = isinstance(outcome, BaseException)
        if failed:
            logger.error("write transaction failed: %s", outcome)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Pending, Any]]] = {}
        for index, pending in enumerate(batch):
            value = outcome if isinstance(outcome, BaseException) else outcome[index]
            if pending.loop is None:
                if isinstance(value, BaseException):
                    pending.error = value
                else:
                    pending.result = value
                if pending.done is not None:
                    pending.done.set()
            else:
                by_loop.setdefault(pending.loop, []).append((pending, value))
        for loop, entries in by_loop.items():
            if self.mode == "inline":
                self._resolve(entries, failed)
                continue
            # one wake-up of the event loop per batch, not per decision
            try:
                loop.call_soon_threadsafe(self._resolve, entries, failed)
            except RuntimeError:  # loop already closed during shutdown
                logger.warning("event loop closed before %d writes were acknowledged", len(entries))

    def _resolve(self, entries: list[tuple[_Pending, Any]], failed: bool) -> None:
        for pending, value in entries:
            future = pending.future
            if future is None or future.done():
                continue
            if failed:
                future.set_exception(value)
                if self._on_failure is not None and isinstance(pending.payload, DecisionWrite):
                    self._on_failure(pending.payload)
            else:
                future.set_result(value)
