"""HTML rendering of the dashboard: Jinja2 templates, the page context, security headers.

Notes
-----
Pages are sent with a Content-Security-Policy that allows scripts only from the service itself
(``script-src 'self'``): the figures travel as JSON data blocks and ``assets/dashboard.js`` draws
them, so no inline script runs and nothing loads from another origin. Loan-level pages are never
cached (``no-store``).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from server.scoring.apikeys import Principal
from server.scoring.dashboard.charts import ChartData, ChartSpec, figure_of
from server.scoring.dashboard.pages import PAGES
from server.scoring.dashboard.queries import OverviewFigures

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES = Jinja2Templates(directory=str(PACKAGE_DIR / "templates"))
ASSETS_DIR = PACKAGE_DIR / "assets"

SECURITY_HEADERS: Final = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
"""Headers of every dashboard and login page."""


def plotly_js_path() -> Path:
    """``plotly.min.js`` inside the installed ``plotly`` wheel (served, never fetched)."""
    return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))


def page_url(slug: str) -> str:
    """Where page ``slug`` lives (the overview is ``/dashboard`` itself)."""
    return "/dashboard" if slug == "overview" else f"/dashboard/{slug}"


def drill_url(path: str, query: dict[str, str]) -> str:
    """The loan-level page ``path`` filtered by ``query``."""
    return f"{path}?{urlencode(query)}"


def render(
    request: Request, name: str, context: dict[str, Any], *, status_code: int = 200
) -> HTMLResponse:
    """Render template ``name`` with the navigation, the signed-in principal and its CSRF token."""
    session = getattr(request.state, "session", None)
    principal: Principal | None = getattr(request.state, "principal", None)
    base = {
        "pages": PAGES,
        "page_url": page_url,
        "principal": principal,
        "csrf_token": session.csrf_token if session is not None else None,
        "current": None,
    }
    response = TEMPLATES.TemplateResponse(
        request, name, {**base, **context}, status_code=status_code
    )
    response.headers.update(SECURITY_HEADERS)
    return response


def chart_view(spec: ChartSpec, data: ChartData) -> dict[str, Any]:
    """What the page template needs of one chart: spec, rows, figure, drill-down links."""
    drill_urls = (
        [drill_url(spec.drill_path, spec.drill(r)) for r in data.records()] if spec.drill else []
    )
    return {"spec": spec, "data": data, "figure": figure_of(spec, data), "drill_urls": drill_urls}


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def figure_cards(figures: OverviewFigures) -> list[dict[str, str]]:
    """The overview's headline numbers as (key, text, label) cards."""
    return [
        {"key": "decisions", "text": str(figures.decisions), "label": "decisions recorded"},
        {
            "key": "approval_rate",
            "text": _percent(figures.approval_rate),
            "label": f"approval rate ({figures.approved} of {figures.application_decisions} "
            "applications)",
        },
        {"key": "review_queue", "text": str(figures.review_queue), "label": "in the review queue"},
        {
            "key": "override_rate",
            "text": _percent(figures.override_rate),
            "label": f"human override rate ({figures.overridden} of "
            f"{figures.resolved_with_verdict} resolved verdicts)",
        },
    ]


def refused_page(
    request: Request, status_code: int, detail: str, headers: Mapping[str, str] | None
) -> HTMLResponse:
    """The 401 or 403 of a dashboard page as HTML (a link to sign in), same status and headers."""
    heading = "Sign in to see this page" if status_code == 401 else "Not for this key's role"
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = render(
        request,
        "refused.html",
        {"title": heading, "heading": heading, "detail": detail, "next_url": target},
        status_code=status_code,
    )
    response.headers.update(headers or {})
    return response
