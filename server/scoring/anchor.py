"""Anchors of the audit chain outside the database: the service's Ed25519 key file, signed
checkpoints of the chain head, their append-only JSONL export and webhook delivery.

The hash chain in :mod:`server.scoring.audit` detects an edit only as long as nobody recomputes
the hashes; anyone who can write the database can. This module adds what such a writer does not
have: a signing key in a file outside the database, and signed statements "record ``seq`` has
hash ``h``" exported to a file (and a webhook) the database writer does not control.

Notes
-----
Why checkpoints of the head and not a MAC or signature on every record:

* A rewritten chain differs from the genuine one at its head, so one signed head covers every
  record before it. An Ed25519 signature costs ~40 µs here; per record that is one more
  per-request cost on the event loop, while a checkpoint every ``N`` records or ``T`` seconds
  costs nothing measurable (``benchmarks/audit_anchor.py``).
* A per-record HMAC would name the changed record exactly, but it needs a secret to *verify*:
  every auditor able to check it could also forge it, and it needs a new column. Checkpoints are
  checked with the public key alone.
* What checkpoints cannot do: name the changed record inside one checkpoint interval. ``audit
  verify`` names the first checkpointed record whose hash differs and the interval in which the
  rewrite starts.

The anchor signs the head the *writer computed in memory* (:meth:`AuditAnchor.observe`), never
the head it reads back from the database, so a record changed between two checkpoints cannot get
signed in its changed form. Records appended by another process (the ``models`` CLI) are read
from the database and accepted only when they continue the last signed head.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import queue
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url

from fedrisk.errors import IdentityError
from fedrisk.release.identity import (
    generate_signing_key,
    key_id,
    load_signing_key,
    load_verify_key,
    save_private_key,
    save_public_key,
)
from server.scoring.audit import GENESIS_HASH, canonical_json, record_hash, utc_now
from server.scoring.db.tables import audit_head, audit_log
from server.scoring.errors import ScoringError

if TYPE_CHECKING:
    from server.scoring.audit import AuditChain
    from server.scoring.settings import Settings

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
SIGNING_CONTEXT = b"fedrisk/audit-checkpoint/v1\n"
"""Prefix of every signed message, so a checkpoint signature can never be replayed as another
kind of signature made with the same key (and the reverse)."""

AUDIT_DIR = "audit"
KEY_FILE = "signing.key"
PUBLIC_KEY_FILE = "signing.pub"
CHECKPOINT_FILE = "checkpoints.jsonl"


class AuditAnchorError(ScoringError, ValueError):
    """A missing, unreadable or wrong audit key, or a checkpoint file that fails its checks."""


class CheckpointFileError(AuditAnchorError):
    """A checkpoint file that was edited, reordered, cut or signed by another key.

    ``line`` is the 1-based line number of the first bad line.
    """

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


def default_audit_dir(*, registry_dir: Path | None, db_url: str | None) -> Path | None:
    """Default folder of the key and checkpoint files: ``audit/`` beside a SQLite database file,
    else beside the registry (None when neither is known).

    The service and ``audit verify`` both derive it this way, so ``audit verify --db
    sqlite:///…`` finds what the service wrote without more options.
    """
    if db_url is not None:
        parsed = make_url(db_url)
        database = parsed.database
        if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
            return Path(database).expanduser().resolve().parent / AUDIT_DIR
    if registry_dir is not None:
        return registry_dir.resolve().parent / AUDIT_DIR
    return None


def public_key_path(key_path: Path) -> Path:
    """Where the public half of ``key_path`` is written: ``signing.pub`` beside it."""
    return key_path.with_name(PUBLIC_KEY_FILE)


# ------------------------------------------------------------------------------ key file
def create_audit_key(path: Path) -> Ed25519PrivateKey:
    """Create a new signing key at ``path`` (mode 0600) and its public key beside it.

    Raises
    ------
    AuditAnchorError
        ``path`` exists already: an audit key is never overwritten (the checkpoints it signed
        would no longer verify).
    """
    path = Path(path)
    if path.exists():
        raise AuditAnchorError(f"audit key file {path} exists already; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = generate_signing_key()
    save_private_key(key, path)
    save_public_key(key.public_key(), public_key_path(path))
    return key


def load_audit_key(path: Path) -> Ed25519PrivateKey:
    """Read the service's audit signing key, refusing a file others can read.

    Raises
    ------
    AuditAnchorError
        Missing, readable by group or others, not an Ed25519 PEM private key.
    """
    path = Path(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError as e:
        raise AuditAnchorError(f"audit key file {path} does not exist") from e
    if mode & 0o077:
        raise AuditAnchorError(
            f"audit key file {path} must be mode 0600 (owner only); got {mode:04o}"
        )
    try:
        return load_signing_key(path)
    except IdentityError as e:
        raise AuditAnchorError(f"audit key: {e}") from e


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The public key to check checkpoints with: a ``.pub`` PEM file, or the public half of a
    private key file."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as e:
        raise AuditAnchorError(f"audit key file {path} cannot be read: {e.strerror or e}") from e
    try:
        if b"PRIVATE KEY" in text:
            return load_audit_key(path).public_key()
        return load_verify_key(path)
    except IdentityError as e:
        raise AuditAnchorError(f"audit public key: {e}") from e


# ------------------------------------------------------------------------------ checkpoints
@dataclass(frozen=True)
class Checkpoint:
    """One verified line of the checkpoint file: record ``seq`` of the chain has hash ``hash``."""

    n: int
    seq: int
    hash: str
    line: int
    digest: str
    """SHA-256 of the line's text: the next checkpoint's ``prev``."""
    key: str
    prev: str


def _signed_message(body: dict[str, Any]) -> bytes:
    return SIGNING_CONTEXT + canonical_json(body).encode("utf-8")


def line_digest(line: str) -> str:
    """SHA-256 (hex) of one checkpoint line as written, without its newline."""
    return hashlib.sha256(line.encode("utf-8")).hexdigest()


def sign_checkpoint(
    key: Ed25519PrivateKey, *, n: int, seq: int, hash_: str, prev: str, reason: str
) -> str:
    """One checkpoint as a JSON line (no newline), signed with ``key``.

    ``prev`` is the digest of the previous line, so a deleted or reordered line is seen.
    """
    body: dict[str, Any] = {
        "v": CHECKPOINT_VERSION,
        "n": n,
        "seq": seq,
        "hash": hash_,
        "prev": prev,
        "at": utc_now(),
        "reason": reason,
        "key": key_id(key.public_key()),
    }
    signature = key.sign(_signed_message(body))
    return canonical_json({**body, "sig": base64.b64encode(signature).decode("ascii")})


def parse_checkpoint(text: str, *, line: int, public_key: Ed25519PublicKey) -> Checkpoint:
    """Check one line: JSON shape, key id and signature (links: :func:`check_follows`).

    Raises
    ------
    CheckpointFileError
        Naming the line and what is wrong with it.
    """
    try:
        body = json.loads(text)
        signature = base64.b64decode(body.pop("sig"), validate=True)
        n, seq, hash_, prev_digest, key = (
            body["n"], body["seq"], body["hash"], body["prev"], body["key"]
        )  # fmt: skip
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as e:
        raise CheckpointFileError(line, f"is not a checkpoint (unreadable: {e})") from e
    if not (isinstance(n, int) and isinstance(seq, int) and isinstance(hash_, str)):
        raise CheckpointFileError(line, "is not a checkpoint (n, seq or hash has the wrong type)")
    expected_key = key_id(public_key)
    if key != expected_key:
        raise CheckpointFileError(
            line,
            f"was signed by audit key {key}, not by the key given ({expected_key}): wrong key "
            "file?",
        )
    try:
        public_key.verify(signature, _signed_message(body))
    except InvalidSignature as e:
        raise CheckpointFileError(
            line, "has a bad signature: the checkpoint file was edited"
        ) from e
    if not isinstance(prev_digest, str):
        raise CheckpointFileError(line, "is not a checkpoint (prev has the wrong type)")
    return Checkpoint(
        n=n, seq=seq, hash=hash_, line=line, digest=line_digest(text), key=key, prev=prev_digest
    )


def check_follows(checkpoint: Checkpoint, prev: Checkpoint | None) -> None:
    """Raise :class:`CheckpointFileError` unless ``checkpoint`` is the one right after ``prev``
    (or the first one when ``prev`` is None)."""
    expected_n = 1 if prev is None else prev.n + 1
    expected_prev = GENESIS_HASH if prev is None else prev.digest
    if checkpoint.n != expected_n or checkpoint.prev != expected_prev:
        raise CheckpointFileError(
            checkpoint.line,
            f"does not follow the line before it (checkpoint #{checkpoint.n}, expected "
            f"#{expected_n}): checkpoints were deleted, inserted or reordered",
        )
    if prev is not None and checkpoint.seq < prev.seq:
        raise CheckpointFileError(
            checkpoint.line, f"goes back from record {prev.seq} to {checkpoint.seq}"
        )


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open("r", encoding="utf-8", newline="\n") as handle:
        for number, raw in enumerate(handle, start=1):
            text = raw.rstrip("\n")
            if text:
                yield number, text


def read_checkpoints(path: Path, public_key: Ed25519PublicKey) -> list[Checkpoint]:
    """Every checkpoint of ``path``, each signature and link checked.

    Raises
    ------
    CheckpointFileError
        The first bad line: not JSON, bad signature, another key, deleted or reordered lines.
    AuditAnchorError
        The file cannot be read.
    """
    checkpoints: list[Checkpoint] = []
    try:
        for number, text in _lines(Path(path)):
            checkpoint = parse_checkpoint(text, line=number, public_key=public_key)
            check_follows(checkpoint, checkpoints[-1] if checkpoints else None)
            checkpoints.append(checkpoint)
    except (OSError, UnicodeDecodeError) as e:
        raise AuditAnchorError(f"checkpoint file {path} cannot be read: {e}") from e
    return checkpoints


def last_line(path: Path) -> tuple[int, str] | None:
    """The last non-empty line of ``path`` (line number counted) or None for an empty file."""
    last: tuple[int, str] | None = None
    try:
        for number, text in _lines(path):
            last = (number, text)
    except FileNotFoundError:
        return None
    return last


# ------------------------------------------------------------------------------ webhook
def _safe_url(url: str) -> str:
    """The URL without path, query or credentials, for logs (a token may sit in the query)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}".rstrip(":")


