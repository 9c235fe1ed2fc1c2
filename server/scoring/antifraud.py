"""Anti-fraud screening in front of the A-card: rule engine, velocity history, relationship graph.

Identifiers are hashed with a keyed HMAC before they are stored or put in the graph: equal values
still link, but the database holds no raw device ids, phone numbers or card numbers.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fedrisk.decisions.fraud_graph import GraphConfig, RelationshipGraph, RingCheck
from fedrisk.decisions.fraud_rules import (
    BlacklistRule,
    FraudRuleEngine,
    MismatchRule,
    RangeRule,
    RuleHit,
    RuleSet,
    VelocityRule,
)
from fedrisk.errors import DecisionError
from server.scoring.errors import ConflictError

logger = logging.getLogger(__name__)

APPLICATION_KIND = "application"


class IdentifierHasher:
    """Keyed BLAKE2b-256 of identifiers (a MAC): ``hash(kind, value)`` as 64 hex chars.

    Notes
    -----
    A plain SHA-256 of a phone number can be reversed by enumerating numbers; the key (from the
    settings, kept out of the database) prevents that while keeping equal values equal. BLAKE2b's
    keyed mode is a MAC by design and several times cheaper per call than HMAC-SHA256.
    """

    def __init__(self, key: bytes) -> None:
        # BLAKE2b keys are at most 64 bytes; longer secrets are compressed first
        self._key = key if len(key) <= 64 else hashlib.sha512(key).digest()

    def hash(self, kind: str, value: str) -> str:
        """Hex MAC of one identifier value of one kind."""
        return hashlib.blake2b(
            f"{kind}\x00{value}".encode(), key=self._key, digest_size=32
        ).hexdigest()


def _text(value: object) -> str | None:
    # same normalisation as fedrisk.decisions.fraud_rules: None/NaN/blank are missing, values
    # stripped
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip()
    return text or None


class HashedHistory:
    """Velocity history over hashed identifiers (implements
    ``fedrisk.decisions.fraud_rules.HistoryLookup``).

    Parameters
    ----------
    hasher
        Hashes the values the rule engine asks about, so lookups match stored hashes.
    horizon
        Oldest history kept (the longest velocity window).
    """

    def __init__(self, hasher: IdentifierHasher, *, horizon: timedelta) -> None:
        self._hasher = hasher
        self._horizon = horizon
        self._times: dict[tuple[str, str], list[float]] = {}
        self._since_prune = 0

    def count_recent(self, field: str, value: str, since: datetime) -> int:
        """Recorded applications with ``field == value`` at or after ``since``."""
        times = self._times.get((field, self._hasher.hash(field, value)))
        if not times:
            return 0
        return len(times) - bisect.bisect_left(times, since.timestamp())

    def record(self, field: str, value_hash: str, at: float) -> None:
        """Remember one application's hashed value at POSIX time ``at``."""
        times = self._times.setdefault((field, value_hash), [])
        if not times or at >= times[-1]:
            times.append(at)
        else:
            bisect.insort(times, at)
        self._since_prune += 1
        if self._since_prune >= 100_000:
            self.prune(at - self._horizon.total_seconds())

    def prune(self, before: float) -> None:
        """Drop records older than ``before`` (POSIX seconds)."""
        self._since_prune = 0
        for key in list(self._times):
            times = self._times[key]
            cut = bisect.bisect_left(times, before)
            if cut == len(times):
                del self._times[key]
            elif cut:
                del times[:cut]


@dataclass
class Screening:
    """Anti-fraud result of one application."""

    hits: list[RuleHit]
    ring: RingCheck
    application_key: str
    links: list[dict[str, Any]] = field(default_factory=list)


def rule_fields(rule_set: RuleSet) -> set[str]:
    """Application fields the enabled rules read."""
    fields: set[str] = set()
    for rule in rule_set.rules:
        if not rule.enabled:
            continue
        if isinstance(rule, MismatchRule):
            fields.update(rule.fields)
        elif isinstance(rule, BlacklistRule | VelocityRule | RangeRule):
            fields.add(rule.field)
    return fields


