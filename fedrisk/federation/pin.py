"""The federation's app pin: exactly which Flower app the parties agreed to run, signed by the lead.

The lead party signs an :class:`AppPin` with its Ed25519 key (``fedrisk keys init`` writes it
beside the key ceremony's hand-outs); every party verifies it against the manifest's lead key at
``keys accept`` and ``party start``, and the party-side executor checks every run before it
installs, imports or executes any of the run's code: the FAB's hash first
(:func:`check_fab_against_pin`), then the merged run config
(:func:`check_run_config_against_pin`); :func:`check_run_against_pin` does both.
The coordinator holds no key that can make or change a pin: a new app version means a new pin
with a higher ``sequence``, signed by the lead (``fedrisk party pin sign``) and handed out like
the ceremony's files (``fedrisk party pin accept``).

What a pin fixes:

- ``fab_sha256``: the SHA-256 of the FAB as ``flwr run`` builds and submits it (Flower's
  ``build_fab_from_disk``; the SuperLink and SuperNodes name a FAB by this hash). fedrisk's FAB
  holds only configuration (``pyproject.toml``: the component references
  ``clients.clientapp:app`` / ``server.coordinator.serverapp:app`` and the run-config defaults),
  so the hash pins the components' names and configuration;
- ``fedrisk_version``: the code those references resolve to, installed at each party;
- ``run_config``: every run-config key a run may set, each with its rule. A key not listed is
  refused (``data-path`` is no run-config key of fedrisk's app, so a run cannot set it), path
  keys are fixed or confined to a coordinator folder, and ``plaintext`` is fixed to ``false``
  unless the pin allows the insecure comparison mode.

A vertical federation's pin (:class:`VerticalRoster`) fixes the layout, the guest, the parties
and the identifier column: the coordinator cannot make a host the guest, add a party of its own
or turn the run horizontal. Each party also checks every vertical step against the pinned roster
(:func:`check_vertical_roster`), since the coordinator writes the names inside the messages.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import PurePosixPath
from typing import Annotated, Final, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from fedrisk.decisions.stages import STAGES
from fedrisk.errors import IdentityError, RunRefusal, RunRefusedError
from fedrisk.federation.identifiers import IdentifierKind
from fedrisk.federation.roster import FederationManifest
from fedrisk.federation.run_config import FederationConfig
from fedrisk.ml.kinds import MODEL_KINDS, OPTIMIZERS, SERVER_OPTIMIZERS
from fedrisk.ml.privacy import DP_MODES
from fedrisk.release.identity import key_id

PIN_FILE: Final = "pin.json"
_PAYLOAD_LABEL: Final = b"fedrisk-app-pin-v1\n"
_SHA256_HEX: Final = re.compile(r"^[0-9a-f]{64}$")

ScalarValue = StrictBool | StrictInt | StrictFloat | StrictStr
"""A run-config value, strictly typed: ``0`` is not ``false`` and ``"1"`` is not ``1``."""


class FixedRule(BaseModel):
    """The key may only take this one value."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["fixed"] = "fixed"
    value: ScalarValue


class ChoiceRule(BaseModel):
    """The key takes one of these values."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["choice"] = "choice"
    values: tuple[ScalarValue, ...]


class RangeRule(BaseModel):
    """A number in ``[min, max]``; ``integer`` refuses floats (booleans are never numbers here)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["range"] = "range"
    integer: bool
    min: float
    max: float


class PatternRule(BaseModel):
    """A string matching ``pattern`` in full (names and lists, never paths)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["pattern"] = "pattern"
    pattern: str


class PathRule(BaseModel):
    """An absolute, normalized path inside ``under`` (a coordinator-side folder)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["path"] = "path"
    under: str


Rule = Annotated[
    FixedRule | ChoiceRule | RangeRule | PatternRule | PathRule, Field(discriminator="kind")
]


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b


