"""After a deployed encrypted run, no coordinator file, artifact or party log leaks a secret.

Scanned: every file of the coordinator's workspace (checkpoints, progress log, run files, the
SuperLink's state database and log, FLWR_HOME), the released artifact, and every party's
SuperNode log. None may hold a CKKS secret key (loaded as a TenSEAL context, or embedded as
bytes), a private key other than the coordinator's own CA and TLS keys, or raw party data (full
CSV rows, customer ids, distinctive feature values as text or as float64 bytes).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clients.bundle import load_bundle
from fedrisk.data.datasets import load_dataset
from fedrisk.data.partitions import PartyData, parse_partition, partition_frame
from fedrisk.data.schema import DatasetSchema
from secure_agg.codec import CHUNK_KEY_PREFIX, CKKS_STYPE, HEADER_KEY
from secure_agg.errors import KeyFileError, SecretContextRefusedError
from secure_agg.keys import CkksContext, context_from_bytes, load_public_context
from server.coordinator.provisioning import WorkspaceLayout
from simulations.deployment import coordinator_files, running_federation

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROWS_PER_PARTY = 8
"""Training rows per party whose raw values are searched for."""

WINDOW = 48
"""Bytes per fragment of a secret file that is searched for (position-independent)."""


def distinctive_parties(seed: int) -> tuple[DatasetSchema, list[PartyData]]:
    """Synthetic parties whose customer ids are long random tokens, unmistakable in a grep."""
    rng = np.random.default_rng(seed)
    dataset = load_dataset("synthetic", rng=rng, n_rows=4500)
    id_column = dataset.schema.id_column
    parties = []
    for party in partition_frame(
        dataset.frame, dataset.schema, parse_partition("by:segment"), n_parties=3, rng=rng
    ):
        frames = []
        for frame in (party.train, party.test):
            frame = frame.copy()
            frame[id_column] = [f"cust-{rng.integers(16**15):015x}" for _ in range(len(frame))]
            frames.append(frame)
        parties.append(PartyData(name=party.name, train=frames[0], test=frames[1]))
    return dataset.schema, parties


@dataclass(frozen=True)
class Needle:
    """Bytes that must not appear, and what they are (for the failure message)."""

    what: str
    data: bytes
    number: bool = False
    """A number as text: it matches only when no digit or dot touches it on either side, so
    ``21.05`` is not found inside a timestamp ``1795322721.0531``."""

    def found_in(self, haystack: bytes) -> bool:
        if not self.number:
            return self.data in haystack
        return (
            re.search(rb"(?<![0-9.])" + re.escape(self.data) + rb"(?![0-9])", haystack) is not None
        )


def raw_data_needles(train_csv: Path, *, id_column: str, rng: np.random.Generator) -> list[Needle]:
    """Full CSV lines, ids and non-integer feature values (text and float64) of some rows."""
    body = train_csv.read_text(encoding="utf-8").splitlines()[1:]
    frame = pd.read_csv(train_csv)
    picks = sorted(rng.choice(len(body), size=ROWS_PER_PARTY, replace=False))
    needles: list[Needle] = []
    for i in picks:
        needles.append(Needle(f"{train_csv} line {i + 2}", body[i].encode()))
        needles.append(Needle(f"{train_csv} id", str(frame[id_column].iloc[i]).encode()))
        for column in frame.select_dtypes("number").columns:
            value = float(frame[column].iloc[i])
            if not np.isfinite(value) or value.is_integer():
                continue  # counts and round numbers (0.0, 25.0) are everywhere
            text = repr(value)
            where = f"{train_csv} line {i + 2} {column}={text}"
            needles.append(Needle(f"{where} as float64", np.float64(value).tobytes()))
            if len(text) >= 5:  # shorter ones (0.07) match by chance in ciphertext bytes
                needles.append(Needle(where, text.encode(), number=True))
    assert sum(n.number for n in needles) >= ROWS_PER_PARTY, "too few values to search for"
    return needles


def secret_fragments(secret: Path, public: bytes) -> list[Needle]:
    """Fragments of a secret file that do not occur in the public context (so only leaks match)."""
    data = secret.read_bytes()
    fragments = []
    for start in range(0, len(data) - WINDOW, max(WINDOW, len(data) // 64)):
        chunk = data[start : start + WINDOW]
        if chunk not in public:
            fragments.append(Needle(f"{secret} bytes {start}..{start + WINDOW}", chunk))
    assert len(fragments) >= 8, f"{secret}: too few secret-only fragments"
    return fragments


def private_key_body(path: Path) -> list[Needle]:
    """The base64 body lines of a PEM / OpenSSH private key file."""
    lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("-----")]
    return [Needle(f"{path} body", ln.encode()) for ln in lines if len(ln) >= 40]


def test_no_secret_key_or_raw_data_in_coordinator_files_artifact_or_party_logs(
    tmp_path: Path,
) -> None:
    # Arrange
    schema, parties = distinctive_parties(seed=23)
    rng = np.random.default_rng(0)

    # Act: a full encrypted run with checkpoints, evaluation and a release.
    with running_federation(tmp_path / "fed", schema=schema, parties=parties) as fed:
        deployed, outcome = fed.run(rounds=2, seed=3, round_timeout=120.0, timeout=1500.0)
        party_logs = {name: fed.supernodes[name].log_path for name in (p.name for p in parties)}
    released = [e for e in outcome.events if e["event"] == "released"]
    assert len(released) == 1
    artifact_dir = fed.release_dir / released[0]["model_id"]

    layout = WorkspaceLayout(fed.workspace)
    coordinator = coordinator_files(fed)
    artifact = sorted(p for p in artifact_dir.rglob("*") if p.is_file())
    logs = sorted(party_logs.values())
    scanned = coordinator + artifact + logs
    contents = {path: path.read_bytes() for path in scanned}
    # The scan covers what it should: checkpoints, progress, SuperLink state and log, artifact.
    names = {p.name for p in scanned}
    assert {"progress.jsonl", "superlink.log", "linkstate.db", "manifest.json"} <= names
    assert any(p.suffix == ".bin" and "checkpoints" in p.parts for p in coordinator)
    assert artifact and all(p.stat().st_size > 0 for p in logs)

    # Assert 1: no file loads as a TenSEAL context holding a secret key.
    public_bytes = layout.public_context.read_bytes()
    bundles = [load_bundle(fed.bundles[p.name]) for p in parties]
    with pytest.raises(SecretContextRefusedError):  # the check does catch a secret context
        context_from_bytes(bundles[0].layout.secret_context.read_bytes(), expect="public")
    contexts = []
    for path, data in contents.items():
        try:
            ctx = context_from_bytes(data, expect="public", source=str(path))
        except SecretContextRefusedError as e:
            pytest.fail(f"{path} holds a CKKS secret key: {e}")
        except KeyFileError:
            continue  # not a context at all (or one with Galois keys, still without secrets)
        assert not ctx.has_secret_key
        contexts.append(path)
    assert contexts == [layout.public_context]

    # Assert 2: no private key except the coordinator's own CA and TLS keys.
    allowed = set(layout.coordinator_secret_files)
    for path, data in contents.items():
        if path not in allowed:
            assert b"PRIVATE KEY" not in data, f"{path} holds a private key"

    # Assert 3: no fragment of any party secret (CKKS secret context, auth, signing and
    # receiving keys) is embedded anywhere, e.g. inside a message in the SuperLink's database.
    secrets: list[Needle] = []
    for bundle in bundles:
        secrets += secret_fragments(bundle.layout.secret_context, public_bytes)
        for key in (
            bundle.layout.auth_private_key,
            bundle.layout.signing_key,
            bundle.layout.receiving_key,
        ):
            secrets += private_key_body(key)
    for path, data in contents.items():
        leaked = [n.what for n in secrets if n.found_in(data)]
        assert not leaked, f"{path} contains secret material: {leaked[:5]}"

    # Assert 4: no raw data (rows, ids, feature values) in any scanned file.
    raw: list[Needle] = []
    for party in parties:
        train_csv, _ = fed.data[party.name]
        raw += raw_data_needles(train_csv, id_column=schema.id_column, rng=rng)
    for path, data in contents.items():
        leaked = [n.what for n in raw if n.found_in(data)]
        assert not leaked, f"{path} contains raw party data: {leaked[:5]}"

    # Checkpoints hold ciphertexts only: every chunk of every record is a CKKS ciphertext.
    public_ctx: CkksContext = load_public_context(layout.public_context)
    checkpoints = sorted((deployed.run_dir / "checkpoints").glob("round-*"))
    assert [p.name for p in checkpoints] == ["round-0001", "round-0002"]
    for checkpoint in checkpoints:
        manifest = json.loads((checkpoint / "manifest.json").read_text())
        for record, entries in manifest["records"].items():
            keys = [e["key"] for e in entries]
            assert keys[0] == HEADER_KEY and len(keys) >= 2, (checkpoint, record, keys)
            for index, entry in enumerate(entries[1:], start=1):
                assert entry["key"].startswith(CHUNK_KEY_PREFIX), (checkpoint, record, entry)
                assert entry["stype"] == CKKS_STYPE, (checkpoint, record, entry)
                chunk = (checkpoint / record / f"{index}.bin").read_bytes()
                public_ctx.add([chunk])  # parses as a ciphertext of this federation
