"""The monitoring summary: every indicator and alert at once, as JSON and as a static HTML page.

Other features add JSON sections with :func:`register_section` (the purpose classifier adds
``purpose_classifier``: ``{"accuracy": …}``) in a module listed in :data:`SECTION_MODULES`, which
is imported before each summary; a section appears only once registered, so the report never
carries a placeholder.
"""

from __future__ import annotations

import html
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from sqlalchemy.engine import Connection

from fedrisk.files import write_atomic
from fedrisk.release.reference import ScoreReference
from server.scoring.monitoring import queries
from server.scoring.monitoring.alerts import (
    AlertThresholds,
    auc_alert,
    bcard_alert,
    csi_alerts,
    psi_alert,
    segment_alerts,
)
from server.scoring.monitoring.models import (
    DIMENSIONS,
    Alert,
    PsiResult,
    RollRates,
    Summary,
)

SECTION_MODULES: Final[tuple[str, ...]] = ("server.scoring.monitoring.purpose_section",)
"""Modules that register extra sections when imported (the purpose classifier's goes here)."""

SectionFn = Callable[[Connection], dict[str, Any] | None]
SECTIONS: Final[dict[str, SectionFn]] = {}
"""Extra JSON sections by key: ``fn(connection)`` returns the section, or None to leave it out."""


def register_section(name: str, fn: SectionFn) -> None:
    """Add a JSON section to every monitoring summary (e.g. ``purpose_classifier``)."""
    SECTIONS[name] = fn


def build_summary(
    connection: Connection,
    reference: ScoreReference | None,
    *,
    as_of: str | None = None,
    window: int = queries.WINDOW,
    limits: AlertThresholds | None = None,
) -> Summary:
    """Compute every indicator and evaluate the alert rules (alerts are not stored here)."""
    limits = limits or AlertThresholds()
    as_of = as_of or queries.latest_month(connection)
    decision_month = queries.latest_decision_month(connection)
    psi = (
        queries.score_psi(connection, reference, month=decision_month)
        if reference is not None and decision_month is not None
        else PsiResult(month=decision_month, psi=None, count=0, bands=[])
    )
    csi = (
        queries.feature_csi(connection, reference, month=decision_month)
        if reference is not None and reference.features and decision_month is not None
        else []
    )
    versus = queries.champion_challenger(connection, window=window)
    champion = versus.champion
    release_auc = None if reference is None else reference.auc
    expected = queries.expected_auc(connection, window=window)
    alerts: list[Alert] = []
    if as_of is not None:
        found = psi_alert(psi, as_of=as_of, limits=limits)
        if found is not None:
            alerts.append(found)
        alerts.extend(csi_alerts(csi, as_of=as_of, limits=limits))
        found = auc_alert(
            champion.auc,
            expected,
            release_auc=release_auc,
            variance=champion.auc_variance,
            loans=champion.loans,
            as_of=as_of,
            limits=limits,
        )
        if found is not None:
            alerts.append(found)
        trends = {d: queries.delinquency_trend(connection, d, as_of=as_of) for d in DIMENSIONS}
        overall = queries.delinquency_trend(connection, None, as_of=as_of).get("all", [])
        alerts.extend(segment_alerts(trends, overall, as_of=as_of, limits=limits))
    warnings = queries.bcard_warning_rate(connection)
    spike = bcard_alert(warnings, limits=limits)
    if spike is not None:
        alerts.append(spike)
    direction_rows = []
    if as_of is not None:
        for dim in DIMENSIONS:
            direction_rows.extend(queries.direction(connection, [dim], as_of=as_of).rows)
    return Summary(
        as_of=as_of,
        psi=psi.psi,
        psi_trend=[] if reference is None else queries.psi_trend(connection, reference),
        csi={r.feature: r.csi for r in csi if r.csi is not None},
        csi_trend=(
            []
            if reference is None or not reference.features
            else queries.csi_trend(connection, reference)
        ),
        auc_matured=champion.auc,
        ks_matured=champion.ks,
        release_auc=release_auc,
        expected_auc_matured=expected,
        decision_mix=queries.decision_mix(connection),
        bad_rate_by_band=(
            []
            if reference is None
            else queries.bad_rate_by_band(connection, reference, window=window)
        ),
        vintages=[] if as_of is None else queries.vintages(connection, as_of=as_of),
        roll_rates=(
            RollRates(
                buckets=list(queries.BUCKETS), from_month=None, to_month=None, counts=[], rates=[]
            )
            if as_of is None
            else queries.roll_rates(connection, as_of=as_of)
        ),
        champion_challenger=versus,
        direction=direction_rows,
        bcard_warning_rate=warnings,
        alerts=alerts,
    )


def summary_json(summary: Summary, connection: Connection | None = None) -> dict[str, Any]:
    """The summary as JSON data, with the registered extra sections."""
    data = summary.model_dump(mode="json")
    for module in SECTION_MODULES:
        importlib.import_module(module)
    if connection is not None:
        for name, fn in SECTIONS.items():
            section = fn(connection)
            if section is not None:
                data[name] = section
    return data


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


def _band_name(value: float) -> str:
    """toad/optbinning's reading of a PSI or CSI."""
    limits = AlertThresholds()
    if value >= limits.csi:
        return "shifted"
    return "watch" if value >= limits.csi_warning else "stable"