def rule_violation(
    rule: FixedRule | ChoiceRule | RangeRule | PatternRule | PathRule, value: object
) -> str | None:
    """What is wrong with ``value`` under ``rule`` (``must be …``), or ``None`` if it is allowed."""
    if isinstance(rule, FixedRule):
        return None if _same(value, rule.value) else f"must be {rule.value!r}"
    if isinstance(rule, ChoiceRule):
        ok = any(_same(value, allowed) for allowed in rule.values)
        return None if ok else f"must be one of {list(rule.values)}"
    if isinstance(rule, RangeRule):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (rule.integer and not isinstance(value, int))
        ):
            return f"must be {'an integer' if rule.integer else 'a number'}"
        if not rule.min <= float(value) <= rule.max:
            return f"must be in [{rule.min:g}, {rule.max:g}]"
        return None
    if isinstance(rule, PatternRule):
        ok = isinstance(value, str) and re.fullmatch(rule.pattern, value) is not None
        return None if ok else f"must match {rule.pattern!r}"
    if not isinstance(value, str) or not value:
        return f"must be a path inside {rule.under}"
    path = PurePosixPath(value)
    normal = os.path.normpath(value) == value and ".." not in path.parts
    inside = path.is_absolute() and normal and path.is_relative_to(PurePosixPath(rule.under))
    return None if inside else f"must be a normalized absolute path inside {rule.under}"


class AppPin(BaseModel):
    """The statement the lead signs: which app, which fedrisk, which run configs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = 1
    federation: str
    sequence: int = Field(ge=1)
    """Amendments carry a higher number; a party never goes back to a lower one."""
    issued_by: str
    issued_at: str
    app: str
    """``publisher/name==version`` from the FAB's ``pyproject.toml`` (for people; not trusted)."""
    fab_sha256: str = Field(pattern=_SHA256_HEX.pattern)
    fedrisk_version: str
    run_config: dict[str, Rule]

    def payload(self) -> bytes:
        """The canonical bytes the lead signs."""
        body = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return _PAYLOAD_LABEL + body.encode("utf-8")


class SignedPin(BaseModel):
    """``pin.json``: the pin with the lead's Ed25519 signature."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pin: AppPin
    signer_key_id: str
    signature: str

    def to_json(self) -> str:
        """Canonical, human-readable JSON text."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


