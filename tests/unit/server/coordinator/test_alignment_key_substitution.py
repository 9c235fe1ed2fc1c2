"""A coordinator that substitutes the alignment's channel keys: the parties refuse.

The real ``align_parties`` drives the real ClientApp of each party; the malicious coordinator
alters the messages it pushes (its own relay path), swapping a channel key for one it holds (it
could then open a host's sealed result, or seal a forged one), or replaying a genuinely signed
key from an earlier run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Message

from clients.alignment import load_alignment
from clients.clientapp import app
from fedrisk.federation import protocol as proto
from fedrisk.federation import published_keys as pk
from fedrisk.federation.alignment import HostAlignment
from secure_agg import psi
from server.coordinator.alignment import AlignmentSettings, align_parties
from server.coordinator.strategy import FederationError
from tests.support.alignment import spelled, write_alignment_workspace
from tests.support.clientapp_grid import ClientAppParty, Traffic, clientapp_grid

PARTIES = ("bank", "telecom", "shop")
SETTINGS = AlignmentSettings(guest="bank", id_column="phone", id_kind="phone")

Tamper = Callable[[str, Message], None]
"""Alters a message the coordinator is about to push (step name, message)."""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    columns = {
        "bank": [spelled(i, 0) for i in range(40)],
        "telecom": [spelled(i, 1) for i in range(10, 50)],
        "shop": [spelled(i, 2) for i in range(20, 60)],
    }
    return write_alignment_workspace(tmp_path_factory.mktemp("keys"), columns, order=PARTIES)


def _align(
    root: Path, run_id: str, tamper: Tamper | None = None
) -> tuple[list[ClientAppParty], Traffic]:
    grid, parties, traffic = clientapp_grid(
        app,
        node_configs=[{"partition-id": pid} for pid in range(len(PARTIES))],
        run_config={
            "run-id": run_id,
            "min-parties": 2,
            "allow-fewer-parties": True,
            "sim-workspace": str(root),
        },
    )
    if tamper is not None:
        push = grid.push_messages

        def tampering_push(messages: Iterable[Message]) -> Iterable[str]:
            messages = list(messages)
            for message in messages:
                cfg = message.content.config_records[proto.CONFIG]
                tamper(str(cfg[proto.CFG_ALIGN_STEP]), message)
            return push(messages)

        grid.push_messages = tampering_push  # type: ignore[method-assign]
    align_parties(grid, SETTINGS, run_id=run_id, timeout=60, clock=grid.clock)
    return parties, traffic


def _refusal(root: Path, tamper: Tamper, run_id: str = "attacked-run") -> str:
    with pytest.raises(FederationError) as failed:
        _align(root, run_id, tamper)
    return str(failed.value)


def _match_hosts(message: Message) -> tuple[ConfigRecord, list[dict[str, object]]]:
    cfg = message.content.config_records[proto.CONFIG]
    return cfg, json.loads(str(cfg[proto.CFG_ALIGN_HOSTS]))


def _own_channel() -> bytes:
    return psi.public_key_of(psi.GuestSecrets.fresh().channel_key)


def test_the_honest_phase_aligns_with_signed_channel_keys(
    serverapp_identity: None, root: Path
) -> None:
    parties, traffic = _align(root, "honest-run")

    offers = [
        r.content.config_records[proto.CONFIG]
        for r in traffic.received
        if proto.CFG_ALIGN_CHANNEL in r.content.config_records.get(proto.CONFIG, {})
    ]
    assert len(offers) == 2
    assert all(len(bytes(c[pk.CFG_ALIGN_CHANNEL_SIGNATURE])) == 64 for c in offers)  # type: ignore[arg-type]
    assert isinstance(load_alignment(parties[1].context.state), HostAlignment)


def test_a_swapped_host_channel_key_is_refused_by_the_guest(
    serverapp_identity: None, root: Path
) -> None:
    def tamper(step: str, message: Message) -> None:
        if step == proto.ALIGN_MATCH:
            cfg, hosts = _match_hosts(message)
            hosts[0][proto.ALIGN_HOST_CHANNEL] = _own_channel().hex()
            cfg[proto.CFG_ALIGN_HOSTS] = json.dumps(hosts)

    reason = _refusal(root, tamper)

    assert "align match" in reason
    assert f"bank refuses telecom's {pk.PSI_CHANNEL} key relayed at step 'offer'" in reason
    assert "invalid" in reason


def test_a_swapped_guest_channel_key_is_refused_by_the_host(
    serverapp_identity: None, root: Path
) -> None:
    def tamper(step: str, message: Message) -> None:
        if step == proto.ALIGN_FINISH:
            message.content.config_records[proto.CONFIG][proto.CFG_ALIGN_CHANNEL] = _own_channel()

    reason = _refusal(root, tamper)

    assert "align finish" in reason
    for host in ("telecom", "shop"):
        purpose = pk.psi_channel_purpose(host)
        assert f"{host} refuses bank's {purpose} key relayed at step 'match'" in reason


def test_a_signed_channel_key_replayed_from_an_earlier_run_is_refused(
    serverapp_identity: None, root: Path
) -> None:
    # telecom's genuinely signed channel key of an earlier, honest run
    _, traffic = _align(root, "earlier-run")
    telecom = next(
        r.content.config_records[proto.CONFIG]
        for r in traffic.received
        if r.content.config_records.get(proto.CONFIG, {}).get(proto.CFG_PARTY) == "telecom"
        and proto.CFG_ALIGN_CHANNEL in r.content.config_records[proto.CONFIG]
    )

    def tamper(step: str, message: Message) -> None:
        if step == proto.ALIGN_MATCH:
            cfg, hosts = _match_hosts(message)
            entry = next(h for h in hosts if h[proto.ALIGN_HOST_NAME] == "telecom")
            entry[proto.ALIGN_HOST_CHANNEL] = bytes(telecom[proto.CFG_ALIGN_CHANNEL]).hex()  # type: ignore[arg-type]
            entry[pk.ALIGN_HOST_CHANNEL_SIGNATURE] = bytes(
                telecom[pk.CFG_ALIGN_CHANNEL_SIGNATURE]  # type: ignore[arg-type]
            ).hex()
            cfg[proto.CFG_ALIGN_HOSTS] = json.dumps(hosts)

    reason = _refusal(root, tamper)

    assert f"bank refuses telecom's {pk.PSI_CHANNEL} key relayed at step 'offer'" in reason
    assert "of run 'attacked-run'" in reason
    assert "replayed" in reason


def test_an_unsigned_channel_key_is_refused(serverapp_identity: None, root: Path) -> None:
    def tamper(step: str, message: Message) -> None:
        if step == proto.ALIGN_FINISH:
            del message.content.config_records[proto.CONFIG][pk.CFG_ALIGN_CHANNEL_SIGNATURE]

    reason = _refusal(root, tamper)

    assert "telecom refuses bank's" in reason
    assert "must carry bank's signature; got none" in reason


def test_no_party_without_a_roster_aligns(serverapp_identity: None, tmp_path: Path) -> None:
    columns = {p: [spelled(i, 0) for i in range(5)] for p in PARTIES}
    root = write_alignment_workspace(tmp_path, columns, order=PARTIES)
    toml = root / "parties" / "party_0" / "party.toml"
    toml.write_text(
        "".join(
            line + "\n" for line in toml.read_text().splitlines() if not line.startswith("roster")
        )
    )

    with pytest.raises(FederationError, match="bank must name its roster"):
        _align(root, "no-roster-run")
