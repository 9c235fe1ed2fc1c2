"""Lays out a simulated federation on disk: one folder per party, one for the server.

Each simulated party gets what a real one would hold: its own train/test files, the schema, the
CKKS secret context (mode 0600), an Ed25519 signing key, an X25519 receiving key (pairwise
masks), the federation's receiving public keys (``peer_keys.json``) and a ``party.toml``. The
server folder gets the public context only. The ClientApp then reads its files exactly as a
deployed party does.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedrisk.data.partitions import PartyData
from fedrisk.data.schema import DatasetSchema, schema_to_toml
from fedrisk.release.identity import (
    generate_receiving_key,
    generate_signing_key,
    key_id,
    receiving_public_key_pem,
    save_private_key,
    save_public_key,
    save_receiving_key,
)
from secure_agg.keys import write_atomics
from secure_agg.params import HEParams


@dataclass(frozen=True)
class SimWorkspace:
    """Paths of a prepared simulated federation."""

    root: Path
    party_names: list[str]
    public_context: Path
    server_dir: Path
    release_dir: Path
    trusted_keys_dir: Path


def _toml_path(path: Path) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def prepare_workspace(
    root: Path,
    *,
    schema: DatasetSchema,
    parties: Sequence[PartyData],
    release_dir: Path,
    he_params: HEParams | None = None,
) -> SimWorkspace:
    """Write every party's files, the keys and the server folder under ``root``.

    ``release_dir`` is the registry folder that receives the released artifact; the releasing
    party's public signing key is placed in its ``trusted_keys/`` so the scoring service trusts it.
    """
    params = he_params or HEParams()
    root.mkdir(parents=True, exist_ok=True)
    keys_dir = root / "keys"
    if keys_dir.exists():
        shutil.rmtree(keys_dir)
    key_paths = write_atomics(params, keys_dir)
    server_dir = root / "server"
    server_dir.mkdir(exist_ok=True)
    public_context = server_dir / "ckks.public.ctx"
    shutil.copyfile(key_paths.public, public_context)
    trusted = release_dir / "trusted_keys"
    trusted.mkdir(parents=True, exist_ok=True)
    schema_text = schema_to_toml(schema)
    names: list[str] = []
    receiving = {party.name: generate_receiving_key() for party in parties}
    peer_keys = json.dumps(
        {name: receiving_public_key_pem(key.public_key()) for name, key in receiving.items()},
        indent=1,
    )
    for index, party in enumerate(parties):
        folder = root / "parties" / f"party_{index}"
        folder.mkdir(parents=True, exist_ok=True)
        party.train.to_parquet(folder / "train.parquet", index=False)
        party.test.to_parquet(folder / "test.parquet", index=False)
        (folder / "schema.toml").write_text(schema_text, encoding="utf-8")
        secret = folder / "ckks.secret.ctx"
        shutil.copyfile(key_paths.secret, secret)
        secret.chmod(0o600)
        signing_key = generate_signing_key()
        key_file = folder / "signing.key"
        key_file.unlink(missing_ok=True)
        save_private_key(signing_key, key_file)
        # Named by key id too: a later run into the same registry must not replace the key
        # that verifies an earlier run's artifact.
        public = signing_key.public_key()
        save_public_key(public, trusted / f"{party.name}-{key_id(public)}.pub")
        receiving_key = folder / "receiving.key"
        receiving_key.unlink(missing_ok=True)
        save_receiving_key(receiving[party.name], receiving_key)
        (folder / "peer_keys.json").write_text(peer_keys, encoding="utf-8")
        (folder / "party.toml").write_text(
            "\n".join(
                [
                    f'name = "{party.name}"',
                    'train = "train.parquet"',
                    'test = "test.parquet"',
                    'schema_file = "schema.toml"',
                    'secret_context = "ckks.secret.ctx"',
                    'signing_key = "signing.key"',
                    'receiving_key = "receiving.key"',
                    'peer_keys = "peer_keys.json"',
                    f"release_dir = {_toml_path(release_dir)}",
                    "",
                    "[he_params]",
                    f"poly_modulus_degree = {params.poly_modulus_degree}",
                    f"coeff_mod_bit_sizes = {list(params.coeff_mod_bit_sizes)}",
                    f"global_scale_bits = {params.global_scale_bits}",
                    "",
                ]
            ),
            encoding="utf-8",
        )
        names.append(party.name)
    # The shared key folder held the secret only to copy it to the parties: remove it so the
    # workspace's server side never sits next to a secret key.
    shutil.rmtree(keys_dir)
    return SimWorkspace(
        root=root,
        party_names=names,
        public_context=public_context,
        server_dir=server_dir,
        release_dir=release_dir,
        trusted_keys_dir=trusted,
    )
