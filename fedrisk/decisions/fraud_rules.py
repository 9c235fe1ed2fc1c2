"""Anti-fraud rules engine: declarative TOML/YAML rules, validated on load, applied to applications.

API
---
``load_rules(path) -> RuleSet``             TOML (``.toml``) or YAML (``.yaml``/``.yml``)
``rules_from_text(text, *, fmt, source) -> RuleSet``
``load_default_rules() -> RuleSet``         packaged
``fedrisk/decisions/policies/default_fraud_rules.toml``
``FraudRuleEngine(rule_set, *, lists=None)``
    ``.evaluate(application, *, history=None, now=None) -> list[RuleHit]``; ``.needs_history``
``evaluate(rule_set, application, *, history=None, now=None, lists=None) -> list[RuleHit]``
``HistoryLookup`` protocol: ``count_recent(field, value, since) -> int`` (the service backs it with
    its database); ``InMemoryHistory`` implements it for tests and the CLI (``record``, ``prune``).
``RuleHit(rule_id, kind, severity, action, message)``; ``strongest_action(hits)``.
Rule kinds (``kind`` field): ``mismatch`` (two fields must agree), ``blacklist`` (field value in a
named list), ``velocity`` (more than N applications sharing a value within a window), ``range``
(numeric field outside [min, max], e.g. age). Every rule has ``id``, ``severity``
(low/medium/high/critical), ``action`` (decline/review/flag), ``message``, ``enabled``.

File format (TOML; YAML has the same structure)::

    format_version = 1
    external_lists = ["device_blacklist"]   # lists the service supplies at run time
    [lists]
    id_blacklist = ["X123"]                 # static lists; the engine's ``lists`` override them
    [[rules]]
    id = "FR-VEL-DEVICE"
    kind = "velocity"
    field = "device_id"
    window_hours = 24
    max_applications = 3
    severity = "high"
    action = "review"
    message = "More than 3 applications from one device in 24 hours"

Hits carry no applicant values, so they can be stored and logged without leaking personal data.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedrisk.decisions.policy_files import parse_mapping, read_policy_file
from fedrisk.errors import DecisionError

__all__ = [
    "DEFAULT_FRAUD_RULES_PATH",
    "BlacklistRule",
    "FraudAction",
    "FraudRuleEngine",
    "HistoryLookup",
    "InMemoryHistory",
    "MismatchRule",
    "RangeRule",
    "Rule",
    "RuleHit",
    "RuleSet",
    "Severity",
    "VelocityRule",
    "evaluate",
    "load_default_rules",
    "load_rules",
    "rules_from_text",
    "strongest_action",
]

DEFAULT_FRAUD_RULES_PATH = Path(__file__).parent / "policies" / "default_fraud_rules.toml"


class Severity(StrEnum):
    """How serious a rule hit is (for triage and dashboards)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class FraudAction(StrEnum):
    """What a hit does to the application decision."""

    DECLINE = "decline"
    REVIEW = "review"
    FLAG = "flag"


_ACTION_RANK = {FraudAction.FLAG: 0, FraudAction.REVIEW: 1, FraudAction.DECLINE: 2}

Normalize = Literal["exact", "casefold", "alnum", "digits"]
"""How values are compared: as given, trimmed+case-folded, letters/digits only, digits only."""

OnMissing = Literal["skip", "hit"]

_NON_ALNUM = re.compile(r"[\W_]+", re.UNICODE)
_NON_DIGIT = re.compile(r"\D+")
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


def _normalizer(mode: Normalize) -> Callable[[str], str]:
    if mode == "exact":
        return lambda s: s
    if mode == "casefold":
        return lambda s: " ".join(s.split()).casefold()
    if mode == "alnum":
        return lambda s: _NON_ALNUM.sub("", s).casefold()
    return lambda s: _NON_DIGIT.sub("", s)


class _RuleBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=_ID_PATTERN)
    severity: Severity
    action: FraudAction
    message: str = Field(min_length=1)
    enabled: bool = True
    description: str = ""


