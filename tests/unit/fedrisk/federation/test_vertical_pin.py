"""A vertical federation's app pin against a coordinator that tries to change the roster.

The coordinator submits run configs and writes the names inside every vertical message; each
attack below must be refused at the party, naming the run-config key it contradicts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.bundle import PartyBundle, load_bundle
from clients.pinning import install_pin
from fedrisk.errors import IdentityError, RunRefusal, RunRefusedError
from fedrisk.federation.pin import (
    AppPin,
    SignedPin,
    VerticalRoster,
    check_fab_against_pin,
    check_run_config_against_pin,
    check_vertical_roster,
    fedrisk_app_rules,
    make_pin,
    pinned_vertical_role,
    sign_pin,
)
from fedrisk.federation.run_config import RunConfigValue, parse_run_config
from simulations.enrollment import enroll_parties

FAB = "ab" * 32
ROSTER = VerticalRoster(guest="bank", hosts=("telco", "shop"), id_column="customer_id")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PartyBundle]:
    root = tmp_path_factory.mktemp("vertical-pin")
    result = enroll_parties(root / "coordinator", parties=("bank", "telco", "shop", "other"))
    return {name: load_bundle(path) for name, path in result.bundles.items()}


def _signed(bundles: dict[str, PartyBundle], *, vertical: VerticalRoster | None) -> SignedPin:
    lead = bundles["bank"]
    pin = make_pin(
        lead.manifest,
        fab_sha256=FAB,
        app="fedrisk/fedrisk==test",
        issued_at="2026-12-05T04:00:00+00:00",
        rules=fedrisk_app_rules(lead.manifest, vertical=vertical),
    )
    return sign_pin(pin, lead.signing_key())


def _pin(bundles: dict[str, PartyBundle], *, vertical: VerticalRoster | None) -> AppPin:
    signed = _signed(bundles, vertical=vertical)
    return check_fab_against_pin(signed, manifest=bundles["bank"].manifest, fab_hash=FAB)


def _vertical_run(**overrides: RunConfigValue) -> dict[str, RunConfigValue]:
    settings: dict[str, RunConfigValue] = {
        "run-id": "run-1",
        "rounds": 3,
        "layout": "vertical",
        "min-parties": 3,
        "vertical-guest": "bank",
        "vertical-parties": "bank,telco,shop",
        "vertical-id-column": "customer_id",
        "release-party": "bank",
    }
    settings.update(overrides)
    # The run config as the party's executor sees it: every key, defaults merged.
    return parse_run_config(settings).to_run_config()


def test_vertical_pin_admits_the_pinned_roster(bundles: dict[str, PartyBundle]) -> None:
    pin = _pin(bundles, vertical=ROSTER)

    check_run_config_against_pin(pin, _vertical_run())

    assert [pinned_vertical_role(pin, p) for p in ("bank", "telco", "shop", "other")] == [
        "guest",
        "host",
        "host",
        None,
    ]


@pytest.mark.parametrize(
    ("key", "overrides"),
    [
        ("vertical-guest", {"vertical-guest": "telco"}),  # a host made the guest
        ("vertical-parties", {"vertical-parties": "bank,telco,shop,other"}),  # a party added
        ("vertical-parties", {"vertical-parties": "telco,bank,shop"}),  # roles reordered
        ("layout", {"layout": "horizontal"}),
        ("vertical-id-column", {"vertical-id-column": "phone"}),
        ("vertical-id-kind", {"vertical-id-kind": "phone"}),
        ("min-parties", {"min-parties": 4}),
        ("model", {"model": "mlp"}),
    ],
)
def test_vertical_pin_refuses_a_changed_roster_naming_the_key(
    bundles: dict[str, PartyBundle], key: str, overrides: dict[str, RunConfigValue]
) -> None:
    pin = _pin(bundles, vertical=ROSTER)

    with pytest.raises(RunRefusedError) as caught:
        check_run_config_against_pin(pin, _vertical_run(**overrides))

    assert caught.value.reason == RunRefusal.CONFIG_VALUE
    assert f"{key} must be" in str(caught.value)


def test_horizontal_pin_refuses_every_vertical_run(bundles: dict[str, PartyBundle]) -> None:
    pin = _pin(bundles, vertical=None)

    with pytest.raises(RunRefusedError) as caught:
        check_run_config_against_pin(pin, _vertical_run())

    message = str(caught.value)
    for key in ("layout", "vertical-guest", "vertical-parties", "vertical-id-column"):
        assert f"{key} must be" in message
    assert pinned_vertical_role(pin, "bank") is None


def test_vertical_pin_must_name_parties_of_the_federation(
    bundles: dict[str, PartyBundle],
) -> None:
    stranger = VerticalRoster(guest="bank", hosts=("telco", "mallory"), id_column="customer_id")

    with pytest.raises(IdentityError, match="mallory"):
        _pin(bundles, vertical=stranger)


def test_roster_refuses_a_guest_among_its_hosts() -> None:
    with pytest.raises(ValueError, match="distinct"):
        VerticalRoster(guest="bank", hosts=("bank", "telco"), id_column="customer_id")


@pytest.mark.parametrize(
    ("party", "step", "key"),
    [
        ("telco", {"guest": "telco"}, "vertical-guest"),  # the message makes a host the guest
        ("telco", {"role": "guest"}, "vertical-guest"),  # its own data says guest, pin says host
        ("bank", {"peers": ("telco", "mallory")}, "vertical-parties"),  # a relayed extra party
        ("other", {}, "vertical-parties"),  # a party outside the roster asked to take part
    ],
)
def test_party_refuses_a_step_outside_the_pinned_roster(
    party: str, step: dict[str, object], key: str
) -> None:
    config = parse_run_config(_vertical_run())

    with pytest.raises(RunRefusedError, match=key):
        check_vertical_roster(config, party=party, **step)  # type: ignore[arg-type]


def test_party_accepts_a_step_inside_the_pinned_roster() -> None:
    config = parse_run_config(_vertical_run())

    check_vertical_roster(config, party="bank", role="guest", guest="bank", peers=("telco", "shop"))
    check_vertical_roster(config, party="shop", role="host", guest="bank", peers=("bank",))


def test_party_refuses_to_install_a_pin_with_another_role(
    bundles: dict[str, PartyBundle], tmp_path: Path
) -> None:
    signed = _signed(bundles, vertical=ROSTER)

    with pytest.raises(IdentityError, match="vertical guest"):
        install_pin(bundles["telco"], signed, expect_role="guest")
    assert install_pin(bundles["telco"], signed, expect_role="host") == signed.pin
