"""The dashboard: server-rendered pages, their CSV downloads, the loan-level drill-down, assets.

Aggregates need ``viewer``; the decisions behind a chart (loan level) need ``risk_officer`` and
are written to the audit trail with the key id like every loan-level read (``access.py``).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from server.scoring import store
from server.scoring.access import requires
from server.scoring.api.models import model_out
from server.scoring.api.monitoring import Filters, Month, reference_of
from server.scoring.api.routing import ERRORS, new_router
from server.scoring.apikeys import Role
from server.scoring.dashboard import queries
from server.scoring.dashboard.charts import ChartData, ChartInputs, PageSpec
from server.scoring.dashboard.indicators import DEFAULT_CROSS, crossed_dimensions
from server.scoring.dashboard.pages import CHARTS, PAGES_BY_SLUG
from server.scoring.dashboard.views import (
    ASSETS_DIR,
    chart_view,
    figure_cards,
    plotly_js_path,
    render,
)
from server.scoring.deps import ServiceDep
from server.scoring.errors import InvalidInputError, NotFoundError
from server.scoring.monitoring import queries as monitoring
from server.scoring.monitoring.models import DIMENSIONS
from server.scoring.settings import STAGES, Stage

router = new_router()

ASSET_CACHE = "private, max-age=3600"

EMPTY_OUTCOMES = {
    "title": "No outcomes recorded yet",
    "text": "This page is computed from loan outcomes (monthly performance of decided loans). "
    "None have been recorded in this service's database, so there is nothing to show.",
}
NO_CHARTS = {
    "title": "No indicator on this page yet",
    "text": "Outcomes are recorded, but this build registers no chart for this page.",
}

CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"description": "The rows as CSV with a header line", "content": {"text/csv": {}}},
    **{code: ERRORS[code] for code in (401, 403, 404, 422)},
}

CROSS_PARAMS = ("dim_a", "dim_b")
"""Query parameters of the direction page: the two dimensions it crosses."""

Outcome = Annotated[str | None, Query(max_length=32, pattern=r"^[a-z_]+$")]
Day = Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}-\d{2}$")]


def _csv(data: ChartData, name: str) -> Response:
    return Response(
        data.to_csv(),
        media_type="text/csv; charset=utf-8",
        headers={
            "content-disposition": f'attachment; filename="{name}.csv"',
            "cache-control": "no-store",
        },
    )


def chart_inputs(request: Request, ctx: Any) -> ChartInputs:
    """The reference bands of the champion and the page's own choices (checked here, so a bad
    choice is a 422 before any query runs)."""
    params = {k: v for k, v in request.query_params.items() if k in CROSS_PARAMS}
    inputs = ChartInputs(reference=reference_of(ctx), params=params)
    try:
        crossed_dimensions(inputs)
    except ValueError as error:
        errors: list[dict[str, object]] = [
            {"type": "value_error", "loc": ["query", *CROSS_PARAMS], "msg": str(error)}
        ]
        raise InvalidInputError(errors) from error
    return inputs


async def _page(request: Request, ctx: Any, page: PageSpec, extra: dict[str, Any]) -> HTMLResponse:
    inputs = chart_inputs(request, ctx)

    def load(connection: Any) -> dict[str, Any]:
        recorded = not page.needs_outcomes or queries.outcomes_recorded(connection)
        charts = [(s, s.query(connection, inputs)) for s in page.charts] if recorded else []
        figures = queries.overview_figures(connection) if page.slug == "overview" else None
        return {"recorded": recorded, "charts": charts, "figures": figures}

    loaded = await ctx.read(load)
    empty = None
    if not loaded["recorded"]:
        empty = EMPTY_OUTCOMES
    elif not page.charts:
        empty = NO_CHARTS
    context = {
        "title": page.title,
        "intro": page.intro,
        "current": page.slug,
        "charts": [chart_view(spec, data) for spec, data in loaded["charts"]],
        "figures": figure_cards(loaded["figures"]) if loaded["figures"] else None,
        "empty_state": empty,
        "csv_query": f"?{urlencode(inputs.params)}" if inputs.params else "",
        **extra,
    }
    template = "models.html" if page.slug == "models" else "page.html"
    return render(request, template, context)


@router.get(
    "/dashboard",
    response_class=HTMLResponse,
    tags=["dashboard"],
    openapi_extra=requires(Role.VIEWER),
)
async def overview(request: Request, ctx: ServiceDep) -> HTMLResponse:
    """The overview page: decision mix, approval rate, review queue, human override rate."""
    return await _page(request, ctx, PAGES_BY_SLUG["overview"], {})


@router.get(
    "/dashboard/assets/{asset_name}",
    include_in_schema=False,  # static files, not API
    openapi_extra=requires(Role.VIEWER),
)
async def asset(asset_name: str) -> FileResponse:
    """Plotly's JavaScript from the installed ``plotly`` wheel, or the script that draws the
    embedded figures."""
    files = {"plotly.min.js": plotly_js_path(), "dashboard.js": ASSETS_DIR / "dashboard.js"}
    path = files.get(asset_name)
    if path is None:
        raise NotFoundError(f"asset must be one of {sorted(files)}; got {asset_name!r}")
    return FileResponse(path, media_type="text/javascript", headers={"cache-control": ASSET_CACHE})


@router.get(
    "/dashboard/data/{chart_id}.csv",
    tags=["dashboard"],
    response_class=Response,
    responses=CSV_RESPONSE,
    openapi_extra=requires(Role.VIEWER),
)
async def chart_csv(chart_id: str, request: Request, ctx: ServiceDep) -> Response:
    """The numbers of one chart as CSV: the same query the page draws (the direction charts
    take the page's ``dim_a`` and ``dim_b``)."""
    spec = CHARTS.get(chart_id)
    if spec is None:
        raise NotFoundError(f"chart must be one of {sorted(CHARTS)}; got {chart_id!r}")
    return _csv(await ctx.read(spec.query, chart_inputs(request, ctx)), chart_id)


def decision_filter(
    stage: Stage | None = None, outcome: Outcome = None, day: Day = None
) -> queries.DecisionFilter:
    """The loan-level pages' filter, from their query parameters."""
    return queries.DecisionFilter(stage=stage, outcome=outcome, day=day)


FilterDep = Annotated[queries.DecisionFilter, Depends(decision_filter)]


LOAN_LEVEL_PAGES = {"decisions": ("Decisions", "overview"), "loans": ("Loans", "direction")}
"""Loan-level pages: title and the navigation entry they belong to."""


def _loan_level(
    request: Request, kind: str, filters: dict[str, str], total: int, data: ChartData
) -> HTMLResponse:
    """A loan-level page (``decisions`` or ``loans``): its filters, the count, the rows, and
    the CSV link with the same query."""
    title, current = LOAN_LEVEL_PAGES[kind]
    query = request.url.query
    context = {
        "title": title,
        "kind": kind,
        "current": current,
        "filters": filters,
        "total": total,
        "shown": len(data.rows),
        "data": data,
        "csv_url": f"/dashboard/{kind}.csv" + (f"?{query}" if query else ""),
    }
    return render(request, "decisions.html", context)


@router.get(
    "/dashboard/decisions",
    response_class=HTMLResponse,
    tags=["dashboard"],
    openapi_extra=requires(Role.RISK_OFFICER),
)
async def decisions_page(request: Request, ctx: ServiceDep, chosen: FilterDep) -> HTMLResponse:
    """Loan level: the decisions behind one cell of the decision mix (audited)."""

    def load(connection: Any) -> tuple[int, ChartData]:
        return (
            queries.count_matching_decisions(connection, chosen),
            queries.matching_decisions(connection, chosen),
        )

    total, data = await ctx.read(load)
    filters = {k: v for k, v in vars(chosen).items() if v}
    return _loan_level(request, "decisions", filters, total, data)


@router.get(
    "/dashboard/decisions.csv",
    tags=["dashboard"],
    response_class=Response,
    responses=CSV_RESPONSE,
    openapi_extra=requires(Role.RISK_OFFICER),
)
async def decisions_csv(ctx: ServiceDep, chosen: FilterDep) -> Response:
    """Loan level: the listed decisions as CSV (audited)."""
    return _csv(await ctx.read(queries.matching_decisions, chosen), "decisions")


LOAN_COLUMNS = ("decision_id", "originated", "principal", *DIMENSIONS, "purpose_text")
LOAN_COLUMNS += ("month_on_book", "dpd", "balance", "score", "probability")


def _loans(
    connection: Any, as_of: str | None, filters: dict[str, str]
) -> tuple[str | None, int, ChartData]:
    """The month shown, the segment's loan count and its most overdue loans."""
    month = as_of or monitoring.latest_month(connection)
    if month is None:
        return None, 0, ChartData(LOAN_COLUMNS, ())
    found = monitoring.drill_down(
        connection, as_of=month, filters=filters, limit=queries.DRILL_LIMIT
    )
    rows = tuple(tuple(getattr(loan, c) for c in LOAN_COLUMNS) for loan in found.loans)
    return month, found.total, ChartData(LOAN_COLUMNS, rows)


@router.get(
    "/dashboard/loans",
    response_class=HTMLResponse,
    tags=["dashboard"],
    openapi_extra=requires(Role.RISK_OFFICER),
)
async def loans_page(
    request: Request, ctx: ServiceDep, filters: Filters, as_of: Month = None
) -> HTMLResponse:
    """Loan level: the loans of one direction-analysis segment at ``as_of`` (audited)."""
    month, total, data = await ctx.read(_loans, as_of, filters)
    return _loan_level(request, "loans", {**filters, "as_of": month or "–"}, total, data)


@router.get(
    "/dashboard/loans.csv",
    tags=["dashboard"],
    response_class=Response,
    responses=CSV_RESPONSE,
    openapi_extra=requires(Role.RISK_OFFICER),
)
async def loans_csv(ctx: ServiceDep, filters: Filters, as_of: Month = None) -> Response:
    """Loan level: the listed loans of a segment as CSV (audited)."""
    _, _, data = await ctx.read(_loans, as_of, filters)
    return _csv(data, "loans")


@router.get(
    "/dashboard/{page}",
    response_class=HTMLResponse,
    tags=["dashboard"],
    openapi_extra=requires(Role.VIEWER),
)
async def page(page: str, request: Request, ctx: ServiceDep) -> HTMLResponse:
    """Any other page of the navigation; the monitoring pages wait for recorded outcomes."""
    spec = PAGES_BY_SLUG.get(page)
    if spec is None or page == "overview":
        raise NotFoundError(f"page must be one of {sorted(PAGES_BY_SLUG)}; got {page!r}")
    extra: dict[str, Any] = {}
    if page == "direction":
        chosen = chart_inputs(request, ctx).params
        extra = {
            "cross": {
                "dimensions": DIMENSIONS,
                "dim_a": chosen.get("dim_a", DEFAULT_CROSS[0]),
                "dim_b": chosen.get("dim_b", DEFAULT_CROSS[1]),
            }
        }
    if page == "models":
        extra = {
            "assignments": [ctx.registry.assignments[s] for s in STAGES],
            "models": [
                model_out(ctx, m)
                for m in sorted(ctx.registry.models.values(), key=lambda m: m.model_id)
            ],
            "events": await ctx.read(store.list_model_events, limit=50),
        }
    return await _page(request, ctx, spec, extra)
