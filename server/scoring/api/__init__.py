"""HTTP API of the scoring service: one router per resource, mounted in order by ``create_app``.

=============== ======================================================================
``decisions``   A-card applications, B-card behaviour, C-card collections, a decision
``reviews``     requests for human review, the manual-review queue
``batch``       CSV / Parquet uploads scored by a stage's champion
``models``      the model registry: list, register, upload, promote, change log
``stages``      champion / challenger per stage, rollback, stopping a challenger
``fraud``       the fraud rules' external lists
``audit``       audit-chain verification
``monitoring``  loan outcomes, portfolio monitoring indicators, drill-down and alerts
``operations``  health and Prometheus metrics
``purpose``     loan purpose read from a decision's description, retraining with corrections
``login``       browser sign-in and sign-out (session cookie)
``dashboard``   the server-rendered dashboard, its CSV downloads and loan-level drill-down
=============== ======================================================================
"""

from __future__ import annotations

from fastapi import APIRouter

from server.scoring.api import (
    audit,
    batch,
    dashboard,
    decisions,
    fraud,
    login,
    models,
    monitoring,
    operations,
    purpose,
    reviews,
    stages,
)

ROUTERS: tuple[APIRouter, ...] = (
    decisions.router,
    reviews.router,
    batch.router,
    models.router,
    stages.router,
    fraud.router,
    audit.router,
    monitoring.router,
    operations.router,
    purpose.router,
    login.router,
    dashboard.router,
)
"""Every router, in the order their routes are documented."""
