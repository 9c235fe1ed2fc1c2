"""The party's side of the app pin: hash a Flower app the way ``flwr run`` does, sign (lead only),
install the pin in the party's folder, and admit or refuse each run against it.

The rules themselves live in :mod:`fedrisk.federation.pin`; this module adds what needs Flower
(the FAB build, the run-config merge) or the party's own files (its signing key, its folder).
:class:`PinnedRunCheck` is the check the party's warm executor (``clients.executor``) runs on
every run before any of the run's code is installed or imported.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib.util
import tomllib
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from flwr.cli.build import build_fab_from_disk

from clients.bundle import PartyBundle, load_bundle
from clients.flower_runtime import fused_run_config
from fedrisk.errors import IdentityError, RunRefusal, RunRefusedError
from fedrisk.federation.pin import (
    PIN_FILE,
    AppPin,
    SignedPin,
    VerticalRoster,
    check_fab_against_pin,
    check_run_config_against_pin,
    fedrisk_app_rules,
    make_pin,
    parse_pin,
    pinned_vertical_role,
    sign_pin,
    verify_pin,
)
from fedrisk.files import write_atomic


def fab_sha256(app_dir: Path) -> str:
    """SHA-256 (hex) of the FAB ``flwr run`` builds from ``app_dir`` and submits.

    Flower's own builder (``flwr.cli.build.build_fab_from_disk``, what ``flwr run`` and
    ``flwr build`` call) writes every zip entry with a fixed date, so the bytes, and this hash,
    depend on the app's files only; the SuperLink and SuperNodes name the FAB by this hash.
    """
    return hashlib.sha256(build_fab_from_disk(Path(app_dir))).hexdigest()


def shipped_app_dir() -> Path:
    """The Flower app ``fedrisk run`` submits, as installed with fedrisk.

    Found by file location, not imported: the app folder ships in ``server/coordinator`` and a
    party never imports coordinator code.
    """
    spec = importlib.util.find_spec("server")
    if spec is None or not spec.submodule_search_locations:
        raise IdentityError("app directory must be given: fedrisk's server package is not found")
    return Path(next(iter(spec.submodule_search_locations))) / "coordinator" / "flower_app"


def _app_label(app_dir: Path) -> str:
    config = tomllib.loads((Path(app_dir) / "pyproject.toml").read_text(encoding="utf-8"))
    publisher = config.get("tool", {}).get("flwr", {}).get("app", {}).get("publisher", "")
    project = config.get("project", {})
    return f"{publisher}/{project.get('name', '?')}=={project.get('version', '?')}"


def pin_path(bundle: PartyBundle) -> Path:
    """Where a party keeps its verified pin."""
    return bundle.layout.root / PIN_FILE


def create_pin(
    lead: PartyBundle,
    *,
    app_dir: Path | None = None,
    allow_plaintext: bool = False,
    require_self_masks: bool = False,
    coordinator_workspace: str | None = None,
    sequence: int = 1,
    vertical: VerticalRoster | None = None,
) -> SignedPin:
    """The lead's signed pin of ``app_dir`` (default: the app ``fedrisk run`` submits).

    Raises
    ------
    IdentityError
        This party is not the federation's lead.
    """
    if not lead.is_lead:
        raise IdentityError(
            f"pin must be made by the lead party {lead.manifest.lead!r}; got {lead.name!r}"
        )
    app = Path(app_dir) if app_dir else shipped_app_dir()
    pin = make_pin(
        lead.manifest,
        fab_sha256=fab_sha256(app),
        app=_app_label(app),
        issued_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        sequence=sequence,
        rules=fedrisk_app_rules(
            lead.manifest,
            allow_plaintext=allow_plaintext,
            require_self_masks=require_self_masks,
            coordinator_workspace=coordinator_workspace,
            vertical=vertical,
        ),
    )
    return sign_pin(pin, lead.signing_key())


def issue_pin(
    lead: PartyBundle,
    *,
    out_dir: Path,
    app_dir: Path | None = None,
    allow_plaintext: bool = False,
    require_self_masks: bool = False,
    coordinator_workspace: str | None = None,
    vertical: VerticalRoster | None = None,
) -> SignedPin:
    """Sign the next pin (the first, or an amendment), write ``out_dir/pin.json``, install it.

    The sequence is one more than the lead's installed pin (1 without one), so every party
    accepts it as newer and never goes back to the pin it replaces.
    """
    target = pin_path(lead)
    sequence = (
        verify_pin(load_pin_file(target), lead.manifest).sequence + 1 if target.exists() else 1
    )
    signed = create_pin(
        lead,
        app_dir=app_dir,
        allow_plaintext=allow_plaintext,
        require_self_masks=require_self_masks,
        coordinator_workspace=coordinator_workspace,
        sequence=sequence,
        vertical=vertical,
    )
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_atomic(Path(out_dir) / PIN_FILE, signed.to_json(), private=False)
    install_pin(lead, signed)
    return signed


def load_pin_file(path: Path) -> SignedPin:
    """Read ``pin.json`` (not yet trusted: verify it)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise IdentityError(f"pin file {path} must be readable; got {e}") from e
    return parse_pin(text, source=f"pin file {path}")


