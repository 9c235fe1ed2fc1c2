"""``make demo``: the whole story on Flower's deployment runtime, with real processes.

1. Three parties (a bank, an e-commerce platform, a telecom operator) create their own keys; the
   coordinator provisions the federation from their public requests only.
2. The lead party runs the CKKS key ceremony; the others accept their sealed secret context.
3. The TLS SuperLink and three authenticated SuperNodes start on 127.0.0.1.
4. The application (A-card) model trains encrypted over a few rounds, with live progress.
5. The lead party releases the signed model; the lender creates API keys (scoring, risk officer,
   viewer) and its scoring service starts on it.
6. Sample applications go in with the scoring key: ordinary ones, a likely decline with its
   reasons, a fraud ring; the risk officer's key reads the review queue.
7. The decisions are printed, with a viewer key, how to serve again and the report command.
8. (Optional) the vertical federation: one bank, one platform, one operator align their
   shared customers by private set intersection and train one LR under CKKS, each with its own
   key; then each host serves its signed part (``fedrisk party serve``, mutual TLS, customers
   only as a keyed hash), the lender installs the bank's part and scores applications through
   its real ``/v1/applications/decision`` (host reason codes, ``missing_parts``); one host is
   stopped and the next decisions come back with its part missing, not an error.
9. Portfolio monitoring on the demo's own decisions: a book of applications goes through the
   scoring service with an injected drift (one region's income falls in a downturn); the outcome
   generator gives the approved ones 12 months of performance, keyed to their stored decisions;
   the service checks its alert rules against the signed artifact's reference (score PSI and
   per-feature CSI) and serves the dashboard, whose URL is printed with the viewer key (``make
   demo`` run at a terminal keeps it up until Ctrl-C).
10. Everything is stopped by PID. Run twice, it works twice: ``demo-out/`` is rebuilt each time.

Synthetic parties by default; with ``FEDRISK_DATA_DIR`` set, three regional lenders of the real
Lending Club sample (split by state) instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from fedrisk.data.datasets import DATA_DIR_ENV, load_dataset
from fedrisk.data.partitions import PartyData, parse_partition, partition_frame
from fedrisk.data.schema import DatasetSchema
from fedrisk.errors import FedRiskError
from fedrisk.federation.enrollment import manifest_fingerprints
from fedrisk.federation.processes import console_script, pick_free_port, stop_process_tree
from fedrisk.release.artifact import (
    ModelArtifact,
    load_trusted_keys,
    pipeline_from_artifact,
    read_artifact,
)
from server.scoring.apikeys import Role, create_keys_at
from server.scoring.db.engine import make_engine
from server.scoring.portfolio import PortfolioConfig, load_portfolio, outcomes_for_decisions
from simulations.deployment import running_federation

DEMO_OUT = Path("demo-out")
PARTY_NAMES = ("bank", "ecommerce", "telecom")
DRIFT_REGION = "capital"
"""The region whose applicants' income falls in the demo's book (synthetic parties)."""


def _demo_parties(
    data_dir: Path | None, rng: np.random.Generator
) -> tuple[str, DatasetSchema, list[PartyData]]:
    if data_dir is not None or os.environ.get(DATA_DIR_ENV):
        dataset = load_dataset("lending-club", data_dir=data_dir, rng=rng)
        spec = parse_partition("by:addr_state")
        label = "Lending Club sample, three regional lenders (split by state)"
    else:
        dataset = load_dataset("synthetic", rng=rng, n_rows=9000)
        spec = parse_partition("by:segment")
        label = "synthetic bank / e-commerce / telecom parties"
    parties = partition_frame(dataset.frame, dataset.schema, spec, n_parties=3, rng=rng)
    renamed = [
        PartyData(name=name, train=p.train, test=p.test, description=p.description)
        for name, p in zip(PARTY_NAMES, parties, strict=True)
    ]
    return label, dataset.schema, renamed


def _progress(console: Console, rounds: int) -> Any:
    def on_event(event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "stats":
            console.print(f"  encrypted feature statistics from {', '.join(event['parties'])}")
        elif kind == "round":
            console.print(
                f"  round {event['round']}/{rounds}: {len(event['train_parties'])} parties, "
                f"federated AUC {event['auc']:.4f}, KS {event['ks']:.4f} "
                f"({event['seconds']:.0f}s, {event['bytes_up_per_party'] / 1024:.0f} KB "
                "encrypted upload per party)"
            )
        elif kind == "released":
            console.print(f"  released {event['model_id']} (signed by {event['party']})")
        elif kind in ("refused", "party-error", "failed"):
            console.print(f"  [yellow]{kind}[/]: {event.get('reason')}")

    return on_event


def _start_service(
    registry: Path, db_url: str, out: Path, *, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = pick_free_port()
    log = (out / "scoring.log").open("ab")
    proc = subprocess.Popen(
        [
            console_script("fedrisk"),
            "serve",
            "--development",  # a one-off demo database: the published identifier key will do
            "--registry",
            str(registry),
            "--db",
            db_url,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FedRiskError(f"the scoring service exited early; see {out / 'scoring.log'}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).is_success:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_process_tree(proc.pid, process=proc)
    raise FedRiskError(f"the scoring service did not start in 60s; see {out / 'scoring.log'}")


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _decide(client: httpx.Client, label: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST one A-card application; the service's answer."""
    response = client.post("/v1/applications/decision", json=body)
    if response.status_code != 200:
        raise FedRiskError(
            f"the service answered {response.status_code} for {label}: {response.text[:500]}"
        )
    answer: dict[str, Any] = response.json()
    return answer