class MismatchRule(_RuleBase):
    """Hit when two fields disagree, e.g. applicant name vs the phone owner's registered name."""

    kind: Literal["mismatch"]
    fields: tuple[str, str]
    normalize: Normalize = "casefold"
    on_missing: OnMissing = "skip"

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        if self.fields[0] == self.fields[1]:
            raise ValueError(f"fields must name two different fields; got {list(self.fields)}")
        return self


class BlacklistRule(_RuleBase):
    """Hit when a field's value is in a named list (inline ``values`` and/or ``list_name``)."""

    kind: Literal["blacklist"]
    field: str = Field(min_length=1)
    list_name: str | None = None
    values: tuple[str, ...] = ()
    normalize: Normalize = "casefold"

    @model_validator(mode="after")
    def _has_source(self) -> Self:
        if self.list_name is None and not self.values:
            raise ValueError("list_name or values must be given; got neither")
        return self


class VelocityRule(_RuleBase):
    """Hit when more than ``max_applications`` share ``field``'s value within the window.

    The history lookup counts earlier applications; this one counts too, so the rule hits when
    ``count_recent(field, value, now - window) + 1 > max_applications``.
    """

    kind: Literal["velocity"]
    field: str = Field(min_length=1)
    window_hours: float = Field(gt=0, le=24 * 366)
    max_applications: int = Field(ge=1)


class RangeRule(_RuleBase):
    """Hit when a numeric field lies outside ``[min, max]`` (inclusive), e.g. applicant age."""

    kind: Literal["range"]
    field: str = Field(min_length=1)
    min: float | None = None
    max: float | None = None
    on_missing: OnMissing = "skip"

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min is None and self.max is None:
            raise ValueError("min or max must be given; got neither")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min must be <= max; got min={self.min}, max={self.max}")
        return self


Rule = Annotated[
    MismatchRule | BlacklistRule | VelocityRule | RangeRule, Field(discriminator="kind")
]


class RuleSet(BaseModel):
    """A validated set of fraud rules plus the static lists they reference."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: Literal[1] = 1
    lists: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    external_lists: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        seen: set[str] = set()
        known = set(self.lists) | set(self.external_lists)
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule ids must be unique; got {rule.id!r} twice")
            seen.add(rule.id)
            if (
                isinstance(rule, BlacklistRule)
                and rule.list_name is not None
                and rule.list_name not in known
            ):
                raise ValueError(
                    f"rule {rule.id!r} field list_name must name a list in [lists] or "
                    f"external_lists; got {rule.list_name!r}"
                )
        return self

    @property
    def needs_history(self) -> bool:
        """Whether any enabled rule needs a :class:`HistoryLookup`."""
        return any(isinstance(r, VelocityRule) and r.enabled for r in self.rules)


class RuleHit(BaseModel):
    """One rule that fired for an application; safe to store (carries no applicant values)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule_id: str
    kind: str
    severity: Severity
    action: FraudAction
    message: str


def strongest_action(hits: Iterable[RuleHit]) -> FraudAction | None:
    """The most severe action among hits (decline > review > flag), or None without hits."""
    actions = [hit.action for hit in hits]
    return max(actions, key=_ACTION_RANK.__getitem__) if actions else None


class HistoryLookup(Protocol):
    """Counts earlier applications sharing a field value; the service implements it on its DB."""

    def count_recent(self, field: str, value: str, since: datetime) -> int:
        """Number of recorded applications with ``field == value`` at or after ``since``."""
        ...


