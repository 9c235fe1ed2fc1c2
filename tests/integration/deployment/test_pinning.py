"""The federation's app pin: one test per way around it, and the FAB hash Flower itself computes.

Each bypass attempt goes through the party's real admission path: the warm executor's
``admit`` (``clients.executor``) on a task input as the SuperNode hands it over (the FAB bytes,
the run's overrides, the hash the SuperLink states), with ``PinnedRunCheck`` reading the pin from
the party's own folder. A refused run must leave nothing installed and nothing imported.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from flwr.app import Context, Message, Metadata, RecordDict
from flwr.cli.build import build_fab_from_disk
from flwr.clientapp import ClientApp
from typer.testing import CliRunner

from clients.bundle import PartyBundle, load_bundle
from clients.executor import WarmExecutor
from clients.flower_runtime import TaskInput
from clients.pinning import (
    PinnedRunCheck,
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


def _task(fab: bytes, *, stated_hash: str | None = None, **config: object) -> TaskInput:
    """A task input as the SuperNode hands it to the executor: the FAB bytes, the run's overrides
    (what ``fedrisk run`` submits), and the hash the SuperLink states (by default the true one)."""
    context = Context(
        run_id=7, node_id=1, node_config={"party": "bank_a"}, state=RecordDict(), run_config={}
    )
    return TaskInput(
        message=Message(
            RecordDict(),
            metadata=Metadata(
                run_id=7,
                message_id="m1",
                src_node_id=0,
                dst_node_id=1,
                reply_to_message_id="",
                group_id="",
                created_at=0.0,
                ttl=60.0,
                message_type="query",
            ),
        ),
        context=context,
        run_id=7,
        fab_id="fedrisk/fedrisk-app",
        fab_version="0.1.0",
        fab_hash=stated_hash or hashlib.sha256(fab).hexdigest(),
        fab_content=fab,
        override_config=_run_config(**config),  # type: ignore[arg-type]
    )


Admit = Callable[[TaskInput], ClientApp]


def _refused_by(
    admit: Admit, task: TaskInput, *, flwr_home: Path, marker: Path | None = None
) -> RunRefusedError:
    with pytest.raises(RunRefusedError) as caught:
        admit(task)
    assert not (flwr_home / "apps").exists(), "a refused FAB must not be installed"
    assert marker is None or not marker.exists(), "a refused app's code must not run"
    return caught.value


@dataclass(frozen=True)
class Gate:
    """The lead's real admission path: its executor checking runs against its own folder's pin,
    the FAB of the pinned app, and the executor's FLWR_HOME (an admitted FAB lands in apps/)."""

    admit: Admit
    fab: bytes
    flwr_home: Path

    def refused(self, task: TaskInput, *, marker: Path | None = None) -> RunRefusedError:
        """The refusal of ``task``, after checking nothing was installed or run."""
        return _refused_by(self.admit, task, flwr_home=self.flwr_home, marker=marker)


@pytest.fixture
def flwr_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "party-flwr-home"
    monkeypatch.setenv("FLWR_HOME", str(home))
    return home


@pytest.fixture
def gate(lead: PartyBundle, flwr_home: Path) -> Gate:
    executor = WarmExecutor("127.0.0.1:1", check=PinnedRunCheck(lead.layout.root), party=lead.name)
    return Gate(admit=executor.admit, fab=build_fab_from_disk(FLOWER_APP_DIR), flwr_home=flwr_home)


def _evil_app(tmp_path: Path, marker: Path) -> Path:
    """The pinned app's name and version, its ClientApp swapped for code that marks its import."""
    app = _copy_app(tmp_path)
    (app / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from flwr.clientapp import ClientApp\napp = ClientApp()\n"
    )
    pyproject = app / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            'clientapp = "clients.clientapp:app"', 'clientapp = "evil:app"'
        )
    )
    return app


def test_the_pinned_app_with_its_own_run_config_is_admitted(
    pin: SignedPin,
    lead: PartyBundle,
    app_hash: str,
    gate: Gate,
) -> None:
    install_pin(lead, pin)
    task = _task(gate.fab)

    app = gate.admit(task)

    from clients.clientapp import app as fedrisk_client_app

    assert app is fedrisk_client_app
    # the ClientApp reads exactly the run config the check saw: defaults fused with overrides
    assert task.context.run_config == _run_config()
    assert (gate.flwr_home / "apps").is_dir()
    assert pin.pin.fab_sha256 == app_hash == hashlib.sha256(gate.fab).hexdigest()
    assert pin.pin.fedrisk_version == installed_fedrisk_version()
    assert shipped_app_dir().resolve() == FLOWER_APP_DIR.resolve()
    check_run_against_pin(pin, manifest=lead.manifest, fab_hash=app_hash, run_config=_run_config())