def _table(headers: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE: Final = (
    "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;"
    "margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th{background:#eee}.critical{color:#b00}.warning{color:#a60}"
)


def summary_html(data: dict[str, Any]) -> str:
    """A self-contained static HTML page of the summary (no scripts, nothing loaded)."""
    parts = [
        f"<h1>Portfolio monitoring as of {_fmt(data['as_of'])}</h1>",
        "<h2>Alerts</h2>",
        "".join(
            f"<p class='{html.escape(a['severity'])}'><b>{html.escape(a['kind'])}</b> "
            f"{html.escape(a['subject'])}: {html.escape(a['message'])}"
            f"{' — <b>retrain recommended</b>' if a['retrain_recommended'] else ''}</p>"
            for a in data["alerts"]
        )
        or "<p>No alerts.</p>",
        "<h2>Drift and performance</h2>",
        _table(
            ["PSI (latest month)", "AUC matured", "expected AUC", "KS matured", "release AUC"],
            [
                [
                    data["psi"],
                    data["auc_matured"],
                    data["expected_auc_matured"],
                    data["ks_matured"],
                    data["release_auc"],
                ]
            ],
        ),
        "<h3>PSI by month</h3>",
        _table(
            ["month", "PSI", "applications"],
            [[p["month"], p["psi"], p["count"]] for p in data["psi_trend"]],
        ),
        "<h3>Feature CSI (latest decision month, against the release's feature bins)</h3>",
        _table(
            ["feature", "CSI", "band"],
            [
                [name, value, _band_name(value)]
                for name, value in sorted(data["csi"].items(), key=lambda kv: -kv[1])
            ],
        ),
        "<h3>Feature CSI by month</h3>",
        _table(
            ["feature", "month", "CSI", "applications"],
            [[p["feature"], p["month"], p["csi"], p["count"]] for p in data["csi_trend"]],
        ),
        "<h3>Bad rate by PD band (matured loans)</h3>",
        _table(
            ["band", "PD from", "PD to", "loans", "bads", "bad rate", "mean PD", "reference"],
            [
                [
                    b["band"],
                    b["pd_low"],
                    b["pd_high"],
                    b["loans"],
                    b["bads"],
                    b["bad_rate"],
                    b["mean_pd"],
                    b["reference_bad_rate"],
                ]
                for b in data["bad_rate_by_band"]
            ],
        ),
        "<h3>Champion vs challenger</h3>",
        _table(
            ["champion AUC", "challenger AUC", "difference", "CI low", "CI high"],
            [
                [
                    data["champion_challenger"]["champion"]["auc"],
                    data["champion_challenger"]["challenger"]["auc"],
                    data["champion_challenger"]["auc_difference"],
                    data["champion_challenger"]["ci_low"],
                    data["champion_challenger"]["ci_high"],
                ]
            ],
        ),
        "<h2>Decision mix</h2>",
        _table(
            ["month", "applications", "approve", "manual review", "decline", "override rate"],
            [
                [
                    r["month"],
                    r["total"],
                    r["counts"].get("approve", 0),
                    r["counts"].get("manual_review", 0),
                    r["counts"].get("decline", 0),
                    r["override_rate"],
                ]
                for r in data["decision_mix"]
            ],
        ),
        "<h2>Vintages (cumulative bad rate by month on book)</h2>",
        _table(
            ["originated", "loans", *[str(m) for m in range(1, 25)]],
            [[v["originated"], v["loans"], *v["bad_rate_by_mob"][:24]] for v in data["vintages"]],
        ),
        "<h2>Roll rates</h2>",
        _table(
            ["from \\ to", *data["roll_rates"]["buckets"]],
            [
                [b, *row]
                for b, row in zip(
                    data["roll_rates"]["buckets"], data["roll_rates"]["rates"], strict=False
                )
            ],
        ),
        "<h2>Direction analysis</h2>",
        _table(
            [
                "segment",
                "loans",
                "overdue rate",
                "overdue amount",
                "default rate",
                "loss rate",
                "net yield",
                "high-default but profitable",
            ],
            [
                [
                    r["segment"],
                    r["loans"],
                    r["overdue_rate"],
                    r["overdue_amount"],
                    r["default_rate"],
                    r["loss_rate"],
                    r["net_yield"],
                    "yes" if r["high_default_profitable"] else "",
                ]
                for r in data["direction"]
            ],
        ),
    ]
    for name in SECTIONS:
        if name in data:
            section = html.escape(json.dumps(data[name], indent=2, ensure_ascii=False))
            parts.append(f"<h2>{html.escape(name)}</h2><pre>{section}</pre>")
    body = "\n".join(parts)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>fedrisk monitoring</title>"
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def write_report(data: dict[str, Any], out_dir: Path, json_path: Path | None) -> Path:
    """Write ``index.html`` (and ``monitoring.json``) into ``out_dir``, and ``json_path``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False)
    write_atomic(out_dir / "monitoring.json", text.encode())
    write_atomic(out_dir / "index.html", summary_html(data).encode())
    if json_path is not None:
        write_atomic(json_path, text.encode())
    return out_dir / "index.html"