def install_pin(
    bundle: PartyBundle, signed: SignedPin, *, expect_role: str | None = None
) -> AppPin:
    """Verify ``signed`` against this party's manifest and install it in the party's folder.

    A pin replaces an installed one only with a higher ``sequence`` (an amendment): an older
    pin replayed by anyone is refused. ``expect_role`` (``guest`` or ``host``) is the vertical
    role this party knows it plays: a pin that gives it another role, or none, is refused.

    Raises
    ------
    RunRefusedError
        Unsigned, or not signed by the manifest's lead.
    IdentityError
        Not newer than the installed pin.
    """
    pin = verify_pin(signed, bundle.manifest)
    if expect_role is not None and pinned_vertical_role(pin, bundle.name) != expect_role:
        raise IdentityError(
            f"pin must make {bundle.name} a vertical {expect_role}; got role "
            f"{pinned_vertical_role(pin, bundle.name)!r} (do not accept it: ask the lead)"
        )
    target = pin_path(bundle)
    if target.exists():
        current = verify_pin(load_pin_file(target), bundle.manifest)
        if current == pin:
            return pin
        if pin.sequence <= current.sequence:
            raise IdentityError(
                f"pin must be newer than the installed one (sequence {current.sequence}); got "
                f"sequence {pin.sequence}"
            )
    write_atomic(target, signed.to_json(), private=False)
    return pin


def installed_pin(bundle: PartyBundle) -> SignedPin:
    """The party's installed pin, verified again (``party start`` and the executor call this).

    Raises
    ------
    IdentityError
        No pin installed: run ``fedrisk keys accept`` with the lead's ``pin.json``.
    RunRefusedError
        The installed pin does not verify against the manifest.
    """
    target = pin_path(bundle)
    if not target.exists():
        raise IdentityError(
            f"party {bundle.name} must hold the federation's signed app pin {target}; got none "
            "(install the lead's pin.json with `fedrisk keys accept --pin`)"
        )
    signed = load_pin_file(target)
    verify_pin(signed, bundle.manifest)
    return signed


@functools.lru_cache(maxsize=8)
def _fused_run_config(
    fab_content: bytes, overrides: tuple[tuple[str, bool | int | float | str], ...]
) -> dict[str, bool | int | float | str]:
    # Every task of a run carries the same FAB and overrides: merge them once (≈ 5 ms each).
    return fused_run_config(fab_content, dict(overrides))


@dataclass(frozen=True)
class RunAdmission:
    """What the party knows of a run before any of its code is installed or imported."""

    run_id: int
    fab_content: bytes = field(repr=False)
    """The FAB (a zip) exactly as the party received it."""
    override_config: Mapping[str, bool | int | float | str] = field(default_factory=dict)
    """The run's overrides of the FAB's run-config defaults."""
    stated_fab_hash: str = ""
    """The hash the SuperLink announced: shown in logs, never trusted."""

    @property
    def fab_sha256(self) -> str:
        """SHA-256 (hex) of the FAB bytes the party holds, computed here."""
        return hashlib.sha256(self.fab_content).hexdigest()

    def run_config(self) -> dict[str, bool | int | float | str]:
        """The run config the ClientApp would read: the FAB's defaults fused with the overrides,
        exactly as Flower fuses them (``get_fused_config_from_fab``).

        Raises
        ------
        RunRefusedError
            ``CONFIG_KEY``: an override names a key the app does not define.
        """
        try:
            return dict(
                _fused_run_config(self.fab_content, tuple(sorted(self.override_config.items())))
            )
        except (ValueError, KeyError, zipfile.BadZipFile) as e:
            raise RunRefusedError(
                f"run config must only override keys the app defines; got {e}",
                reason=RunRefusal.CONFIG_KEY,
            ) from e


class PinnedRunCheck:
    """The party's admission check: a run must be the app pinned in the party's own folder.

    The party's bundle (its manifest, with the lead's key) is read from ``party_dir`` once it
    loads; the installed pin is read again whenever its file changes, so an amendment accepted
    with ``fedrisk party pin accept`` applies from the next run on, and a pin removed or
    tampered with refuses every run. Its signature is verified on every run. Nothing comes from
    the SuperLink or from ``node_config``: the manifest and the pin are the party's own copies.

    Raises
    ------
    RunRefusedError
        ``NO_PIN`` when the party holds no valid pin (secure by default: a party that never
        accepted a pin runs nothing), otherwise the reason the pin check gives.
    """

    def __init__(self, party_dir: Path) -> None:
        self.party_dir = Path(party_dir)
        self._bundle: PartyBundle | None = None
        self._pin: tuple[tuple[int, int, int], SignedPin] | None = None

    def __repr__(self) -> str:
        return f"PinnedRunCheck({str(self.party_dir)!r})"

    def installed(self) -> tuple[PartyBundle, SignedPin]:
        """The party's bundle and its installed pin (verified when read)."""
        try:
            if self._bundle is None:
                self._bundle = load_bundle(self.party_dir)
            bundle = self._bundle
            stat = pin_path(bundle).stat()
            stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if self._pin is None or self._pin[0] != stamp:
                self._pin = None
                self._pin = (stamp, installed_pin(bundle))
        except (IdentityError, OSError) as e:
            raise RunRefusedError(
                f"party must hold a valid signed app pin before it runs anything; got {e}",
                reason=RunRefusal.NO_PIN,
            ) from e
        return bundle, self._pin[1]

    def __call__(self, run: RunAdmission) -> None:
        bundle, signed = self.installed()
        # The hash first: a foreign FAB is refused before anything inside it is parsed.
        verified = check_fab_against_pin(signed, manifest=bundle.manifest, fab_hash=run.fab_sha256)
        check_run_config_against_pin(verified, run.run_config())


def refuse_every_run(run: RunAdmission) -> None:
    """The check of an executor that was given no party folder: it runs nothing."""
    raise RunRefusedError(
        f"run {run.run_id} must be checked against the party's pin; got an executor started "
        "without --party-dir",
        reason=RunRefusal.NO_PIN,
    )