def test_a_party_without_a_pin_refuses_every_run(
    gate: Gate,
) -> None:
    refused = gate.refused(_task(gate.fab))
    # an executor told no party folder runs nothing either
    unconfigured = WarmExecutor("127.0.0.1:1").admit
    unchecked = _refused_by(unconfigured, _task(gate.fab), flwr_home=gate.flwr_home)

    assert refused.reason is unchecked.reason is RunRefusal.NO_PIN


def test_a_foreign_fab_under_the_pinned_hash_is_refused(
    pin: SignedPin,
    lead: PartyBundle,
    gate: Gate,
    tmp_path: Path,
) -> None:
    install_pin(lead, pin)
    marker = tmp_path / "evil-ran"
    foreign = build_fab_from_disk(_evil_app(tmp_path, marker))

    # the SuperLink (or whoever answers for it) states the pinned hash for other bytes
    task = _task(foreign, stated_hash=pin.pin.fab_sha256)
    refused = gate.refused(task, marker=marker)

    assert refused.reason is RunRefusal.FOREIGN_APP
    assert "evil" not in sys.modules


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
    pin: SignedPin, lead: PartyBundle, gate: Gate, tmp_path: Path
) -> None:
    install_pin(lead, pin)
    app = _copy_app(tmp_path)
    readme = app / "README.md"
    readme.write_text(readme.read_text() + "\n<!-- harmless-looking edit -->\n")

    refused = gate.refused(_task(build_fab_from_disk(app)))

    assert refused.reason is RunRefusal.FOREIGN_APP
    assert _refusal(pin, lead, fab_hash=fab_sha256(app)) is RunRefusal.FOREIGN_APP


def test_same_name_and_version_with_other_components_is_refused(
    pin: SignedPin, lead: PartyBundle, gate: Gate, tmp_path: Path
) -> None:
    install_pin(lead, pin)
    marker = tmp_path / "evil-ran"
    app = _evil_app(tmp_path, marker)

    task = _task(build_fab_from_disk(app))
    refused = gate.refused(task, marker=marker)

    assert 'version = "0.1.0"' in (app / "pyproject.toml").read_text()
    assert refused.reason is RunRefusal.FOREIGN_APP
    assert "evil" not in sys.modules


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
    gate: Gate,
    config: dict[str, object],
    reason: RunRefusal,
    named: str,
) -> None:
    install_pin(lead, pin)

    refused = gate.refused(_task(gate.fab, **config))

    assert refused.reason is reason
    assert named in str(refused)


def test_plaintext_runs_pass_only_when_the_pin_allows_them(lead: PartyBundle, gate: Gate) -> None:
    permissive = create_pin(lead, coordinator_workspace=COORDINATOR_WS, allow_plaintext=True)
    install_pin(lead, permissive)
    task = _task(gate.fab, plaintext=True)

    gate.admit(task)

    assert task.context.run_config["plaintext"] is True


def test_a_pin_that_requires_self_masks_refuses_a_run_without_them(
    lead: PartyBundle, gate: Gate
) -> None:
    # The coordinator picks mask-self; a federation that does not trust it to report dropouts
    # honestly pins it on, so a run that turns self masks off never reaches the party's code.
    install_pin(
        lead, create_pin(lead, coordinator_workspace=COORDINATOR_WS, require_self_masks=True)
    )
    with_masks = _task(gate.fab, **{"mask-self": True})

    refused = gate.refused(_task(gate.fab, **{"mask-self": False}))
    gate.admit(with_masks)

    assert refused.reason is RunRefusal.CONFIG_VALUE
    assert "mask-self" in str(refused)
    assert with_masks.context.run_config["mask-self"] is True


def test_differential_privacy_run_configs_pass_the_pin(lead: PartyBundle, gate: Gate) -> None:
    install_pin(lead, create_pin(lead, coordinator_workspace=COORDINATOR_WS))
    # What `fedrisk run --dp-epsilon 3 --dp-mode client` submits: the calibrated noise included.
    calibrated = FederationConfig.model_validate(
        {**_run_config(), "dp-mode": "client", "dp-epsilon": 3.0, "dp-delta": 1e-6}
    ).with_calibrated_noise()
    dp = {k: v for k, v in calibrated.to_run_config().items() if k.startswith("dp-")}
    task = _task(gate.fab, **dp)

    gate.admit(task)

    assert task.context.run_config["dp-mode"] == "client"
    assert task.context.run_config["dp-noise-multiplier"] == calibrated.dp_noise_multiplier > 0
    plan = FederationConfig.model_validate(task.context.run_config).privacy_plan()
    assert plan is not None and plan.epsilon() <= 3.0


def _tamper(lead: PartyBundle, text: str) -> None:
    """Replace the pin in the party's folder behind its back (as another local account might)."""
    pin_path(lead).write_text(text)