class VerticalRoster(BaseModel):
    """Who plays which part in a vertical federation's runs: what a vertical pin fixes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    guest: str = Field(min_length=1)
    """The label holder."""
    hosts: tuple[str, ...] = Field(min_length=1)
    """The feature holders."""
    id_column: str = Field(min_length=1, pattern=r"^[^,]+$")
    """The identifier column every party's own table holds (private set intersection's key)."""
    id_kind: IdentifierKind = "opaque"

    @model_validator(mode="after")
    def _distinct(self) -> VerticalRoster:
        if len(set(self.parties)) != len(self.parties):
            raise ValueError(
                f"vertical parties must be distinct, the guest not among the hosts; got guest "
                f"{self.guest!r} and hosts {list(self.hosts)}"
            )
        return self

    @property
    def parties(self) -> tuple[str, ...]:
        """The guest first, then the hosts."""
        return (self.guest, *self.hosts)

    def role_of(self, party: str) -> str | None:
        """``guest``, ``host``, or None for a party outside the roster."""
        if party == self.guest:
            return "guest"
        return "host" if party in self.hosts else None


def _vertical_rules(manifest: FederationManifest, roster: VerticalRoster) -> dict[str, Rule]:
    """The run-config keys a vertical pin fixes (the rest keep the horizontal rules)."""
    unknown = sorted(set(roster.parties) - set(manifest.party_names))
    if unknown:
        raise IdentityError(
            f"vertical parties must be parties of federation {manifest.federation!r} "
            f"{list(manifest.party_names)}; got also {unknown}"
        )
    return {
        "layout": FixedRule(value="vertical"),
        "model": FixedRule(value="lr"),
        "vertical-guest": FixedRule(value=roster.guest),
        "vertical-parties": FixedRule(value=",".join(roster.parties)),
        "vertical-id-column": FixedRule(value=roster.id_column),
        "vertical-id-kind": FixedRule(value=roster.id_kind),
        # Every party takes part in every vertical step: a smaller quorum has no meaning.
        "min-parties": FixedRule(value=len(roster.parties)),
        "allow-fewer-parties": FixedRule(value=len(roster.parties) < 3),
    }


def check_vertical_roster(
    config: FederationConfig,
    *,
    party: str,
    role: str | None = None,
    guest: str | None = None,
    peers: Iterable[str] = (),
) -> None:
    """Refuse a vertical step that does not fit the run's pinned roster, at the party.

    ``config`` is the run config the party's executor already checked against its pin, so its
    ``vertical-guest`` and ``vertical-parties`` are the pinned ones; the coordinator writes
    ``guest`` and the ``peers`` into the messages themselves, and a party knows its own
    ``role`` from its local data (the guest holds the label). A run without
    ``vertical-parties`` (the simulation engine) checks only the role against the guest.

    Raises
    ------
    RunRefusedError
        ``CONFIG_VALUE``, naming the key the step contradicts.
    """
    problems = []
    roster = config.vertical_roster
    if config.vertical_guest and guest is not None and guest != config.vertical_guest:
        problems.append(f"vertical-guest is {config.vertical_guest!r}; the step names {guest!r}")
    if config.vertical_guest and role is not None:
        pinned = "guest" if party == config.vertical_guest else "host"
        if role != pinned:
            problems.append(
                f"vertical-guest {config.vertical_guest!r} makes {party} a {pinned}; its own "
                f"data makes it a {role}"
            )
    if roster:
        outside = sorted({party, *peers} - set(roster))
        if outside:
            problems.append(f"vertical-parties is {list(roster)}; the step names also {outside}")
    if problems:
        raise RunRefusedError(
            f"vertical step must fit the pinned roster at {party}: " + "; ".join(problems),
            reason=RunRefusal.CONFIG_VALUE,
        )


@functools.cache
def installed_fedrisk_version() -> str:
    """The version of the fedrisk distribution this process runs (read once: it cannot change
    under a running process, and reading package metadata costs milliseconds)."""
    return metadata.version("fedrisk")


def fedrisk_app_rules(
    manifest: FederationManifest,
    *,
    allow_plaintext: bool = False,
    require_self_masks: bool = False,
    coordinator_workspace: str | None = None,
    vertical: VerticalRoster | None = None,
) -> dict[str, Rule]:
    """The run-config rules of fedrisk's own app, from the closed sets the run config uses.

    Parameters
    ----------
    manifest
        ``release-party`` may only name one of its parties.
    allow_plaintext
        Whether runs may turn encryption off (``plaintext = true``, the cost-comparison mode).
    require_self_masks
        Whether every run must add SecAgg self masks (``mask-self = true``). Without them a
        coordinator that falsely declares a live party dropped can unmask that party's vector,
        so a federation that does not trust its coordinator requires them here: the run
        config's own value is the coordinator's choice.
    coordinator_workspace
        The coordinator's workspace as its ``fedrisk run`` sees it: ``public-context`` is then
        fixed to its installed public context and ``server-dir`` confined to its ``runs/``.
        Without it both must stay empty.
    vertical
        A vertical federation's roster: runs are then vertical LR among exactly these parties
        in these roles (layout, guest, parties, identifier column and quorum fixed). Without it
        runs are horizontal.

    Raises
    ------
    IdentityError
        ``vertical`` names a party outside the manifest.
    """
    if coordinator_workspace:
        root = PurePosixPath(coordinator_workspace)
        public_context: Rule = FixedRule(value=str(root / "ckks" / "ckks.public.ctx"))
        server_dir: Rule = PathRule(under=str(root / "runs"))
    else:
        public_context = FixedRule(value="")
        server_dir = FixedRule(value="")
    plaintext: Rule = (
        ChoiceRule(values=(False, True)) if allow_plaintext else FixedRule(value=False)
    )
    rules: dict[str, Rule] = {
        "run-id": PatternRule(pattern=r"[A-Za-z0-9_.-]{0,64}"),
        "rounds": RangeRule(integer=True, min=1, max=1000),
        "model": ChoiceRule(values=MODEL_KINDS),
        "hidden": PatternRule(pattern=r"[0-9]{1,4}(,[0-9]{1,4}){0,7}"),
        "seed": RangeRule(integer=True, min=0, max=2**31 - 1),
        "plaintext": plaintext,
        "min-parties": RangeRule(integer=True, min=3, max=len(manifest.parties)),
        "allow-fewer-parties": FixedRule(value=False),
        "fraction": RangeRule(integer=False, min=0.01, max=1.0),
        "round-timeout": RangeRule(integer=False, min=1.0, max=86400.0),
        "local-epochs": RangeRule(integer=True, min=1, max=100),
        "batch-size": RangeRule(integer=True, min=1, max=65536),
        "learning-rate": RangeRule(integer=False, min=0.0, max=10.0),
        "optimizer": ChoiceRule(values=OPTIMIZERS),
        "proximal-mu": RangeRule(integer=False, min=0.0, max=100.0),
        "server-optimizer": ChoiceRule(values=SERVER_OPTIMIZERS),
        "server-learning-rate": RangeRule(integer=False, min=1e-6, max=10.0),
        "release-party": ChoiceRule(values=tuple(manifest.party_names)),
        "stage": ChoiceRule(values=STAGES),
        "public-context": public_context,
        "server-dir": server_dir,
        "sim-workspace": FixedRule(value=""),
        "resume": ChoiceRule(values=(False, True)),
        "trees": RangeRule(integer=True, min=1, max=2000),
        # A horizontal pin refuses vertical runs; a vertical one overrides these below.
        "layout": FixedRule(value="horizontal"),
        "vertical-guest": FixedRule(value=""),
        "vertical-parties": FixedRule(value=""),
        "vertical-id-column": FixedRule(value=""),
        "vertical-id-kind": FixedRule(value="opaque"),
        "l2": RangeRule(integer=False, min=0.0, max=10.0),
        "patience": RangeRule(integer=True, min=1, max=1000),
        # Differential privacy: any mode or budget the run config accepts; a party's own parse
        # still refuses a noise multiplier that spends more than the budget.
        "dp-mode": ChoiceRule(values=DP_MODES),
        "dp-epsilon": RangeRule(integer=False, min=0.0, max=1000.0),
        "dp-delta": RangeRule(integer=False, min=1e-12, max=0.01),
        "dp-clip-norm": RangeRule(integer=False, min=1e-6, max=1000.0),
        "dp-noise-multiplier": RangeRule(integer=False, min=0.0, max=1e4),
        "dp-sampling-rate": RangeRule(integer=False, min=1e-6, max=1.0),
        # Masks come off only with encryption's own comparison mode.
        "masking": ChoiceRule(values=(True, False)) if allow_plaintext else FixedRule(value=True),
        # Self masks cost one exchange per masked exchange: the run's choice unless the pin
        # requires them.
        "mask-self": FixedRule(value=True)
        if require_self_masks
        else ChoiceRule(values=(False, True)),
        "mask-threshold": RangeRule(integer=True, min=0, max=len(manifest.parties)),
        "tree-depth": RangeRule(integer=True, min=1, max=10),
        "tree-learning-rate": RangeRule(integer=False, min=1e-6, max=1.0),
        "tree-lambda": RangeRule(integer=False, min=0.0, max=1000.0),
        "tree-bins": RangeRule(integer=True, min=2, max=1000),
        "tree-colsample": RangeRule(integer=False, min=0.01, max=1.0),
    }
    if vertical is not None:
        rules.update(_vertical_rules(manifest, vertical))
    return rules


def pinned_vertical_role(pin: AppPin, party: str) -> str | None:
    """``guest`` or ``host`` when ``pin`` fixes a vertical roster naming ``party``; else None."""
    fixed = {
        key: rule.value
        for key, rule in pin.run_config.items()
        if key in ("layout", "vertical-guest", "vertical-parties") and isinstance(rule, FixedRule)
    }
    if fixed.get("layout") != "vertical":
        return None
    parties = str(fixed.get("vertical-parties", "")).split(",")
    if party not in parties:
        return None
    return "guest" if party == fixed.get("vertical-guest") else "host"


def sign_pin(pin: AppPin, signing_key: Ed25519PrivateKey) -> SignedPin:
    """Sign ``pin`` with the lead's Ed25519 key."""
    return SignedPin(
        pin=pin,
        signer_key_id=key_id(signing_key.public_key()),
        signature=base64.b64encode(signing_key.sign(pin.payload())).decode("ascii"),
    )