def _features(row: pd.Series, schema: DatasetSchema) -> dict[str, object]:
    values: dict[str, object] = {}
    for name in schema.feature_names:
        value = row[name]
        values[name] = (
            None if pd.isna(value) else (value.item() if hasattr(value, "item") else value)
        )
    return values


def _applications(
    artifact: ModelArtifact, schema: DatasetSchema, test: pd.DataFrame
) -> list[tuple[str, dict[str, Any]]]:
    """Three ordinary applicants, the riskiest test applicant, and a six-application ring."""
    pd_scores = pipeline_from_artifact(artifact).predict_proba(test)
    order = np.argsort(pd_scores)
    picks = [("low risk", int(order[0])), ("typical", int(order[len(order) // 2]))]
    picks += [("typical", int(order[len(order) // 3])), ("high risk", int(order[-1]))]
    apps: list[tuple[str, dict[str, Any]]] = []
    for i, (label, idx) in enumerate(picks):
        apps.append(
            (
                label,
                {
                    "application_id": f"demo-app-{i}",
                    "applicant_id": f"demo-applicant-{i}",
                    "features": _features(test.iloc[idx], schema),
                    "signals": {
                        "device_id": f"device-{i}",
                        "phone": f"+1555000{i:04d}",
                        "applicant_name": f"Applicant {i}",
                        "phone_owner_name": f"Applicant {i}",
                        "age": 35,
                    },
                },
            )
        )
    # A ring: six different applicants who share devices and a bank card, chained together.
    typical = _features(test.iloc[int(order[len(order) // 2])], schema)
    for j in range(6):
        apps.append(
            (
                f"ring member {j + 1}",
                {
                    "application_id": f"demo-ring-{j}",
                    "applicant_id": f"demo-ring-applicant-{j}",
                    "features": typical,
                    "signals": {
                        "device_id": f"ring-device-{j // 2}",
                        "bank_card": f"ring-card-{(j + 1) // 2}",
                        "phone": f"+1555999{j:04d}",
                        "applicant_name": f"Ring {j}",
                        "phone_owner_name": f"Ring {j}",
                        "age": 30,
                    },
                },
            )
        )
    return apps


def _decisions_table(rows: list[tuple[str, dict[str, Any]]]) -> Table:
    table = Table(title="A-card decisions from the scoring service", show_lines=True)
    for col in ("applicant", "decision", "PD", "score", "limit / tier", "reasons and fraud"):
        table.add_column(col)
    for label, answer in rows:
        # Ring members share one applicant profile: their story is the fraud column, not reasons.
        shown = [] if label.startswith("ring") else answer["reasons"]
        reasons = [f"{r['code']} {r['text']} (-{r['points']:.1f} pts)" for r in shown]
        fraud = answer["fraud"]
        notes = [f"rule {h['rule_id']}: {h['message']}" for h in fraud["hits"]]
        if fraud["graph"]["is_ring"]:
            notes.append(f"possible ring: {fraud['graph']['component_size']} linked applications")
        limit = (
            f"{answer['credit_limit']:,.0f} / {answer['price_tier']}"
            if answer["credit_limit"] is not None
            else "-"
        )
        table.add_row(
            label,
            answer["decision"],
            f"{answer['pd']:.3f}",
            f"{answer['score']:.0f}",
            limit,
            "\n".join(reasons + notes) or "-",
        )
    return table


def _vertical_story(console: Console, out: Path) -> Path:
    """The vertical federation in brief: the bank, the e-commerce platform and the telecom
    operator align their shared customers by private set intersection and train one LR under
    CKKS, each with its own key (the PSI steps and the coordinator and party code of the
    simulation engine, called in-process to keep the demo short; docs/vertical.md); then the
    hosts serve their parts live and the lender scores applications with them
    (:func:`_vertical_serving`)."""
    # The hosts' serve.json files are read relative to their own folders: absolute paths
    # keep a relative --out (make demo's demo-out/) from being resolved twice.
    out = out.resolve()
    from fedrisk.data.vertical import align_by_join, load_vertical
    from fedrisk.ml.metrics import auc
    from fedrisk.ml.vertical import VerticalParams
    from simulations.vertical import (
        align_by_psi,
        lr_auc,
        party_matrices,
        prepare_vertical_workspace,
        run_in_process,
        scores_from_parts,
    )

    console.rule("[bold]8. Vertical federation: one bank, one platform, one operator")
    rng = np.random.default_rng(2026)
    raw = load_vertical("synthetic-vertical", rng=rng, n_customers=8000)
    # The join only lays out the evaluation's rows; training uses what PSI gives each party.
    views = align_by_join(raw, rng=rng)
    ws = prepare_vertical_workspace(out, views, raw, order_seed=int(rng.integers(2**62)))
    started = time.perf_counter()
    aligned = align_by_psi(ws, raw, rng=rng)
    console.print(
        f"  private set intersection over X25519 ({time.perf_counter() - started:.1f} s): each "
        "host learns which of its own customers the bank has, never which of the bank's it lacks"
    )
    for host, share in aligned.coverage().items():
        console.print(f"  {host} knows {share:.0%} of the bank's customers")
    result = run_in_process(
        ws,
        VerticalParams(epochs=8, batch_size=2048, learning_rate=0.2, seed=2026),
        model_id=VERTICAL_MODEL_ID,
    )
    y = views[0].labels
    assert y is not None
    test, fit = (
        views[0].rows("test"),
        np.concatenate([views[0].rows("train"), views[0].rows("valid")]),
    )
    matrices = party_matrices(views)
    federated = auc(y[test], scores_from_parts(ws, result)[test])
    console.print(
        f"  test AUC: vertical LR under CKKS {federated:.3f}, the bank alone "
        f"{lr_auc(matrices[0], y, fit, test):.3f}, all columns pooled (not allowed) "
        f"{lr_auc(np.concatenate(matrices, axis=1), y, fit, test):.3f}"
    )
    console.print(
        "  no party saw another's features, weights, partial scores or gradient; the labels "
        "never left the bank"
    )
    ids = raw.guest.frame[raw.guest.id_column].astype(str).tolist()
    _vertical_serving(console, ws, views, result.released, guest_ids=ids)
    return ws.release_dir / VERTICAL_MODEL_ID


VERTICAL_MODEL_ID = "vertical-demo"
HOST_REASONS: dict[str, dict[str, str]] = {
    "ecommerce": {
        "online_spend_12m": "Online spending pattern",
        "orders_12m": "Online order history",
        "returns_rate": "Share of online orders returned",
        "payment_method": "Preferred online payment method",
    },
    "telecom": {
        "phone_tenure_months": "Time with the mobile operator",
        "plan_type": "Mobile plan type",
        "monthly_topups": "Prepaid top-up pattern",
        "late_bill_payments_12m": "Late phone bill payments",
        "avg_monthly_bill": "Monthly phone spend",
        "device_tier": "Phone price tier",
    },
}
"""Each host's own reason texts (its ``party serve`` settings); the lender never sees values."""
HOST_DEADLINE_SECONDS = 1.0
"""The lender's per-host deadline in the demo (the service's default is 0.25 s; the demo shares
a laptop with its own training)."""


def _vertical_applicants(views: list[Any]) -> list[tuple[str, int]]:
    """Test customers to score: known to both hosts, to one only, and to none."""
    test = views[0].rows("test")
    known = [v.known[test] for v in views[1:]]
    picks: list[tuple[str, int]] = []
    for label, mask in (
        ("known to both hosts", known[0] & known[1]),
        (f"known to {views[1].name} only", known[0] & ~known[1]),
        (f"known to {views[2].name} only", ~known[0] & known[1]),
        ("known to neither host", ~known[0] & ~known[1]),
    ):
        rows = test[mask]
        if len(rows):
            picks.append((label, int(rows[0])))
    both = test[known[0] & known[1]]
    picks += [("known to both hosts", int(r)) for r in both[1:3]]
    return picks


def _vertical_serving(
    console: Console,
    ws: Any,
    views: list[Any],
    released: dict[str, str],
    *,
    guest_ids: list[str],
) -> None:
    """Each host starts ``fedrisk party serve`` on its signed part and its own table (mutual
    TLS under a demo CA; customers only as a keyed hash; masked answers); the lender installs
    the guest's part in its registry, its scoring service calls the hosts on every
    ``/v1/applications/decision``; then one host stops and the decisions go on without its
    part. Every process started here is stopped by PID before returning."""
    from clients.feature_service import ServiceSettings
    from simulations import host_services

    guest = views[0]
    hosts = views[1:]
    tls_dir = ws.root / "tls"
    ca = host_services.create_local_ca(tls_dir, "demo")
    lender_cert = ca.issue(guest.name)
    id_key = ws.root / "identifier.key"
    configs = {c.name: c for c in ws.configs}
    started: dict[str, subprocess.Popen[bytes]] = {}
    try:
        urls: dict[str, str] = {}
        for view in hosts:
            config = configs[view.name]
            cert, key = ca.issue(view.name)
            settings = ServiceSettings(
                part=Path(released[view.name]),
                trusted_keys=ws.trusted_keys_dir,
                data=config.own_data,
                id_column=config.id_column or "customer_id",
                identifier_key=id_key,
                masks_dir=config.peers_dir,
                reasons=HOST_REASONS.get(view.name, {}),
                certificate=cert,
                private_key=key,
                ca_certificate=ca.ca_file,
            )
            serve_json = config.own_data.parent / "serve.json"
            serve_json.write_text(settings.model_dump_json(), encoding="utf-8")
            proc, urls[view.name] = host_services.start_feature_service(
                serve_json, log_path=serve_json.parent / "serve.log"
            )
            started[view.name] = proc
        # The lender's service starts while the hosts do (it reaches them only per decision).
        lender = ws.root / "lender"
        registry = lender / "registry"
        (registry / "trusted_keys").mkdir(parents=True, exist_ok=True)
        shutil.copytree(released[guest.name], registry / VERTICAL_MODEL_ID)
        shutil.copy(
            ws.trusted_keys_dir / f"{guest.name}.pub",
            registry / "trusted_keys" / f"{guest.name}.pub",
        )
        db_url = f"sqlite:///{(lender / 'scoring.db').resolve()}"
        keys = create_keys_at(db_url, {Role.SCORING: "demo vertical origination"}, actor="demo")
        env = host_services.lender_environment(
            urls,
            client_cert=lender_cert,
            ca_file=ca.ca_file,
            identifier_key=id_key,
            deadline=HOST_DEADLINE_SECONDS,
        )
        proc, url = _start_service(registry, db_url, lender, env=env)
        started["lender"] = proc
        host_services.wait_until_serving(urls, host_services.lender_tls(ca.ca_file, lender_cert))
        for name in urls:
            console.print(
                f"  {name}: fedrisk party serve, pid {started[name].pid}, {urls[name]} (mutual "
                "TLS, its own signed part and table)"
            )
        console.print(
            f"  the lender's scoring service (pid {proc.pid}) holds only the bank's signed part; "
            f"A-card champion {VERTICAL_MODEL_ID}"
        )
        _vertical_decisions(console, url, keys[Role.SCORING], [guest, *hosts], guest_ids, started)
    finally:
        for proc in started.values():
            stop_process_tree(proc.pid, process=proc)
    console.print("  host services and the vertical scoring service stopped")


def _vertical_decisions(
    console: Console,
    url: str,
    key: str,
    views: list[Any],
    guest_ids: list[str],
    started: dict[str, subprocess.Popen[bytes]],
) -> None:
    """Score the demo's applicants through ``/v1/applications/decision`` (the applicant id is
    the bank's customer id, ``guest_ids`` per aligned row), stop one host, score again; print
    each decision with its host reasons and missing parts."""
    guest, hosts = views[0], views[1:]
    table = Table(title="Vertical A-card decisions (bank part + live host parts)")
    for col in ("applicant", "decision", "PD", "host reasons", "missing parts"):
        table.add_column(col)

    def decide(client: httpx.Client, label: str, row: int, tag: str) -> None:
        values = guest.features.iloc[row]
        body = {
            "application_id": f"vertical-{tag}-{row}",
            "applicant_id": guest_ids[row],
            "features": {
                k: None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)
                for k, v in values.items()
            },
        }
        answer = _decide(client, label, body)
        host_reasons = [
            f"{r['code']}: {r['text']}" for r in answer["reasons"] if "." in str(r["code"])
        ]
        missing = answer.get("missing_parts", {})
        table.add_row(
            label,
            answer["decision"],
            f"{answer['pd']:.3f}",
            "\n".join(host_reasons) or "-",
            ", ".join(f"{h}: {why}" for h, why in missing.items()) or "none",
        )

    applicants = _vertical_applicants(views)
    stopped = hosts[-1].name
    with httpx.Client(base_url=url, timeout=30, headers=_bearer(key)) as client:
        for label, row in applicants:
            decide(client, label, row, "live")
        proc = started.pop(stopped)
        stop_process_tree(proc.pid, process=proc)
        for label, row in applicants[:3]:
            decide(client, f"{label}, {stopped} stopped", row, "stopped")
    Console(width=max(console.width, 150), file=console.file).print(table)
    console.print(
        f"  {stopped}'s service stopped (pid {proc.pid}): the next decisions came back 200 with "
        f"its part missing ('down'); the other host's masked answer cannot be unmasked alone "
        "('masks-incomplete'), so they fall back to the bank's part, as in training"
    )


@dataclass(frozen=True)
class Downturn:
    """The demo's injected drift for one dataset's columns: in ``region``, income falls by
    ``income_drop`` and, as in a regional downturn, revolving utilisation and recent late
    payments rise."""

    region_column: str
    region: str
    income: str
    utilisation: str
    late_payments: str
    income_drop: float = 0.9
    utilisation_rise: float = 0.9
    late_rise: float = 5.0


DOWNTURNS: dict[str, Downturn] = {
    "synthetic": Downturn(
        "region", DRIFT_REGION, "income", "credit_utilisation", "delinquencies_2y"
    ),
    "lending-club": Downturn("addr_state", "CA", "annual_inc", "revol_util", "delinq_2yrs"),
}
"""The downturn per dataset the demo can run on (its schema's columns)."""

BOOK_BEFORE = 700
"""Applications of the demo's book decided before the downturn (the drift region's borrowers
among them are the ones who later default more)."""
BOOK_AFTER = 2100
"""Applications of the demo's book decided after it (the drift region's are drifted)."""
SHOCK_FACTOR = 10.0
"""How many times more often the drift region's borrowers default in the last three months."""
SENDERS = 8
"""Concurrent clients sending the book: the service commits their decisions together."""


def _drifted(book: pd.DataFrame, schema: DatasetSchema, downturn: Downturn) -> pd.DataFrame:
    """The book with the downturn applied to its region's applicants (within schema bounds)."""
    out = book.copy()
    hit = out[downturn.region_column] == downturn.region
    moved = {
        downturn.income: out.loc[hit, downturn.income].astype(float) * (1.0 - downturn.income_drop),
        downturn.utilisation: out.loc[hit, downturn.utilisation].astype(float)
        + downturn.utilisation_rise,
        downturn.late_payments: out.loc[hit, downturn.late_payments].astype(float)
        + downturn.late_rise,
    }
    for column, values in moved.items():
        spec = schema.feature(column)
        out.loc[hit, column] = values.clip(lower=spec.min, upper=spec.max)
    return out


def _send_book(
    url: str, key: str, book: pd.DataFrame, schema: DatasetSchema, region_column: str
) -> dict[str, dict[str, str]]:
    """POST every application of the book (in order, from a few concurrent clients); returns
    each approved decision's segment tags."""

    def send(start: int) -> list[tuple[int, dict[str, Any]]]:
        answers = []
        with httpx.Client(base_url=url, timeout=60, headers=_bearer(key)) as client:
            for k in range(start, len(book), SENDERS):
                body = {
                    "application_id": f"book-app-{k}",
                    "applicant_id": f"book-applicant-{k}",
                    "features": _features(book.iloc[k], schema),
                    "signals": {
                        "device_id": f"book-device-{k}",
                        "phone": f"+1556{k:07d}",
                        "applicant_name": f"Book applicant {k}",
                        "phone_owner_name": f"Book applicant {k}",
                        "age": 35,
                    },
                }
                answers.append((k, _decide(client, f"book application {k}", body)))
        return answers

    with ThreadPoolExecutor(max_workers=SENDERS) as pool:
        answered = [a for part in pool.map(send, range(SENDERS)) for a in part]
    return {
        answer["decision_id"]: {"region": str(book.iloc[k][region_column])}
        for k, answer in sorted(answered, key=lambda a: a[0])
        if answer["decision"] == "approve"
    }


def _monitoring_story(
    console: Console,
    *,
    service: tuple[subprocess.Popen[bytes], str],
    db_url: str,
    keys: dict[Role, str],
    schema: DatasetSchema,
    test: pd.DataFrame,
    rng: np.random.Generator,
    serve: bool,
) -> str:
    """Send a book of applications through the scoring service, with a regional downturn, then
    generate the outcomes of the approved ones (keyed to their stored decisions), let the
    service check its alert rules against the signed artifact's reference (score PSI and
    per-feature CSI), and serve the dashboard (until Ctrl-C when ``serve``); returns its URL.
    ``service`` is the running scoring service (its process and URL); the caller stops it."""
    console.rule("[bold]9. Portfolio monitoring: the demo's decisions, outcomes, drift, alerts")
    downturn = DOWNTURNS.get(schema.name)
    book = test.sample(n=BOOK_BEFORE + BOOK_AFTER, replace=True, random_state=rng)
    book = book.reset_index(drop=True)
    if downturn is not None:
        after = _drifted(book.iloc[BOOK_BEFORE:], schema, downturn)
        book = pd.concat([book.iloc[:BOOK_BEFORE], after], ignore_index=True)
    region_column = downturn.region_column if downturn is not None else schema.feature_names[0]
    proc, url = service
    tags = _send_book(url, keys[Role.SCORING], book, schema, region_column)
    config = PortfolioConfig(
        drift_region=None if downturn is None else downturn.region,
        shock_factor=SHOCK_FACTOR,
    )
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            portfolio = outcomes_for_decisions(connection, config, rng, tags=tags)
        report = load_portfolio(engine, portfolio)
    finally:
        engine.dispose()
    console.print(
        f"  {len(book)} applications decided by the service, {report.loans_added} approved "
        f"loans with {report.inserted} monthly outcome rows up to {portfolio.as_of}"
    )
    if downturn is not None:
        console.print(
            f"  downturn in {downturn.region_column}={downturn.region} after the first "
            f"{BOOK_BEFORE} applications: {downturn.income} falls "
            f"{downturn.income_drop:.0%}, {downturn.utilisation} and "
            f"{downturn.late_payments} rise; its borrowers default more in the last months"
        )
    with httpx.Client(
        base_url=url, timeout=120, headers=_bearer(keys[Role.RISK_OFFICER])
    ) as officer:
        checked = officer.post("/v1/monitoring/alerts/check")
        summary = officer.get("/v1/monitoring/summary")
    if checked.status_code != 200 or summary.status_code != 200:
        raise FedRiskError(
            f"the alert check answered {checked.status_code}, the summary "
            f"{summary.status_code}: {checked.text[:300]} {summary.text[:300]}"
        )
    csi = sorted(summary.json()["csi"].items(), key=lambda kv: -kv[1])[:4]
    console.print(
        f"  score PSI {summary.json()['psi'] or 0:.3f}; feature CSI "
        + ", ".join(f"{name} {value:.3f}" for name, value in csi)
    )
    for alert in checked.json()["firing"]:
        console.print(f"  alert {alert['kind']} ({alert['severity']}): {alert['message']}")
    dashboard = f"{url}/dashboard"
    console.print(f"dashboard:           {dashboard}  (sign in with the viewer key)")
    console.print(f"viewer key:          {keys[Role.VIEWER]}")
    if not serve:
        console.print("  (not at a terminal: the dashboard stops with the demo)")
    if serve:
        console.print("  serving the dashboard until Ctrl-C")
        sys.stdout.flush()
        try:
            proc.wait()
        except KeyboardInterrupt:
            console.print("  stopping the dashboard")
    return dashboard


def run_demo(
    *,
    console: Console,
    data_dir: Path | None = None,
    out: Path = DEMO_OUT,
    rounds: int = 3,
    vertical: bool = True,
    serve_dashboard: bool = False,
) -> None:
    """Run the end-to-end demo; every process it starts is stopped before it returns.

    ``vertical=False`` leaves out the vertical federation's step (training about half a
    minute, then two host services and a second scoring service for a few seconds);
    ``serve_dashboard=True`` keeps the dashboard up at the end until Ctrl-C (``make demo``).
    """
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rng = np.random.default_rng(2026)
    label, schema, parties = _demo_parties(data_dir, rng)
    console.rule("[bold]1-3. Provision, key ceremony, TLS SuperLink and three SuperNodes")
    console.print(f"parties: {label}")
    # As `fedrisk server start` does: parties reach only the Fleet API, through nginx.
    with running_federation(
        out / "federation", schema=schema, parties=parties, fleet_proxy=True
    ) as fed:
        console.print("  each party created its own keys; the coordinator saw public requests only")
        for name, fingerprint in manifest_fingerprints(fed.bundle(fed.lead).manifest).items():
            console.print(f"  fingerprint {name}: {fingerprint}")
        if fed.superlink is not None:
            console.print(f"  coordinator's address (runs): https://{fed.superlink.address}")
            console.print(
                f"  parties' address (Fleet API only): https://{fed.superlink.fleet_address}"
            )
        for name, node in fed.supernodes.items():
            console.print(f"  SuperNode {name}: pid {node.pid}")
        console.rule(f"[bold]4. Encrypted federated training, {rounds} rounds")
        _, outcome = fed.run(rounds=rounds, on_event=_progress(console, rounds))
        registry = fed.release_dir
    released = [e for e in outcome.events if e.get("event") == "released"][-1]
    artifact = read_artifact(
        registry / str(released["model_id"]),
        trusted_keys=load_trusted_keys(registry / "trusted_keys"),
    )
    console.rule("[bold]5. API keys, then the scoring service on the released, signed model")
    db_url = f"sqlite:///{(out / 'scoring.db').resolve()}"
    # the same as `fedrisk serve keys create --role R --name N --db URL`, once per role
    keys = create_keys_at(
        db_url,
        {
            Role.SCORING: "demo origination system",
            Role.RISK_OFFICER: "demo risk officer",
            Role.VIEWER: "demo viewer",
        },
        actor="demo",
    )
    console.print("  API keys created: scoring, risk_officer, viewer (stored argon2-hashed)")
    proc, url = _start_service(registry, db_url, out)
    try:
        console.print(f"  service {url} (OpenAPI description at {url}/openapi.json, with a key)")
        console.rule("[bold]6-7. Sample applications")
        test = pd.concat([p.test for p in parties], ignore_index=True)
        answers: list[tuple[str, dict[str, Any]]] = []
        with (
            httpx.Client(base_url=url, timeout=30, headers=_bearer(keys[Role.SCORING])) as client,
            httpx.Client(
                base_url=url, timeout=30, headers=_bearer(keys[Role.RISK_OFFICER])
            ) as officer,
        ):
            for app_label, body in _applications(artifact, schema, test):
                answers.append((app_label, _decide(client, app_label, body)))
            queue = officer.get("/v1/reviews").json()
        # At least 150 columns so the reasons column stays readable; same destination as the rest.
        Console(width=max(console.width, 150), file=console.file).print(_decisions_table(answers))
        n_queue = len(queue["items"])
        console.print(f"  review queue now holds {n_queue} items (fraud flags, manual reviews)")
        # the service stays up (idle) through the vertical step: the monitoring step uses it
        vertical_parts = _vertical_story(console, out / "vertical") if vertical else None
        dashboard = _monitoring_story(
            console,
            service=(proc, url),
            db_url=db_url,
            keys=keys,
            schema=schema,
            test=test,
            rng=np.random.default_rng(20261204),
            serve=serve_dashboard,
        )
    finally:
        stop_process_tree(proc.pid, process=proc)
    console.rule("[bold]10. Done: everything stopped")
    console.print(f"signed model:        {registry / str(released['model_id'])}")
    console.print(
        f"decisions database:  {out / 'scoring.db'} (verify: fedrisk audit verify "
        f"--db sqlite:///{(out / 'scoring.db').resolve()})"
    )
    console.print(
        f"serve it again:      fedrisk serve --development --registry {registry} --db {db_url}"
        f"  (dashboard was "
        f"{dashboard})"
    )
    console.print(
        f"viewer key:          {keys[Role.VIEWER]}  (aggregates only; send it as "
        "Authorization: Bearer <key>; list or revoke keys with fedrisk serve keys list|revoke)"
    )
    if vertical_parts is not None:
        console.print(f"vertical model parts: {vertical_parts} (one signed part per party)")
    console.print("simulation report:   fedrisk report --out report/  (open report/index.html)")
    sys.stdout.flush()
