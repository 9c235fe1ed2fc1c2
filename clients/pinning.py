"""The party's side of the app pin: hash a Flower app the way ``flwr run`` does, sign (lead only),
install and check the pin in the party's folder.

The rules themselves and the run check live in :mod:`fedrisk.federation.pin`; this module adds
what needs Flower (the FAB build) or the party's own files (its signing key, its folder).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import tomllib
from pathlib import Path

from flwr.cli.build import build_fab_from_disk

from clients.bundle import PartyBundle
from fedrisk.errors import IdentityError
from fedrisk.federation.pin import (
    PIN_FILE,
    AppPin,
    SignedPin,
    fedrisk_app_rules,
    make_pin,
    parse_pin,
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
    coordinator_workspace: str | None = None,
    sequence: int = 1,
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
            coordinator_workspace=coordinator_workspace,
        ),
    )
    return sign_pin(pin, lead.signing_key())


def load_pin_file(path: Path) -> SignedPin:
    """Read ``pin.json`` (not yet trusted: verify it)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise IdentityError(f"pin file {path} must be readable; got {e}") from e
    return parse_pin(text, source=f"pin file {path}")


def install_pin(bundle: PartyBundle, signed: SignedPin) -> AppPin:
    """Verify ``signed`` against this party's manifest and install it in the party's folder.

    A pin replaces an installed one only with a higher ``sequence`` (an amendment): an older
    pin replayed by anyone is refused.

    Raises
    ------
    RunRefusedError
        Unsigned, or not signed by the manifest's lead.
    IdentityError
        Not newer than the installed pin.
    """
    pin = verify_pin(signed, bundle.manifest)
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
