"""CKKS key ceremony: sealed secret contexts for parties, the public context for the coordinator."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from clients.bundle import PartyBundle, load_bundle
from clients.cli import register as register_party_commands
from fedrisk.errors import IdentityError
from fedrisk.federation.roster import (
    COORDINATOR_DIR,
    PUBLIC_CONTEXT_FILE,
    PUBLIC_SIGNATURE_FILE,
    SECRET_CONTEXT_PURPOSE,
)
from fedrisk.release.identity import seal_for
from secure_agg.ceremony import (
    CeremonyResult,
    accept_sealed_context,
    run_key_ceremony,
    verify_public_context,
)
from secure_agg.errors import KeyFileError, SecretContextRefusedError
from secure_agg.keys import (
    context_from_bytes,
    generate_context,
    load_public_context,
    load_secret_context,
    secret_context_bytes,
)
from secure_agg.params import HEParams
from server.coordinator.provisioning import (
    ProvisionResult,
    install_public_context,
    workspace_private_key_files,
)

PARAMS = HEParams()


def _bundles(federation: ProvisionResult) -> dict[str, PartyBundle]:
    return {name: load_bundle(path) for name, path in federation.bundles.items()}


def _ceremony(federation: ProvisionResult, out: Path) -> CeremonyResult:
    lead = load_bundle(federation.bundles["bank_a"])
    return run_key_ceremony(
        lead.manifest,
        lead="bank_a",
        signing_key=lead.signing_key(),
        own_ckks_dir=lead.layout.ckks_dir,
        out_dir=out,
        params=PARAMS,
    )


def _accept(bundle: PartyBundle, sealed: bytes) -> None:
    accept_sealed_context(
        sealed,
        manifest=bundle.manifest,
        recipient=bundle.name,
        receiving_key=bundle.receiving_key(),
        own_ckks_dir=bundle.layout.ckks_dir,
    )


@pytest.fixture
def ceremony(federation: ProvisionResult, tmp_path: Path) -> CeremonyResult:
    return _ceremony(federation, tmp_path / "handout")


def test_every_party_ends_with_the_same_secret_context(
    federation: ProvisionResult, ceremony: CeremonyResult
) -> None:
    bundles = _bundles(federation)
    for name in ("bank_b", "telco_c"):
        _accept(bundles[name], ceremony.sealed[name].read_bytes())

    contexts = {n: load_secret_context(b.layout.secret_context) for n, b in bundles.items()}
    public = load_public_context(ceremony.public_context)
    values = np.array([1.5, -2.25, 3.0])
    enc_a = contexts["bank_a"].encrypt(values)
    total = public.add([enc_a, contexts["telco_c"].encrypt(values)], expected_size=3)

    assert set(ceremony.sealed) == {"bank_b", "telco_c"}
    np.testing.assert_allclose(
        contexts["bank_b"].decrypt(total, expected_size=3), 2 * values, atol=1e-6
    )
    for bundle in bundles.values():
        assert bundle.layout.secret_context.stat().st_mode & 0o777 == 0o600


def test_handout_holds_no_plaintext_secret(ceremony: CeremonyResult) -> None:
    out = ceremony.public_context.parent.parent

    for path in out.rglob("*"):
        if not path.is_file():
            continue
        with pytest.raises(KeyFileError):
            context_from_bytes(path.read_bytes(), expect="secret", source=str(path))

    assert load_public_context(ceremony.public_context).has_secret_key is False


def test_coordinator_workspace_never_holds_a_secret_key(
    federation: ProvisionResult, ceremony: CeremonyResult
) -> None:
    ws = federation.workspace
    install_public_context(ws.root, context_file=ceremony.public_context)

    for path in sorted(ws.root.rglob("*")):
        if not path.is_file():
            continue
        try:
            ctx = context_from_bytes(path.read_bytes(), expect="public", source=str(path))
        except SecretContextRefusedError:
            pytest.fail(f"{path} holds a CKKS secret key")
        except KeyFileError:
            continue  # not a TenSEAL context at all
        assert not ctx.has_secret_key
    assert sorted(workspace_private_key_files(ws.root)) == sorted(ws.coordinator_secret_files)
    assert ws.public_context.exists()


@pytest.mark.parametrize("where", ["magic", "header", "ciphertext", "signature", "last"])
def test_sealed_file_tampered_by_one_byte_is_refused(
    federation: ProvisionResult, ceremony: CeremonyResult, where: str
) -> None:
    bank_b = load_bundle(federation.bundles["bank_b"])
    sealed = bytearray(ceremony.sealed["bank_b"].read_bytes())
    header_len = int.from_bytes(sealed[8:12], "big")
    offset = {
        "magic": 3,
        "header": 12 + header_len // 2,
        "ciphertext": 12 + header_len + 1000,
        "signature": len(sealed) - 40,
        "last": len(sealed) - 1,
    }[where]
    sealed[offset] ^= 0x01

    with pytest.raises(IdentityError):
        _accept(bank_b, bytes(sealed))

    assert not bank_b.has_secret_context


def test_sealed_file_signed_by_a_non_lead_party_is_refused(federation: ProvisionResult) -> None:
    bundles = _bundles(federation)
    mallory = bundles["telco_c"]  # a real party, but not the lead
    victim = bundles["bank_b"]
    fake = secret_context_bytes(generate_context(PARAMS))
    for claimed_sender in ("telco_c", "bank_a"):
        blob = seal_for(
            victim.record.receiving_key(),
            fake,
            signer=mallory.signing_key(),
            sender=claimed_sender,
            recipient="bank_b",
            purpose=SECRET_CONTEXT_PURPOSE,
        )

        with pytest.raises(IdentityError, match=r"lead|signature"):
            _accept(victim, blob)

    assert not victim.has_secret_context


def test_sealed_file_for_another_party_is_refused(
    federation: ProvisionResult, ceremony: CeremonyResult
) -> None:
    telco = load_bundle(federation.bundles["telco_c"])

    with pytest.raises(IdentityError, match="addressed to 'telco_c'"):
        _accept(telco, ceremony.sealed["bank_b"].read_bytes())


def test_only_the_lead_may_run_the_ceremony(federation: ProvisionResult, tmp_path: Path) -> None:
    bank_b = load_bundle(federation.bundles["bank_b"])

    with pytest.raises(IdentityError, match="lead party 'bank_a'"):
        run_key_ceremony(
            bank_b.manifest,
            lead="bank_b",
            signing_key=bank_b.signing_key(),
            own_ckks_dir=bank_b.layout.ckks_dir,
            out_dir=tmp_path / "out",
            params=PARAMS,
        )


def test_second_ceremony_is_refused(
    federation: ProvisionResult, ceremony: CeremonyResult, tmp_path: Path
) -> None:
    with pytest.raises(KeyFileError, match="must not hold a CKKS secret context"):
        _ceremony(federation, tmp_path / "again")


def test_tampered_public_context_is_refused(
    federation: ProvisionResult, ceremony: CeremonyResult, tmp_path: Path
) -> None:
    altered = tmp_path / "altered"
    shutil.copytree(ceremony.public_context.parent, altered)
    data = bytearray((altered / PUBLIC_CONTEXT_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (altered / PUBLIC_CONTEXT_FILE).write_bytes(bytes(data))

    with pytest.raises(IdentityError, match="altered"):
        install_public_context(
            federation.workspace.root, context_file=altered / PUBLIC_CONTEXT_FILE
        )

    assert not federation.workspace.public_context.exists()


def test_coordinator_refuses_a_secret_context_even_if_signed(
    federation: ProvisionResult, ceremony: CeremonyResult, tmp_path: Path
) -> None:
    # The lead (or a mistake) signs a SECRET context as if it were the public one.
    lead = load_bundle(federation.bundles["bank_a"])
    secret = lead.layout.secret_context.read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / PUBLIC_CONTEXT_FILE).write_bytes(secret)
    statement = json.loads((ceremony.public_signature).read_text())
    statement.pop("signature")
    statement["sha256"] = hashlib.sha256(secret).hexdigest()
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    statement["signature"] = base64.b64encode(lead.signing_key().sign(payload)).decode()
    (bad / PUBLIC_SIGNATURE_FILE).write_text(json.dumps(statement))

    with pytest.raises(SecretContextRefusedError):
        verify_public_context(
            bad / PUBLIC_CONTEXT_FILE, bad / PUBLIC_SIGNATURE_FILE, manifest=lead.manifest
        )
    with pytest.raises(SecretContextRefusedError):
        install_public_context(federation.workspace.root, context_file=bad / PUBLIC_CONTEXT_FILE)

    assert not federation.workspace.ckks_dir.exists()


def test_keys_commands_run_the_whole_ceremony(federation: ProvisionResult, tmp_path: Path) -> None:
    cli = typer.Typer()
    register_party_commands(cli)
    runner = CliRunner()
    out = tmp_path / "handout"
    bundles = federation.bundles

    init = runner.invoke(
        cli, ["keys", "init", "--bundle", str(bundles["bank_a"]), "--out", str(out)]
    )
    accept = runner.invoke(
        cli,
        [
            "keys",
            "accept",
            "--bundle",
            str(bundles["bank_b"]),
            "--sealed",
            str(out / "bank_b.sealed"),
        ],
    )
    wrong = runner.invoke(
        cli,
        [
            "keys",
            "accept",
            "--bundle",
            str(bundles["telco_c"]),
            "--sealed",
            str(out / "bank_b.sealed"),
        ],
    )

    assert init.exit_code == 0, init.output
    assert accept.exit_code == 0, accept.output
    assert wrong.exit_code == 1
    assert "addressed to 'telco_c'" in wrong.output
    assert sorted(p.name for p in (out / COORDINATOR_DIR).iterdir()) == sorted(
        [PUBLIC_CONTEXT_FILE, PUBLIC_SIGNATURE_FILE]
    )