def parse_pin(text: str, *, source: str) -> SignedPin:
    """Validate ``pin.json`` text (shape only; :func:`verify_pin` decides trust)."""
    try:
        return SignedPin.model_validate(json.loads(text))
    except (json.JSONDecodeError, ValidationError) as e:
        raise IdentityError(f"{source} must be a signed app pin (pin.json); got {e}") from e


def verify_pin(signed: object, manifest: FederationManifest) -> AppPin:
    """The pin, once its signature by the manifest's lead party verifies.

    Raises
    ------
    RunRefusedError
        ``UNSIGNED_PIN``: not a signed pin, or no signature; ``UNTRUSTED_PIN``: signed by another
        key than the lead's, for another federation, or altered after signing.
    """
    if not isinstance(signed, SignedPin) or not signed.signature:
        raise RunRefusedError(
            f"pin must be a SignedPin signed by the lead {manifest.lead!r}; got "
            f"{type(signed).__name__ if not isinstance(signed, SignedPin) else 'no signature'}",
            reason=RunRefusal.UNSIGNED_PIN,
        )
    pin = signed.pin
    lead = manifest.party(manifest.lead)
    if pin.federation != manifest.federation or pin.issued_by != manifest.lead:
        raise RunRefusedError(
            f"pin must be issued by lead {manifest.lead!r} of federation "
            f"{manifest.federation!r}; got {pin.issued_by!r} of {pin.federation!r}",
            reason=RunRefusal.UNTRUSTED_PIN,
        )
    if signed.signer_key_id != lead.signing_key_id:
        raise RunRefusedError(
            f"pin must be signed by the lead's key {lead.signing_key_id}; got key "
            f"{signed.signer_key_id}",
            reason=RunRefusal.UNTRUSTED_PIN,
        )
    try:
        signature = base64.b64decode(signed.signature.encode("ascii"), validate=True)
        lead.verify_key().verify(signature, pin.payload())
    except (binascii.Error, UnicodeEncodeError, InvalidSignature) as e:
        raise RunRefusedError(
            "pin must carry the lead's valid signature; got one that does not verify (the pin "
            "was altered after signing)",
            reason=RunRefusal.UNTRUSTED_PIN,
        ) from e
    return pin