class FraudScreen:
    """Rules + velocity history + relationship graph, rebuilt from the store at start-up.

    Parameters
    ----------
    rule_set
        Validated fraud rules.
    graph_config
        Relationship-graph settings (link kinds, ring size, hub threshold).
    hasher
        Identifier hasher.
    lists
        Contents of the rule set's external lists (blacklists from the database).
    known_fields
        Fields the service can supply; rules reading other fields are logged (they never fire).
    """

    def __init__(
        self,
        rule_set: RuleSet,
        *,
        graph_config: GraphConfig,
        hasher: IdentifierHasher,
        lists: Mapping[str, Collection[str]] | None = None,
        known_fields: Collection[str] = (),
    ) -> None:
        self.rule_set = rule_set
        self.hasher = hasher
        self.graph_config = graph_config
        self.velocity_fields = sorted(
            {r.field for r in rule_set.rules if isinstance(r, VelocityRule) and r.enabled}
        )
        windows = [
            r.window_hours for r in rule_set.rules if isinstance(r, VelocityRule) and r.enabled
        ]
        self.horizon = timedelta(hours=max(windows, default=24.0))
        self.stored_kinds = sorted(set(graph_config.link_kinds) | set(self.velocity_fields))
        unknown = sorted(rule_fields(rule_set) - set(known_fields)) if known_fields else []
        if unknown:
            logger.warning(
                "fraud rules read fields the service never supplies (they cannot fire): %s", unknown
            )
        self.lists: dict[str, list[str]] = {name: [] for name in rule_set.external_lists}
        self.set_lists(lists or {})
        self.graph = RelationshipGraph(graph_config)
        self.history = HashedHistory(hasher, horizon=self.horizon)
        self._unpersisted: dict[str, list[dict[str, Any]]] = {}

    def set_lists(self, lists: Mapping[str, Collection[str]]) -> None:
        """Replace external list contents and rebuild the rule engine (validated first)."""
        merged = {**self.lists, **{name: list(values) for name, values in lists.items()}}
        engine = FraudRuleEngine(self.rule_set, lists=merged)
        self.lists = merged
        self.engine = engine

    def rebuild(self, rows: Iterable[Any], *, now: datetime) -> int:
        """Rebuild graph and velocity history from stored ``fraud_links`` rows (in insert order).

        Returns the number of applications in the graph.
        """
        cutoff = (now - self.horizon).timestamp()
        link_kinds = set(self.graph_config.link_kinds)
        apps: list[tuple[str, dict[str, str]]] = []
        for row in rows:
            identifiers: dict[str, str] = row.identifiers
            apps.append(
                (row.application_key, {k: v for k, v in identifiers.items() if k in link_kinds})
            )
            at = datetime.fromisoformat(row.created_at).timestamp()
            if at >= cutoff:
                for kind in self.velocity_fields:
                    if kind in identifiers:
                        self.history.record(kind, identifiers[kind], at)
        self.graph = RelationshipGraph.from_rows(apps, config=self.graph_config)
        return len(self.graph)

    def screen(
        self, application_id: str, signals: Mapping[str, object], *, now: datetime, decision_id: str
    ) -> Screening:
        """Evaluate the rules, then add the application to the graph and the history.

        A retried application (same id, same identifiers) is not counted twice.

        Raises
        ------
        ConflictError
            The application id was seen before with different identifiers.
        """
        key = self.hasher.hash(APPLICATION_KIND, application_id)
        hits = self.engine.evaluate(signals, history=self.history, now=now)
        hashed: dict[str, str] = {}
        for kind in self.stored_kinds:
            value = _text(signals.get(kind))
            if value is not None:
                hashed[kind] = self.hasher.hash(kind, value)
        is_new = key not in self.graph
        try:
            ring = self.graph.add(
                key, {k: v for k, v in hashed.items() if k in self.graph_config.link_kinds}
            )
        except DecisionError as e:
            raise ConflictError(
                f"application_id {application_id!r} was already screened with different identifiers"
            ) from e
        stamp = now.isoformat(timespec="microseconds")
        links: list[dict[str, Any]] = []
        if is_new:
            at = now.timestamp()
            for kind in self.velocity_fields:
                if kind in hashed:
                    self.history.record(kind, hashed[kind], at)
            links = [
                {
                    "application_key": key,
                    "decision_id": decision_id,
                    "identifiers": hashed,
                    "created_at": stamp,
                }
            ]
        else:
            pending = self._unpersisted.pop(key, None)
            if pending is not None:
                links = [{**row, "decision_id": decision_id} for row in pending]
        return Screening(hits=hits, ring=ring, application_key=key, links=links)

    def forget_unpersisted(self, links: list[dict[str, Any]]) -> None:
        """Remember links whose decision failed to commit, so a retry persists them."""
        if links:
            self._unpersisted[links[0]["application_key"]] = links