def test_an_unsigned_pin_is_refused(
    pin: SignedPin,
    lead: PartyBundle,
    app_hash: str,
    gate: Gate,
) -> None:
    unsigned = pin.model_copy(update={"signature": ""})
    _tamper(lead, unsigned.to_json())

    refused = gate.refused(_task(gate.fab))

    assert refused.reason is RunRefusal.UNSIGNED_PIN
    assert _refusal(unsigned, lead, fab_hash=app_hash) is RunRefusal.UNSIGNED_PIN
    assert _refusal(pin.pin, lead, fab_hash=app_hash) is RunRefusal.UNSIGNED_PIN
    _tamper(lead, pin.pin.model_dump_json())  # the bare statement, no signature envelope
    assert gate.refused(_task(gate.fab)).reason is RunRefusal.NO_PIN


def test_a_pin_signed_by_another_party_is_refused(
    federation: ProvisionResult,
    pin: SignedPin,
    lead: PartyBundle,
    app_hash: str,
    gate: Gate,
) -> None:
    mallory = load_bundle(federation.bundles["telco_c"])  # a real party, but not the lead
    forged = sign_pin(pin.pin, mallory.signing_key())
    # ...even when it claims the lead's key id
    relabelled = forged.model_copy(update={"signer_key_id": pin.signer_key_id})

    for bad in (forged, relabelled):
        _tamper(lead, bad.to_json())
        refused = gate.refused(_task(gate.fab))
        assert refused.reason is RunRefusal.UNTRUSTED_PIN
        assert _refusal(bad, lead, fab_hash=app_hash) is RunRefusal.UNTRUSTED_PIN
    with pytest.raises(IdentityError, match="lead party"):
        create_pin(mallory)


def test_a_pin_altered_after_signing_is_refused(
    pin: SignedPin, lead: PartyBundle, gate: Gate, tmp_path: Path
) -> None:
    marker = tmp_path / "evil-ran"
    app = _evil_app(tmp_path, marker)
    foreign = build_fab_from_disk(app)
    altered = pin.model_copy(
        update={
            "pin": pin.pin.model_copy(update={"fab_sha256": hashlib.sha256(foreign).hexdigest()})
        }
    )
    _tamper(lead, altered.to_json())

    refused = gate.refused(_task(foreign), marker=marker)

    assert refused.reason is RunRefusal.UNTRUSTED_PIN
    assert _refusal(altered, lead, fab_hash=fab_sha256(app)) is RunRefusal.UNTRUSTED_PIN


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


def test_an_app_upgrade_is_a_pin_amendment_the_lead_signs_and_each_party_accepts(
    federation: ProvisionResult, pin: SignedPin, lead: PartyBundle, flwr_home: Path, tmp_path: Path
) -> None:
    import typer

    from clients.cli import register

    cli = typer.Typer()
    register(cli)
    runner = CliRunner()
    bank_b = load_bundle(federation.bundles["bank_b"])
    install_pin(lead, pin)
    install_pin(bank_b, pin)
    upgraded = _copy_app(tmp_path)
    (upgraded / "README.md").write_text("fedrisk app, release 2\n")
    amend = tmp_path / "amendment"
    b_executor = WarmExecutor("127.0.0.1:1", check=PinnedRunCheck(bank_b.layout.root))

    def party(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli, ["party", "pin", *args])
        return result.exit_code, result.output

    not_lead = party("sign", "--bundle", str(bank_b.layout.root), "--out", str(tmp_path / "x"))
    before = _refused_by(
        b_executor.admit, _task(build_fab_from_disk(upgraded)), flwr_home=flwr_home
    )
    signed = party(
        "sign",
        "--bundle",
        str(lead.layout.root),
        "--out",
        str(amend),
        "--app",
        str(upgraded),
        "--coordinator-workspace",
        COORDINATOR_WS,
    )
    accepted = party("accept", "--bundle", str(bank_b.layout.root), "--pin", str(amend / PIN_FILE))
    shown = party("show", "--bundle", str(bank_b.layout.root))
    replayed = tmp_path / "old-pin.json"
    replayed.write_text(pin.to_json())
    replay = party("accept", "--bundle", str(bank_b.layout.root), "--pin", str(replayed))

    assert not_lead[0] == 1 and "lead party" in not_lead[1], not_lead
    assert before.reason is RunRefusal.FOREIGN_APP
    assert signed[0] == 0 and "Replaces pin #1" in signed[1] and "pin #2" in signed[1], signed
    assert accepted[0] == 0 and "pin #2 signed by bank_a" in accepted[1], accepted
    assert shown[0] == 0 and fab_sha256(upgraded)[:16] in shown[1], shown
    assert replay[0] == 1 and "newer than the installed one" in replay[1], replay
    # the party's executor now runs the upgraded app and refuses the one it replaced
    b_executor.admit(_task(build_fab_from_disk(upgraded)))
    old = _task(build_fab_from_disk(FLOWER_APP_DIR))
    with pytest.raises(RunRefusedError) as caught:
        b_executor.admit(old)
    assert caught.value.reason is RunRefusal.FOREIGN_APP
    assert installed_pin(bank_b).pin.sequence == installed_pin(lead).pin.sequence == 2
