"""Prometheus metrics of the scoring service (one registry per app: tests run several apps)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


@dataclass
class Metrics:
    """Counters and histograms exported at ``GET /metrics``.

    Attributes
    ----------
    requests
        ``fedrisk_http_requests_total{method,route,status}``.
    latency
        ``fedrisk_http_request_duration_seconds{method,route}``.
    decisions
        ``fedrisk_decisions_total{stage,outcome,role}``.
    fraud_hits
        ``fedrisk_fraud_hits_total{rule}``; graph ring flags count under ``rule="graph_ring"``.
    batch_rows
        ``fedrisk_batch_rows_total{stage}``.
    refused_artifacts
        ``fedrisk_refused_artifacts_total{reason}``.
    write_backlog
        ``fedrisk_write_backlog``: decisions waiting for the group commit.
    monitoring_psi, monitoring_auc
        ``fedrisk_monitoring_score_psi`` and ``fedrisk_monitoring_auc_matured`` of the latest
        monitoring summary.
    monitoring_alerts
        ``fedrisk_monitoring_alerts{kind,severity}``: alerts firing in the latest summary.
    """

    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "fedrisk_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "fedrisk_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "fedrisk_decisions",
            "Automated decisions by stage, outcome and model role",
            ["stage", "outcome", "role"],
            registry=r,
        )
        self.fraud_hits = Counter(
            "fedrisk_fraud_hits", "Anti-fraud rule and graph hits", ["rule"], registry=r
        )
        self.batch_rows = Counter(
            "fedrisk_batch_rows", "Rows scored by batch uploads", ["stage"], registry=r
        )
        self.refused_artifacts = Counter(
            "fedrisk_refused_artifacts",
            "Model artifacts refused at load or registration",
            ["reason"],
            registry=r,
        )
        self.write_backlog = Gauge(
            "fedrisk_write_backlog", "Decision writes waiting for commit", registry=r
        )
        self.monitoring_psi = Gauge(
            "fedrisk_monitoring_score_psi", "Score PSI of the latest decision month", registry=r
        )
        self.monitoring_auc = Gauge(
            "fedrisk_monitoring_auc_matured", "Champion AUC on matured loans", registry=r
        )
        self.monitoring_alerts = Gauge(
            "fedrisk_monitoring_alerts",
            "Monitoring alerts firing in the latest summary",
            ["kind", "severity"],
            registry=r,
        )
        self._children: dict[tuple[object, ...], Any] = {}

    def child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: the hot path skips prometheus_client's lock."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found
