"""Two hosts' feature services (``fedrisk party serve``) of a small vertical model, on
127.0.0.1 with mutual TLS under a test federation CA; and the lender's client certificate."""

from __future__ import annotations

import secrets
import shutil
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from clients.feature_service import OWN_X25519, ServiceSettings
from fedrisk.federation.identifiers import IdentifierKey
from fedrisk.ml.vertical import PartyPreprocessor
from fedrisk.release.identity import generate_signing_key, save_public_key
from fedrisk.release.vertical import VerticalPart, write_part
from secure_agg.vertical import generate_x25519
from simulations import host_services
from tests.support.processes import ProcessRegistry

MODEL_ID = "vm-test-1"
HOSTS = ("shop", "telecom")
CUSTOMERS = [f"C{i:04d}" for i in range(30)]
KNOWN = {"telecom": CUSTOMERS[:20], "shop": CUSTOMERS[10:]}
"""Customers 0-9 only the telecom knows, 10-19 both, 20-29 only the shop."""


@dataclass
class HostServices:
    """The running services and what a lender needs to call them."""

    root: Path
    key: IdentifierKey
    urls: dict[str, str]
    parts: dict[str, VerticalPart]
    frames: dict[str, pd.DataFrame]
    lender_cert: tuple[str, str]
    ca: str
    pids: dict[str, int] = field(default_factory=dict)

    def tls(self) -> ssl.SSLContext:
        """The lender's TLS context: the federation CA, and its own certificate to present."""
        return host_services.lender_tls(Path(self.ca), self.lender_cert)

    def client(self) -> httpx.Client:
        """An httpx client holding the lender's certificate."""
        return httpx.Client(verify=self.tls(), timeout=10.0)

    def plain_part(self, host: str, customer: str) -> float:
        """What ``host``'s part is for ``customer`` without masks (0 if it does not know them)."""
        frame = self.frames[host]
        rows = frame.index[frame["customer_id"] == customer]
        if len(rows) == 0:
            return 0.0
        return float(self.parts[host].partial_scores(frame.loc[rows])[0])


def _frame(
    host: str, rng: np.random.Generator
) -> tuple[pd.DataFrame, tuple[str, ...], tuple[str, ...]]:
    ids = KNOWN[host]
    if host == "telecom":
        frame = pd.DataFrame(
            {
                "customer_id": ids,
                "tenure_months": rng.integers(1, 120, len(ids)),
                "plan": rng.choice(["prepaid", "contract"], len(ids)),
            }
        )
        return frame, ("tenure_months",), ("plan",)
    frame = pd.DataFrame(
        {
            "customer_id": ids,
            "spend_12m": rng.gamma(2.0, 300.0, len(ids)).round(2),
            "returns_12m": rng.integers(0, 6, len(ids)),
        }
    )
    return frame, ("spend_12m", "returns_12m"), ()