def _aware(moment: datetime, *, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise DecisionError(f"{name} must be a timezone-aware datetime; got {moment.isoformat()}")
    return moment


class InMemoryHistory:
    """In-memory :class:`HistoryLookup` for tests and the CLI (thread-safe, sorted timestamps).

    Parameters
    ----------
    fields
        Fields to index; None indexes every string or integer field recorded.
    """

    def __init__(self, *, fields: Collection[str] | None = None) -> None:
        self._fields = None if fields is None else frozenset(fields)
        self._times: dict[tuple[str, str], list[float]] = {}
        self._lock = threading.Lock()

    def record(self, application: Mapping[str, object], *, at: datetime) -> None:
        """Remember an application's field values at time ``at`` (timezone-aware)."""
        stamp = _aware(at, name="at").timestamp()
        with self._lock:
            for field, value in application.items():
                if self._fields is not None and field not in self._fields:
                    continue
                if isinstance(value, bool) or not isinstance(value, str | int):
                    continue
                bisect.insort(self._times.setdefault((field, str(value)), []), stamp)

    def count_recent(self, field: str, value: str, since: datetime) -> int:
        """Number of recorded applications with ``field == value`` at or after ``since``."""
        stamp = _aware(since, name="since").timestamp()
        with self._lock:
            times = self._times.get((field, value), [])
            return len(times) - bisect.bisect_left(times, stamp)

    def prune(self, before: datetime) -> int:
        """Forget records older than ``before``; returns how many were dropped."""
        stamp = _aware(before, name="before").timestamp()
        dropped = 0
        with self._lock:
            for key in list(self._times):
                times = self._times[key]
                cut = bisect.bisect_left(times, stamp)
                dropped += cut
                if cut == len(times):
                    del self._times[key]
                else:
                    del times[:cut]
        return dropped


def _text(value: object) -> str | None:
    """A field value as text; None for missing or blank values."""
    if value is None or (isinstance(value, float) and value != value):  # NaN means missing
        return None
    text = str(value).strip()
    return text or None


class FraudRuleEngine:
    """Applies a :class:`RuleSet` to applications; list contents are normalised once here.

    Parameters
    ----------
    rule_set
        Validated rules.
    lists
        Named value lists (e.g. blacklists loaded from the service's DB); a name here replaces the
        rule set's static list of the same name. Every list a rule references must be available.

    Raises
    ------
    DecisionError
        If a referenced list is available neither in ``lists`` nor in the rule set.
    """

    def __init__(
        self, rule_set: RuleSet, *, lists: Mapping[str, Collection[str]] | None = None
    ) -> None:
        available: dict[str, Collection[str]] = {**rule_set.lists, **(lists or {})}
        self._rule_set = rule_set
        self._rules = [rule for rule in rule_set.rules if rule.enabled]
        self._norm: dict[str, Callable[[str], str]] = {}
        self._sets: dict[str, frozenset[str]] = {}
        for rule in self._rules:
            if isinstance(rule, MismatchRule | BlacklistRule):
                self._norm[rule.id] = _normalizer(rule.normalize)
            if isinstance(rule, BlacklistRule):
                members: list[str] = list(rule.values)
                if rule.list_name is not None:
                    if rule.list_name not in available:
                        raise DecisionError(
                            f"lists must provide {rule.list_name!r} (used by rule {rule.id!r}); "
                            f"got {sorted(available)}"
                        )
                    members += list(available[rule.list_name])
                norm = self._norm[rule.id]
                self._sets[rule.id] = frozenset(norm(m.strip()) for m in members)

    @property
    def rule_set(self) -> RuleSet:
        """The rules this engine applies."""
        return self._rule_set

    @property
    def needs_history(self) -> bool:
        """Whether :meth:`evaluate` needs a history lookup (an enabled velocity rule exists)."""
        return self._rule_set.needs_history

    def evaluate(
        self,
        application: Mapping[str, object],
        *,
        history: HistoryLookup | None = None,
        now: datetime | None = None,
    ) -> list[RuleHit]:
        """Apply every enabled rule to one application.

        Parameters
        ----------
        application
            Field name -> value (strings, numbers, None for missing).
        history
            Lookup of earlier applications; required when a velocity rule is enabled.
        now
            Decision time (timezone-aware); defaults to the current UTC time.

        Returns
        -------
        list of RuleHit
            Hits in rule-file order.

        Raises
        ------
        DecisionError
            If a velocity rule has no history, ``now`` is naive, or a range field is not numeric.
        """
        if self.needs_history and history is None:
            raise DecisionError(
                "history must be given when the rule set has velocity rules; got None"
            )
        moment = datetime.now(UTC) if now is None else _aware(now, name="now")
        hits: list[RuleHit] = []
        for rule in self._rules:
            if self._fires(rule, application, history=history, now=moment):
                hits.append(
                    RuleHit(
                        rule_id=rule.id,
                        kind=rule.kind,
                        severity=rule.severity,
                        action=rule.action,
                        message=rule.message,
                    )
                )
        return hits

    def _fires(
        self,
        rule: MismatchRule | BlacklistRule | VelocityRule | RangeRule,
        application: Mapping[str, object],
        *,
        history: HistoryLookup | None,
        now: datetime,
    ) -> bool:
        if isinstance(rule, MismatchRule):
            left = _text(application.get(rule.fields[0]))
            right = _text(application.get(rule.fields[1]))
            if left is None or right is None:
                return rule.on_missing == "hit"
            norm = self._norm[rule.id]
            return norm(left) != norm(right)
        if isinstance(rule, BlacklistRule):
            value = _text(application.get(rule.field))
            return value is not None and self._norm[rule.id](value) in self._sets[rule.id]
        if isinstance(rule, VelocityRule):
            value = _text(application.get(rule.field))
            if value is None or history is None:
                return False
            since = now - timedelta(hours=rule.window_hours)
            return history.count_recent(rule.field, value, since) + 1 > rule.max_applications
        raw = application.get(rule.field)
        if _text(raw) is None:
            return rule.on_missing == "hit"
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise DecisionError(f"{rule.field} must be a number; got {type(raw).__name__}")
        try:
            number = float(raw)
        except ValueError as e:
            raise DecisionError(f"{rule.field} must be a number; got {raw!r}") from e
        return (rule.min is not None and number < rule.min) or (
            rule.max is not None and number > rule.max
        )


def evaluate(
    rule_set: RuleSet,
    application: Mapping[str, object],
    *,
    history: HistoryLookup | None = None,
    now: datetime | None = None,
    lists: Mapping[str, Collection[str]] | None = None,
) -> list[RuleHit]:
    """Apply a rule set to one application (builds a :class:`FraudRuleEngine`; reuse one instead
    when evaluating many applications)."""
    return FraudRuleEngine(rule_set, lists=lists).evaluate(application, history=history, now=now)


def _describe_errors(error: ValidationError, data: object) -> str:
    raw_rules = data.get("rules") if isinstance(data, dict) else None
    problems: list[str] = []
    for item in error.errors():
        loc = list(item["loc"])
        where = ".".join(str(part) for part in loc) or "rule set"
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            index = loc[1]
            raw = raw_rules[index] if isinstance(raw_rules, list) and index < len(raw_rules) else {}
            rule_id = raw.get("id", f"#{index}") if isinstance(raw, dict) else f"#{index}"
            rest = loc[2:]
            # pydantic puts the discriminator tag in the location; it is not a field name
            if rest and isinstance(raw, dict) and rest[0] == raw.get("kind"):
                rest = rest[1:]
            field = ".".join(str(part) for part in rest)
            where = f"rule {rule_id!r} (rules[{index}])" + (f" field {field}" if field else "")
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] in {"missing", "extra_forbidden"} or item["type"] == "value_error":
            problems.append(f"{where}: {message}")
        else:
            problems.append(f"{where}: {message}; got {item.get('input')!r}")
    return "; ".join(problems)


def rules_from_text(
    text: str, *, fmt: Literal["toml", "yaml"] = "toml", source: str = "<string>"
) -> RuleSet:
    """Parse and validate a rule set from TOML or YAML text.

    Raises
    ------
    DecisionError
        On a syntax error or any invalid rule; the message names the rule id and field.
    """
    data = parse_mapping(text, fmt=fmt, what="fraud rules", source=source)
    try:
        return RuleSet.model_validate(data)
    except ValidationError as e:
        raise DecisionError(f"fraud rules {source}: {_describe_errors(e, data)}") from e


def load_rules(path: Path) -> RuleSet:
    """Load and validate a rule file (``.toml``, ``.yaml`` or ``.yml``).

    Raises
    ------
    DecisionError
        If the file is missing, has another suffix, or is invalid.
    """
    text, fmt = read_policy_file(path, what="fraud rules")
    return rules_from_text(text, fmt=fmt, source=str(path))


def load_default_rules() -> RuleSet:
    """The packaged default rule set (``fedrisk/decisions/policies/default_fraud_rules.toml``)."""
    return load_rules(DEFAULT_FRAUD_RULES_PATH)