def check_fab_against_pin(
    pin: object,
    *,
    manifest: FederationManifest,
    fab_hash: str,
    fedrisk_version: str | None = None,
) -> AppPin:
    """The verified pin, once ``pin`` verifies and pins this FAB and this fedrisk; else refuse.

    The first half of :func:`check_run_against_pin`: it needs nothing of the run but the hash,
    so a party can refuse a foreign FAB before it parses anything inside it.

    Raises
    ------
    RunRefusedError
        The pin does not verify, the FAB is not the pinned one, or fedrisk is another version.
    """
    verified = verify_pin(pin, manifest)
    if fab_hash.lower() != verified.fab_sha256:
        raise RunRefusedError(
            f"FAB must be the pinned app {verified.app} ({verified.fab_sha256[:16]}…); got a FAB "
            f"with hash {fab_hash[:16]}…",
            reason=RunRefusal.FOREIGN_APP,
        )
    version = fedrisk_version or installed_fedrisk_version()
    if version != verified.fedrisk_version:
        raise RunRefusedError(
            f"fedrisk must be version {verified.fedrisk_version} as pinned; got {version}",
            reason=RunRefusal.FEDRISK_VERSION,
        )
    return verified


def check_run_config_against_pin(verified: AppPin, run_config: Mapping[str, object]) -> None:
    """Refuse a run config with a key the pin does not list or a value its rule forbids.

    Raises
    ------
    RunRefusedError
        ``CONFIG_KEY`` or ``CONFIG_VALUE``, naming every offending key.
    """
    unknown = sorted(set(run_config) - set(verified.run_config))
    if unknown:
        raise RunRefusedError(
            f"run-config keys must be among those pinned {sorted(verified.run_config)}; got "
            f"{unknown}",
            reason=RunRefusal.CONFIG_KEY,
        )
    problems = [
        f"{key} {problem}; got {value!r}"
        for key, value in sorted(run_config.items())
        if (problem := rule_violation(verified.run_config[key], value)) is not None
    ]
    if problems:
        raise RunRefusedError(
            "run config must satisfy the pin: " + "; ".join(problems),
            reason=RunRefusal.CONFIG_VALUE,
        )


