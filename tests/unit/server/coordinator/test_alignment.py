"""The ``align`` phase over real ClientApp calls: each party's result, and what messages show."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity

from clients.alignment import identifier_key, load_alignment
from clients.clientapp import app
from clients.party import load_party_config
from fedrisk.federation.alignment import GuestAlignment, HostAlignment
from fedrisk.federation.identifiers import psi_digests
from fedrisk.federation.run_config import parse_run_config
from secure_agg.psi import as_points
from server.coordinator.alignment import AlignmentSettings, AlignmentSizes, align_parties
from server.coordinator.strategy import FederationError
from tests.support.alignment import canonical, spelled, write_alignment_workspace
from tests.support.clientapp_grid import ClientAppParty, Traffic, clientapp_grid, message_bytes

PARTIES = ("bank", "telecom", "shop")
RUN = {"run-id": "align-test", "min-parties": 2, "allow-fewer-parties": True}


@dataclass(frozen=True)
class Aligned:
    """A finished phase: the transport, the parties (with their run state), what crossed."""

    root: Path
    parties: list[ClientAppParty]
    traffic: Traffic
    columns: dict[str, list[str]]
    sizes: AlignmentSizes


def _align(
    root: Path, *, column: str = "phone"
) -> tuple[AlignmentSizes, list[ClientAppParty], Traffic]:
    grid, parties, traffic = clientapp_grid(
        app,
        node_configs=[{"partition-id": pid} for pid in range(len(PARTIES))],
        run_config={**RUN, "sim-workspace": str(root)},
    )
    sizes = align_parties(
        grid,
        AlignmentSettings(guest="bank", id_column=column, id_kind="phone"),
        run_id="align-test",
        timeout=60,
        clock=grid.clock,
    )
    return sizes, parties, traffic


@pytest.fixture(scope="module")
def aligned(
    serverapp_identity: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Aligned:
    # arrange: the bank's 300 customers; the telecom knows 70 %, the shop 60 %, each with
    # customers of its own, in other orders and other spellings
    rng = np.random.default_rng(3)
    bank = [int(i) for i in rng.permutation(300)]
    telecom = [*bank[:210], *range(1000, 1080)]
    shop = [*bank[90:270], *range(2000, 2050)]
    rng.shuffle(telecom)
    rng.shuffle(shop)
    columns = {
        "bank": [spelled(i, 0) for i in bank],
        "telecom": [spelled(i, 1) for i in telecom],
        "shop": [spelled(i, 2) for i in shop],
    }
    root = write_alignment_workspace(tmp_path_factory.mktemp("align"), columns, order=PARTIES)

    # act: the four exchanges through the real ClientApp
    sizes, parties, traffic = _align(root)
    return Aligned(root, parties, traffic, columns, sizes)


@pytest.fixture(scope="module", autouse=True)
def serverapp_identity() -> Iterator[None]:
    """Who is sending: Flower's ServerApp runtime sets this in the process before ``main``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TaskIdentity, "_task_id", 1)
        patch.setattr(TaskIdentity, "_run_id", 1)
        patch.setattr(TaskIdentity, "_node_id", SUPERLINK_NODE_ID)
        yield


def test_each_party_gets_the_plain_intersection(aligned: Aligned) -> None:
    columns = aligned.columns
    bank = canonical(columns["bank"])
    results = {p: load_alignment(aligned.parties[i].context.state) for i, p in enumerate(PARTIES)}

    guest = results["bank"]
    assert isinstance(guest, GuestAlignment)
    for host in ("telecom", "shop"):
        theirs = canonical(columns[host])
        expected = [i for i, c in enumerate(bank) if c in set(theirs)]
        assert guest.shared[host].tolist() == expected
        view = results[host]
        assert isinstance(view, HostAlignment)
        # the host holds its shared rows and their references, no guest row number
        assert sorted(theirs[r] for r in view.rows) == sorted(bank[i] for i in expected)
        assert set(json.loads(view.to_json())) == {"host", "guest", "slots", "rows"}
        # the guest's references name, for each shared guest row, the host's row of that customer
        own = view.row_of(guest.references(host)[expected])
        assert [theirs[r] for r in own] == [bank[i] for i in expected]
    assert guest.coverage() == pytest.approx({"telecom": 0.7, "shop": 0.6})