def write_hosts(root: Path) -> HostServices:
    """Write both hosts' parts, data (``<host>/data.csv``), keys, certificates and settings
    (``<host>/serve.json``) under ``root``; nothing started yet (no URLs, no PIDs)."""
    rng = np.random.default_rng(3)
    local_ca = host_services.create_local_ca(root, "test")
    ca = local_ca.ca_file

    def certificate(name: str) -> tuple[str, str]:
        cert, key = local_ca.issue(name)
        return str(cert), str(key)

    id_key = IdentifierKey(secrets.token_bytes(32), "test")
    id_key.save(root / "identifier.key")
    trusted = root / "trusted_keys"
    trusted.mkdir()
    x25519 = {h: generate_x25519() for h in HOSTS}
    services = HostServices(
        root=root,
        key=id_key,
        urls={},
        parts={},
        frames={},
        lender_cert=certificate("bank"),
        ca=str(ca),
    )
    for host in HOSTS:
        folder = root / host
        masks = folder / "masks"
        masks.mkdir(parents=True)
        (masks / OWN_X25519).write_bytes(x25519[host][0])
        for peer in HOSTS:
            if peer != host:
                (masks / f"{peer}.x25519").write_bytes(x25519[peer][1])
        frame, numeric, categorical = _frame(host, rng)
        frame.to_csv(folder / "data.csv", index=False)
        prep = PartyPreprocessor(numeric, categorical).fit(
            frame, np.ones(len(frame), dtype=bool), rows=np.arange(len(frame))
        )
        part = VerticalPart(
            model_id=MODEL_ID,
            party=host,
            role="host",
            parties=["bank", *HOSTS],
            columns=prep.columns,
            weights=rng.normal(0.0, 0.5, len(prep.columns)).tolist(),
            preprocessing=prep.to_dict(),
        )
        signing = generate_signing_key()
        save_public_key(signing.public_key(), trusted / f"{host}.pub")
        part_dir = write_part(part, folder / "release", signing_key=signing)
        cert, key = certificate(host)
        settings = ServiceSettings(
            part=part_dir,
            trusted_keys=trusted,
            data=folder / "data.csv",
            id_column="customer_id",
            identifier_key=root / "identifier.key",
            masks_dir=masks,
            reasons={"plan": "Mobile plan type"} if host == "telecom" else {},
            certificate=Path(cert),
            private_key=Path(key),
            ca_certificate=ca,
        )
        (folder / "serve.json").write_text(settings.model_dump_json(), encoding="utf-8")
        services.parts[host] = part
        services.frames[host] = frame
    return services


def start_host_services(root: Path, registry: ProcessRegistry) -> HostServices:
    """:func:`write_hosts` under ``root``, then start both services (tracked in ``registry``)
    and wait until both answer over mutual TLS."""
    services = write_hosts(root)
    for host in HOSTS:
        folder = root / host
        proc, url = host_services.start_feature_service(
            folder / "serve.json", log_path=folder / "serve.log"
        )
        services.pids[host] = registry.track(proc.pid)
        services.urls[host] = url
    host_services.wait_until_serving(services.urls, services.tls())
    return services


@contextmanager
def running_host_services(root: Path) -> Iterator[HostServices]:
    """:func:`start_host_services` for a module-scoped fixture: stopped by PID on exit."""
    registry = ProcessRegistry()
    try:
        yield start_host_services(root, registry)
    finally:
        survivors = registry.stop_all()
        assert not survivors, f"processes survived SIGKILL: {survivors}"


def guest_part() -> tuple[VerticalPart, pd.DataFrame]:
    """The lender's (guest's) part of the same model, and its applicants' own features."""
    frame = pd.DataFrame({"income": np.linspace(1000.0, 9000.0, len(CUSTOMERS))})
    prep = PartyPreprocessor(("income",), ()).fit(
        frame, np.ones(len(frame), dtype=bool), rows=np.arange(len(frame))
    )
    part = VerticalPart(
        model_id=MODEL_ID,
        party="bank",
        role="guest",
        parties=["bank", *HOSTS],
        columns=["_intercept", *prep.columns],
        weights=[-1.0, 0.4],
        preprocessing=prep.to_dict(),
    )
    return part, frame


def install_guest_part(registry: Path) -> VerticalPart:
    """Sign :func:`guest_part` as the bank and put it into a scoring registry the way a lender
    does: ``REGISTRY/<model_id>/`` holds the guest's released ``artifact.json`` + ``.sig``, and
    ``REGISTRY/trusted_keys/bank.pub`` trusts its signer."""
    part, _ = guest_part()
    signing = generate_signing_key()
    (registry / "trusted_keys").mkdir(parents=True, exist_ok=True)
    save_public_key(signing.public_key(), registry / "trusted_keys" / "bank.pub")
    released = write_part(part, registry.parent / "bank-release", signing_key=signing)
    shutil.copytree(released, registry / part.model_id)
    return part


def lender_environment(services: HostServices, *, deadline: float) -> dict[str, str]:
    """The scoring service's ``FEDRISK_VERTICAL_*`` variables to reach ``services``."""
    return host_services.lender_environment(
        services.urls,
        client_cert=services.lender_cert,
        ca_file=services.ca,
        identifier_key=services.root / "identifier.key",
        deadline=deadline,
    )