class WebhookSender:
    """POSTs each checkpoint line to a URL from its own thread, with bounded retries.

    Never blocks the caller: a full backlog drops the checkpoint with a warning (it is still in
    the checkpoint file). Every failed attempt is logged.
    """

    def __init__(
        self,
        url: str,
        *,
        attempts: int = 4,
        timeout: float = 5.0,
        backoff: float = 0.5,
        max_backlog: int = 1000,
    ) -> None:
        self.url = url
        self.attempts = attempts
        self.timeout = timeout
        self.backoff = backoff
        self.delivered = 0
        self.failed = 0
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=max_backlog)
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-webhook", daemon=True)
        self._thread.start()

    def send(self, line: str) -> None:
        """Queue one checkpoint line for delivery."""
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self.failed += 1
            logger.warning(
                "audit webhook %s: backlog full, a checkpoint was not sent (it is in the "
                "checkpoint file)",
                _safe_url(self.url),
            )

    def _deliver(self, client: Any, line: str) -> bool:
        for attempt in range(1, self.attempts + 1):
            try:
                response = client.post(
                    self.url, content=line, headers={"content-type": "application/json"}
                )
                if 200 <= response.status_code < 300:
                    return True
                problem = f"HTTP {response.status_code}"
            except Exception as e:  # any transport error: retried, then logged
                problem = f"{type(e).__name__}: {e}"
            logger.warning(
                "audit webhook %s: attempt %d/%d failed: %s",
                _safe_url(self.url), attempt, self.attempts, problem,
            )  # fmt: skip
            if attempt < self.attempts and self._abort.wait(self.backoff * 2 ** (attempt - 1)):
                break
        return False

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=self.timeout) as client:
            while True:
                line = self._queue.get()
                if line is None:
                    return
                if self._abort.is_set():
                    self.failed += 1
                    continue
                if self._deliver(client, line):
                    self.delivered += 1
                else:
                    self.failed += 1
                    logger.error(
                        "audit webhook %s: a checkpoint was not delivered after %d attempts "
                        "(it is in the checkpoint file)",
                        _safe_url(self.url), self.attempts,
                    )  # fmt: skip

    def close(self, *, timeout: float = 10.0) -> None:
        """Deliver what is queued within ``timeout`` seconds, then give up (logged)."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort.set()
            self._thread.join(self.timeout + 1.0)
            logger.warning(
                "audit webhook %s: stopped before every checkpoint was delivered",
                _safe_url(self.url),
            )


# ------------------------------------------------------------------------------ the anchor
@dataclass(frozen=True)
class _Segment:
    """Records ``start_seq + 1 .. end_seq`` committed by one transaction of this service."""

    start_seq: int
    start_hash: str
    end_seq: int
    end_hash: str


class AuditAnchor:
    """Signs checkpoints of the chain head and exports them (file, optional webhook).

    Build it with :meth:`open`; hand every committed :class:`AuditChain` to :meth:`observe`
    (microseconds, safe on the event loop); :meth:`close` signs the final head. A background
    thread signs a checkpoint when ``every_records`` records are waiting or ``every_seconds``
    passed since the head moved.
    """

    def __init__(
        self,
        *,
        key: Ed25519PrivateKey,
        checkpoint_path: Path,
        engine: Engine,
        last: Checkpoint | None,
        every_records: int,
        every_seconds: float,
        webhook: WebhookSender | None,
    ) -> None:
        self._key = key
        self.key_id = key_id(key.public_key())
        self.checkpoint_path = checkpoint_path
        self._engine = engine
        self._every_records = every_records
        self._every_seconds = every_seconds
        self._webhook = webhook
        self._n = 0 if last is None else last.n
        self._prev = GENESIS_HASH if last is None else last.digest
        self.signed_seq = 0 if last is None else last.seq
        self._known = (0, GENESIS_HASH) if last is None else (last.seq, last.hash)
        self.divergences = 0
        self._rebase = False
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._waiting = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The key that verifies this anchor's checkpoints."""
        return self._key.public_key()

    def signed_checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint this service has exported, each signature and link checked (blocking
        file read: call it off the event loop)."""
        return read_checkpoints(self.checkpoint_path, self.public_key)

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        *,
        key_path: Path,
        checkpoint_path: Path,
        engine: Engine,
        every_records: int = 1000,
        every_seconds: float = 1.0,
        webhook_url: str | None = None,
        webhook_attempts: int = 4,
    ) -> AuditAnchor:
        """Load (or, on a first start, create) the key, check the checkpoint file's last line,
        sign the database's current head and start the checkpoint thread.

        Raises
        ------
        AuditAnchorError
            A key file that is missing while checkpoints exist, unreadable, readable by others
            or not the key that signed the checkpoint file; a last checkpoint line that fails.
        """
        key_path, checkpoint_path = Path(key_path), Path(checkpoint_path)
        found = last_line(checkpoint_path)
        if not key_path.exists():
            if found is not None:
                raise AuditAnchorError(
                    f"audit key file {key_path} is missing, but checkpoint file "
                    f"{checkpoint_path} holds checkpoints signed with it: restore the key file "
                    "(or move the checkpoint file away to start a new, separate trail)"
                )
            key = create_audit_key(key_path)
            logger.warning(
                "created the audit signing key %s (key id %s; public key %s). Keep it, and the "
                "checkpoint file %s, out of reach of whoever can write the database",
                key_path, key_id(key.public_key()), public_key_path(key_path), checkpoint_path,
            )  # fmt: skip
        else:
            key = load_audit_key(key_path)
        last = None
        if found is not None:
            number, text = found
            try:
                last = parse_checkpoint(text, line=number, public_key=key.public_key())
            except CheckpointFileError as e:
                raise AuditAnchorError(f"checkpoint file {checkpoint_path} {e}") from e
        checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        webhook = None
        if webhook_url:
            webhook = WebhookSender(webhook_url, attempts=webhook_attempts)
        anchor = cls(
            key=key,
            checkpoint_path=checkpoint_path,
            engine=engine,
            last=last,
            every_records=every_records,
            every_seconds=every_seconds,
            webhook=webhook,
        )
        try:
            anchor._catch_up("startup")
        except BaseException:
            if webhook is not None:
                webhook.close(timeout=1.0)
            raise
        anchor._thread = threading.Thread(target=anchor._run, name="audit-anchor", daemon=True)
        anchor._thread.start()
        return anchor

    # -- observing commits ---------------------------------------------------------------------
    def observe(self, chain: AuditChain) -> None:
        """Note the head a committed transaction moved the chain to (call after the commit)."""
        if chain.seq == chain.opened_seq:
            return
        segment = _Segment(chain.opened_seq, chain.opened_hash, chain.seq, chain.hash)
        with self._lock:
            self._segments.append(segment)
            self._waiting += chain.seq - chain.opened_seq
            wake = self._waiting >= self._every_records
        if wake:
            self._wake.set()

    # -- linking with the database -------------------------------------------------------------
    def _diverged(self, problem: str) -> None:
        self.divergences += 1
        logger.error(
            "audit chain in the database does not continue the last signed head (record %d): "
            "%s. Records were changed or deleted outside this service; run `fedrisk audit "
            "verify`. Checkpoints continue from the database's head.",
            self._known[0], problem,
        )  # fmt: skip

    def _rebase_to(self, seq: int, digest: str) -> None:
        """After a divergence: sign the last head this service vouches for (so ``audit verify``
        sees the database differ from it), then continue from ``(seq, digest)``."""
        self._sign_known("last-known-good")
        self._known = (seq, digest)
        self._rebase = True

    def _link(self, upto_seq: int, upto_hash: str) -> bool:
        """Whether the database's records after the known head chain up to ``(upto_seq,
        upto_hash)``; on success the known head moves there."""
        seq, digest = self._known
        query = (
            select(audit_log)
            .where(audit_log.c.seq >= max(seq, 1), audit_log.c.seq <= upto_seq)
            .order_by(audit_log.c.seq)
        )
        with self._engine.connect() as connection:
            rows = connection.execution_options(yield_per=5000).execute(query)
            expected = seq + 1
            for row in rows:
                if row.seq == seq:  # the known head itself must still be there, unchanged
                    if row.hash != digest:
                        self._diverged(f"record {seq} has another hash now")
                        return False
                    continue
                if row.seq != expected or row.prev_hash != digest:
                    self._diverged(f"record {expected} is missing or does not follow")
                    return False
                recomputed = record_hash(
                    seq=row.seq, created_at=row.created_at, kind=row.kind,
                    payload=row.payload, prev_hash=row.prev_hash,
                )  # fmt: skip
                if recomputed != row.hash:
                    self._diverged(f"record {row.seq} was edited")
                    return False
                digest, expected = row.hash, expected + 1
            connection.rollback()
        if expected - 1 != upto_seq or digest != upto_hash:
            self._diverged(f"records up to {upto_seq} are missing or differ")
            return False
        self._known = (upto_seq, upto_hash)
        return True

    def _catch_up(self, reason: str) -> None:
        """Link the database's current head (records written by other processes) and sign it."""
        with self._engine.connect() as connection:
            head = connection.execute(select(audit_head.c.seq, audit_head.c.hash)).first()
            connection.rollback()
        seq, digest = (0, GENESIS_HASH) if head is None else (int(head.seq), str(head.hash))
        if seq < self._known[0]:
            self._diverged(f"the head went back to record {seq} (records deleted)")
            self._rebase_to(seq, digest)
        elif (seq, digest) != self._known and not self._link(seq, digest):
            self._rebase_to(seq, digest)
        self._sign_known(reason)

    def _advance(self) -> bool:
        """Fold the observed commits into the known head; True when it moved."""
        with self._lock:
            segments, self._segments = self._segments, []
            self._waiting = 0
        moved = False
        for segment in sorted(segments, key=lambda s: s.start_seq):
            if segment.end_seq <= self._known[0]:
                continue
            start = (segment.start_seq, segment.start_hash)
            if start != self._known:
                # another process appended in between, or the database was changed: check it
                if segment.start_seq < self._known[0]:
                    self._diverged(f"a commit continued from record {segment.start_seq}")
                    self._rebase_to(*start)
                elif not self._link(*start):
                    self._rebase_to(*start)
            self._known = (segment.end_seq, segment.end_hash)
            moved = True
        return moved

    def _sign_known(self, reason: str) -> None:
        seq, digest = self._known
        if seq == 0:  # an empty chain: nothing to vouch for
            return
        if self._rebase:
            reason, self._rebase = "rebased", False
        elif seq == self.signed_seq:
            return
        line = sign_checkpoint(
            self._key, n=self._n + 1, seq=seq, hash_=digest, prev=self._prev, reason=reason
        )
        self._append(line)
        self._n += 1
        self._prev = line_digest(line)
        self.signed_seq = seq
        if self._webhook is not None:
            self._webhook.send(line)

    def _append(self, line: str) -> None:
        # O_APPEND: one write of a whole line, never a rewrite of what is there
        fd = os.open(self.checkpoint_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- the checkpoint thread -------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._every_seconds)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                if self._advance():
                    self._sign_known("interval")
            except Exception:  # a transient DB or disk error: next round tries again
                logger.exception("signing an audit checkpoint failed")

    def _stop_thread(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def close(self) -> None:
        """Sign the final head (after the writer stopped) and stop the webhook sender."""
        self._stop_thread()
        try:
            self._advance()
            self._catch_up("shutdown")
        except Exception:  # best effort at shutdown: the last interval checkpoint stands
            logger.exception("signing the final audit checkpoint failed")
        finally:
            if self._webhook is not None:
                self._webhook.close()


def open_service_anchor(settings: Settings, engine: Engine) -> AuditAnchor:
    """The running service's anchor, from its settings (default files: see
    :func:`default_audit_dir`)."""
    audit_dir = default_audit_dir(registry_dir=settings.registry_dir, db_url=settings.db_url)
    assert audit_dir is not None  # the registry is always known
    return AuditAnchor.open(
        key_path=settings.audit_key_path or audit_dir / KEY_FILE,
        checkpoint_path=settings.audit_checkpoint_path or audit_dir / CHECKPOINT_FILE,
        engine=engine,
        every_records=settings.audit_checkpoint_records,
        every_seconds=settings.audit_checkpoint_seconds,
        webhook_url=settings.audit_webhook_url,
        webhook_attempts=settings.audit_webhook_attempts,
    )
