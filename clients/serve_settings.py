"""A host's ``fedrisk party serve`` settings after a deployed vertical run, from its own folder.

Everything comes from what the host already holds: its released part (its executor wrote it to
its own release folder), its view of its table, its pairwise X25519 keys from the run's setup,
the federation's identifier key (derived from the CKKS secret context every party holds), the
parties' signing keys from its own manifest, and its mutual-TLS certificate from the CA.
"""

from __future__ import annotations

from pathlib import Path

from clients.alignment import identifier_key
from clients.bundle import PartyBundle
from clients.enrollment import PARTY_TLS_CERTIFICATE, PARTY_TLS_KEY, TLS_DIR
from clients.feature_service import ServiceSettings
from clients.party import PARTY_CONFIG_FILE, load_party_config
from clients.pinning import installed_pin
from clients.vertical_party import load_config
from fedrisk.errors import ConfigError
from fedrisk.federation.pin import FixedRule
from fedrisk.federation.run_config import FederationConfig
from fedrisk.files import write_atomic


def write_serve_settings(bundle: PartyBundle, *, model_id: str, out: Path) -> ServiceSettings:
    """Write ``out`` (JSON) for ``fedrisk party serve`` of this host's part of ``model_id``.

    Raises
    ------
    ConfigError
        The party was not started with a vertical view, holds no part of ``model_id``, or no
        TLS certificate (``fedrisk party tls-request`` / ``tls-install`` first).
    """
    state = bundle.layout.state_dir
    party = load_party_config(state / PARTY_CONFIG_FILE)
    if party.vertical is None or party.secret_context is None:
        raise ConfigError(
            f"party {bundle.name} must have taken part in a vertical run (party start --vertical)"
        )
    view = load_config(party.vertical)
    part = view.release_dir / model_id / bundle.name
    tls = bundle.layout.root / TLS_DIR
    missing = [
        p for p in (part, tls / PARTY_TLS_CERTIFICATE, tls / PARTY_TLS_KEY) if not p.exists()
    ]
    if missing or view.id_column is None:
        raise ConfigError(
            f"host {bundle.name} must hold its part of {model_id}, its TLS certificate and key; "
            f"got none of {[str(p) for p in missing]}"
        )
    folder = state / "serve"
    trusted = folder / "trusted_keys"
    trusted.mkdir(parents=True, exist_ok=True)
    for record in bundle.manifest.parties:
        write_atomic(trusted / f"{record.name}.pub", record.signing_public_key)
    # The key alignment used (clients.alignment.identifier_key): the lender holds the same.
    key_path = identifier_key(party, FederationConfig()).save(folder / "identifier.key")
    kind = installed_pin(bundle).pin.run_config.get("vertical-id-kind")
    settings = ServiceSettings.model_validate(
        {
            "part": part,
            "trusted_keys": trusted,
            "data": view.own_data,
            "id_column": view.id_column,
            "id_kind": kind.value if isinstance(kind, FixedRule) else "opaque",
            "identifier_key": key_path,
            "masks_dir": view.peers_dir,
            "certificate": tls / PARTY_TLS_CERTIFICATE,
            "private_key": tls / PARTY_TLS_KEY,
            "ca_certificate": bundle.layout.ca_certificate,
        }
    )
    write_atomic(out, settings.model_dump_json(indent=1))
    return settings
