"""The federation's app pin: one test per way around it, and the FAB hash Flower itself computes.

``check_run_against_pin`` is what the party-side executor calls before any of a run's code runs;
here it is fed what an attacker would submit.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clients.bundle import PartyBundle, load_bundle
from clients.pinning import (
    create_pin,
    fab_sha256,
    install_pin,
    installed_pin,
    load_pin_file,
    pin_path,
    shipped_app_dir,
)
from fedrisk.errors import IdentityError, RunRefusal, RunRefusedError
from fedrisk.federation.pin import (
    PIN_FILE,
    SignedPin,
    check_run_against_pin,
    installed_fedrisk_version,
    sign_pin,
)
from fedrisk.federation.processes import console_script, flower_environment
from fedrisk.federation.run_config import FederationConfig
from server.coordinator.provisioning import ProvisionResult
from server.coordinator.runs import FLOWER_APP_DIR

COORDINATOR_WS = "/srv/coord"


@pytest.fixture
def lead(federation: ProvisionResult) -> PartyBundle:
    return load_bundle(federation.bundles["bank_a"])


@pytest.fixture
def pin(lead: PartyBundle) -> SignedPin:
    return create_pin(lead, coordinator_workspace=COORDINATOR_WS)


@pytest.fixture
def app_hash() -> str:
    return fab_sha256(FLOWER_APP_DIR)


def _run_config(**overrides: object) -> dict[str, object]:
    """The run config ``fedrisk run`` sends, with the pinned coordinator's paths."""
    config = FederationConfig(
        run_id="run-0123456789ab",
        rounds=2,
        release_party="bank_a",
        public_context=f"{COORDINATOR_WS}/ckks/ckks.public.ctx",
        server_dir=f"{COORDINATOR_WS}/runs/run-0123456789ab",
    ).to_run_config()
    return {**config, **overrides}


def _copy_app(tmp_path: Path, name: str = "fedrisk-app") -> Path:
    target = tmp_path / name
    shutil.copytree(FLOWER_APP_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _refusal(pin: object, lead: PartyBundle, *, fab_hash: str, **config: object) -> RunRefusal:
    with pytest.raises(RunRefusedError) as caught:
        check_run_against_pin(
            pin, manifest=lead.manifest, fab_hash=fab_hash, run_config=_run_config(**config)
        )
    return caught.value.reason


def test_the_pinned_app_with_its_own_run_config_is_accepted(
    pin: SignedPin, lead: PartyBundle, app_hash: str
) -> None:
    check_run_against_pin(pin, manifest=lead.manifest, fab_hash=app_hash, run_config=_run_config())

    assert pin.pin.fab_sha256 == app_hash
    assert pin.pin.fedrisk_version == installed_fedrisk_version()
    assert shipped_app_dir().resolve() == FLOWER_APP_DIR.resolve()


def test_fab_hash_is_the_hash_of_the_fab_flower_builds(tmp_path: Path, app_hash: str) -> None:
    app = _copy_app(tmp_path)  # `flwr build` wants a project-like folder name
    subprocess.run(
        [console_script("flwr"), "build", "--app", str(app)],
        cwd=tmp_path,
        env=flower_environment(tmp_path / "flwr-home"),
        check=True,
        capture_output=True,
        timeout=120,
    )
    (fab,) = tmp_path.glob("*.fab")

    assert hashlib.sha256(fab.read_bytes()).hexdigest() == app_hash
    assert app_hash[:8] in fab.name  # Flower names the file by the same hash


def test_pinned_app_with_a_modified_file_is_refused(
    pin: SignedPin, lead: PartyBundle, tmp_path: Path
) -> None:
    app = _copy_app(tmp_path)
    readme = app / "README.md"
    readme.write_text(readme.read_text() + "\n<!-- harmless-looking edit -->\n")

    assert _refusal(pin, lead, fab_hash=fab_sha256(app)) is RunRefusal.FOREIGN_APP


def test_same_name_and_version_with_other_components_is_refused(
    pin: SignedPin, lead: PartyBundle, tmp_path: Path
) -> None:
    app = _copy_app(tmp_path)
    (app / "evil.py").write_text("from flwr.clientapp import ClientApp\napp = ClientApp()\n")
    pyproject = app / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            'clientapp = "clients.clientapp:app"', 'clientapp = "evil:app"'
        )
    )

    assert 'version = "0.1.0"' in pyproject.read_text()
    assert _refusal(pin, lead, fab_hash=fab_sha256(app)) is RunRefusal.FOREIGN_APP


@pytest.mark.parametrize(
    ("config", "reason", "named"),
    [
        ({"data-path": "/etc/passwd"}, RunRefusal.CONFIG_KEY, "data-path"),
        ({"public-context": "/home/bank/ckks/ckks.secret.ctx"}, RunRefusal.CONFIG_VALUE, "public"),
        ({"server-dir": "/srv/coord/runs/../../../home/bank"}, RunRefusal.CONFIG_VALUE, "server"),
        ({"server-dir": "/home/bank/bundle"}, RunRefusal.CONFIG_VALUE, "server-dir"),
        ({"sim-workspace": "/home/bank"}, RunRefusal.CONFIG_VALUE, "sim-workspace"),
        ({"plaintext": True}, RunRefusal.CONFIG_VALUE, "plaintext"),
        ({"plaintext": 1}, RunRefusal.CONFIG_VALUE, "plaintext"),
        ({"allow-fewer-parties": True}, RunRefusal.CONFIG_VALUE, "allow-fewer-parties"),
        ({"min-parties": 1}, RunRefusal.CONFIG_VALUE, "min-parties"),
        ({"release-party": "mallory"}, RunRefusal.CONFIG_VALUE, "release-party"),
        ({"rounds": "3"}, RunRefusal.CONFIG_VALUE, "rounds"),
    ],
)
def test_allowed_app_with_a_run_config_outside_the_pin_is_refused(
    pin: SignedPin,
    lead: PartyBundle,
    app_hash: str,
    config: dict[str, object],
    reason: RunRefusal,
    named: str,
) -> None:
    with pytest.raises(RunRefusedError, match=named) as caught:
        check_run_against_pin(
            pin, manifest=lead.manifest, fab_hash=app_hash, run_config=_run_config(**config)
        )

    assert caught.value.reason is reason