def test_the_coordinator_learns_only_sizes(aligned: Aligned) -> None:
    sizes = aligned.sizes
    assert sizes.guest_rows == 300
    assert sizes.host_rows == {"telecom": 290, "shop": 230}
    assert sizes.shared == {"telecom": 210, "shop": 180}


def test_no_message_carries_an_identifier_or_an_unblinded_digest(aligned: Aligned) -> None:
    # arrange: every spelling, canonical form and salted digest of every party's identifiers
    config = load_party_config(aligned.root / "parties" / "party_0" / "party.toml")
    salt = identifier_key(config, parse_run_config(RUN)).psi_salt()
    needles: set[bytes] = set()
    for column in aligned.columns.values():
        forms = canonical(column)
        needles |= {v.encode() for v in column} | {c.encode() for c in forms}
        needles |= {c[1:].encode() for c in forms}  # the bare digits
        needles |= {row.tobytes() for row in as_points(psi_digests(forms, kind="phone", salt=salt))}
    needles.add(salt)

    # act: everything that crossed between parties and the coordinator
    haystack = b"\n".join(b for m in aligned.traffic.all() for b in message_bytes(m))

    # assert
    assert len(aligned.traffic.all()) == 2 * (3 + 2 + 1 + 2)
    leaked = [n for n in needles if n in haystack]
    assert leaked == []


def test_hosts_never_receive_the_guests_non_shared_rows(aligned: Aligned) -> None:
    # The only guest-derived values a host receives are its own blinded list and its sealed
    # result: the guest's list for it arrives blinded under a key the host never holds.
    guest = aligned.parties[0].context.node_id
    for message in aligned.traffic.sent:
        if message.metadata.dst_node_id == guest:
            continue
        arrays = {key: list(record) for key, record in message.content.array_records.items()}
        assert arrays in ({}, {"psi-points": ["guest"]}, {"psi-sealed": ["result"]})


def test_each_host_gets_the_guest_list_under_its_own_key(aligned: Aligned) -> None:
    # Two hosts comparing what they were sent cannot tell which guest customers they share.
    offer = next(
        r
        for r in aligned.traffic.received
        if r.metadata.src_node_id == 101 and "psi-points" in r.content
    )
    lists = offer.content.array_records["psi-points"]
    first = {row.tobytes() for row in lists["0"].numpy()}
    second = {row.tobytes() for row in lists["1"].numpy()}
    assert len(first) == len(second) == 300
    assert not first & second


def test_a_bad_identifier_stops_the_phase_naming_the_row(tmp_path: Path) -> None:
    columns = {
        "bank": ["13800000001", "13800000002", "not-a-phone"],
        "telecom": ["13800000001", "13800000001"],
        "shop": ["13800000002"],
    }
    root = write_alignment_workspace(tmp_path, columns, order=PARTIES)

    with pytest.raises(FederationError) as caught:
        _align(root)

    message = str(caught.value)
    assert "row 2: phone must be digits after removing separators; got 'not-a-phone" in message
    assert "row 1: phone is the same customer as row 0" in message
    assert "PARTY-REFUSED" in message


def test_an_unknown_id_column_is_named(tmp_path: Path) -> None:
    root = write_alignment_workspace(tmp_path, {p: ["13800000001"] for p in PARTIES}, order=PARTIES)

    with pytest.raises(
        FederationError, match=r"id column must be a column of train\.csv; got 'msisdn"
    ):
        _align(root, column="msisdn")