def check_run_against_pin(
    pin: object,
    *,
    manifest: FederationManifest,
    fab_hash: str,
    run_config: Mapping[str, object],
    fedrisk_version: str | None = None,
) -> None:
    """Refuse a run that is not the pinned app with an allowed config; return if it is.

    Call it before importing or executing any of the run's code.

    Parameters
    ----------
    pin
        The party's installed :class:`SignedPin`; its signature is checked here, every time.
    manifest
        The party's own copy of the federation manifest (the lead's key comes from it).
    fab_hash
        SHA-256 (hex) of the run's FAB bytes, computed by the caller from the bytes it is about
        to install (not the hash the SuperLink announces).
    run_config
        The run's effective run config (FAB defaults merged with the run's overrides).
    fedrisk_version
        The fedrisk the components resolve to; default: the installed distribution's.

    Raises
    ------
    RunRefusedError
        With ``reason`` saying which check failed, and a message naming the key or hash.
    """
    verified = check_fab_against_pin(
        pin, manifest=manifest, fab_hash=fab_hash, fedrisk_version=fedrisk_version
    )
    check_run_config_against_pin(verified, run_config)


def make_pin(
    manifest: FederationManifest,
    *,
    fab_sha256: str,
    app: str,
    issued_at: str,
    sequence: int = 1,
    rules: Mapping[str, Rule] | None = None,
    fedrisk_version: str | None = None,
) -> AppPin:
    """An unsigned pin for ``manifest``'s federation, issued by its lead (sign it next)."""
    return AppPin(
        federation=manifest.federation,
        sequence=sequence,
        issued_by=manifest.lead,
        issued_at=issued_at,
        app=app,
        fab_sha256=fab_sha256.lower(),
        fedrisk_version=fedrisk_version or installed_fedrisk_version(),
        run_config=dict(rules if rules is not None else fedrisk_app_rules(manifest)),
    )


__all__: Sequence[str] = [
    "PIN_FILE",
    "AppPin",
    "ChoiceRule",
    "FixedRule",
    "PathRule",
    "PatternRule",
    "RangeRule",
    "Rule",
    "SignedPin",
    "VerticalRoster",
    "check_fab_against_pin",
    "check_run_against_pin",
    "check_run_config_against_pin",
    "check_vertical_roster",
    "fedrisk_app_rules",
    "make_pin",
    "parse_pin",
    "pinned_vertical_role",
    "sign_pin",
    "verify_pin",
]