def test_plaintext_runs_pass_only_when_the_pin_allows_them(
    lead: PartyBundle, app_hash: str
) -> None:
    permissive = create_pin(lead, coordinator_workspace=COORDINATOR_WS, allow_plaintext=True)

    check_run_against_pin(
        permissive,
        manifest=lead.manifest,
        fab_hash=app_hash,
        run_config=_run_config(plaintext=True),
    )


def test_an_unsigned_pin_is_refused(pin: SignedPin, lead: PartyBundle, app_hash: str) -> None:
    unsigned = pin.model_copy(update={"signature": ""})

    assert _refusal(unsigned, lead, fab_hash=app_hash) is RunRefusal.UNSIGNED_PIN
    assert _refusal(pin.pin, lead, fab_hash=app_hash) is RunRefusal.UNSIGNED_PIN


def test_a_pin_signed_by_another_party_is_refused(
    federation: ProvisionResult, pin: SignedPin, lead: PartyBundle, app_hash: str
) -> None:
    mallory = load_bundle(federation.bundles["telco_c"])  # a real party, but not the lead
    forged = sign_pin(pin.pin, mallory.signing_key())
    # ...even when it claims the lead's key id
    relabelled = forged.model_copy(update={"signer_key_id": pin.signer_key_id})

    assert _refusal(forged, lead, fab_hash=app_hash) is RunRefusal.UNTRUSTED_PIN
    assert _refusal(relabelled, lead, fab_hash=app_hash) is RunRefusal.UNTRUSTED_PIN
    with pytest.raises(IdentityError, match="lead party"):
        create_pin(mallory)


def test_a_pin_altered_after_signing_is_refused(
    pin: SignedPin, lead: PartyBundle, tmp_path: Path
) -> None:
    app = _copy_app(tmp_path)
    (app / "evil.py").write_text("x = 1\n")
    foreign_hash = fab_sha256(app)
    altered = pin.model_copy(
        update={"pin": pin.pin.model_copy(update={"fab_sha256": foreign_hash})}
    )

    assert _refusal(altered, lead, fab_hash=foreign_hash) is RunRefusal.UNTRUSTED_PIN


def test_another_fedrisk_version_is_refused(
    pin: SignedPin, lead: PartyBundle, app_hash: str
) -> None:
    with pytest.raises(RunRefusedError) as caught:
        check_run_against_pin(
            pin,
            manifest=lead.manifest,
            fab_hash=app_hash,
            run_config=_run_config(),
            fedrisk_version="0.0.1",
        )

    assert caught.value.reason is RunRefusal.FEDRISK_VERSION


def test_a_party_installs_only_a_verified_newer_pin(
    federation: ProvisionResult, pin: SignedPin, lead: PartyBundle
) -> None:
    party = load_bundle(federation.bundles["bank_b"])
    with pytest.raises(IdentityError, match="must hold the federation's signed app pin"):
        installed_pin(party)

    install_pin(party, pin)
    amendment = create_pin(lead, coordinator_workspace=COORDINATOR_WS, sequence=2)
    install_pin(party, amendment)

    assert installed_pin(party) == amendment
    with pytest.raises(IdentityError, match="newer than the installed one"):
        install_pin(party, pin)  # an older pin replayed
    with pytest.raises(RunRefusedError):
        install_pin(party, amendment.model_copy(update={"signature": ""}))
    assert load_pin_file(pin_path(party)) == amendment


def test_keys_commands_write_verify_and_install_the_pin(
    federation: ProvisionResult, tmp_path: Path
) -> None:
    import typer

    from clients.cli import register

    cli = typer.Typer()
    register(cli)
    runner = CliRunner()
    bundles = federation.bundles
    out = tmp_path / "handouts"

    init = runner.invoke(
        cli,
        [
            "keys",
            "init",
            "--bundle",
            str(bundles["bank_a"]),
            "--out",
            str(out),
            "--coordinator-workspace",
            COORDINATOR_WS,
        ],
    )
    tampered = tmp_path / "tampered.json"
    signed = load_pin_file(out / PIN_FILE)
    tampered.write_text(
        signed.model_copy(
            update={"pin": signed.pin.model_copy(update={"fedrisk_version": "9"})}
        ).to_json()
    )
    refused = runner.invoke(
        cli,
        [
            "keys",
            "accept",
            "--bundle",
            str(bundles["bank_b"]),
            "--sealed",
            str(out / "bank_b.sealed"),
            "--pin",
            str(tampered),
        ],
    )
    installed_on_refusal = load_bundle(bundles["bank_b"]).has_secret_context
    accepted = runner.invoke(
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

    assert init.exit_code == 0, init.output
    assert "plaintext forbidden" in init.output
    assert refused.exit_code == 1 and "signature" in refused.output, refused.output
    assert not installed_on_refusal
    assert accepted.exit_code == 0, accepted.output
    assert installed_pin(load_bundle(bundles["bank_b"])) == signed
