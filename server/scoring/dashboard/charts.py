"""Chart and page specs of the dashboard: typed query results, Plotly figures and CSV from them.

A chart is a :class:`ChartSpec`: a query function ``(connection) -> ChartData`` plus how to draw
the result. The figure, the table under it and the CSV download are all made from the same
:class:`ChartData`, so what a person reads, what they download and what the database answered
are the same numbers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.engine import Connection

from fedrisk.release.reference import ScoreReference

Cell = str | int | float | None
ChartKind = Literal["bar", "stacked_bar", "line", "table"]
"""``table`` draws no figure: the rows are the chart (alerts, intervals)."""


@dataclass(frozen=True)
class ChartData:
    """A query's answer: column names and rows, in display order."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]

    def column(self, name: str) -> list[Cell]:
        """Values of column ``name``, row by row."""
        index = self.columns.index(name)
        return [row[index] for row in self.rows]

    def records(self) -> list[dict[str, Cell]]:
        """Rows as column -> value mappings."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def to_csv(self) -> str:
        """The rows as CSV text with a header line (floats written in full precision)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(["" if cell is None else cell for cell in row] for row in self.rows)
        return out.getvalue()


@dataclass(frozen=True)
class ChartInputs:
    """What a chart's query may need besides the database.

    Attributes
    ----------
    reference
        The A-card champion's reference bands (PSI, bad rate by band); None without a release
        that carries them.
    params
        The page's own choices from its query string (e.g. the direction page's two dimensions).
    """

    reference: ScoreReference | None = None
    params: Mapping[str, str] = field(default_factory=dict)


QueryFn = Callable[[Connection, ChartInputs], ChartData]
"""A chart's data source: runs its SQL on a read connection."""


def without_inputs(fn: Callable[[Connection], ChartData]) -> QueryFn:
    """A query needing only the database, as a :data:`QueryFn`."""

    def query(connection: Connection, _inputs: ChartInputs) -> ChartData:
        return fn(connection)

    query.__doc__ = fn.__doc__
    return query


DrillFn = Callable[[Mapping[str, Cell]], dict[str, str]]
"""Query parameters of the loan-level page behind one row of a chart."""


@dataclass(frozen=True)
class ChartSpec:
    """One chart of a page.

    Attributes
    ----------
    chart_id
        Unique across the dashboard; names the CSV endpoint ``/dashboard/data/<chart_id>.csv``.
    title
        Heading shown above the chart.
    query
        Where the numbers come from.
    kind
        ``bar``, ``stacked_bar``, ``line`` or ``table``.
    x, y
        Columns on the axes.
    series
        Columns whose values together name a trace (one trace per distinct combination).
    drill
        For charts whose rows lead to loans: the loan-level page's query parameters of a row.
    drill_path
        The loan-level page (a route requiring ``risk_officer``).
    note
        One sentence under the title saying how the figure is defined.
    """

    chart_id: str
    title: str
    query: QueryFn
    kind: ChartKind
    x: str
    y: str
    series: tuple[str, ...] = ()
    drill: DrillFn | None = None
    drill_path: str = "/dashboard/decisions"
    note: str = ""


@dataclass(frozen=True)
class PageSpec:
    """One dashboard page: navigation entry, charts, and whether it needs recorded outcomes."""

    slug: str
    title: str
    charts: tuple[ChartSpec, ...] = ()
    needs_outcomes: bool = False
    intro: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


def figure_of(spec: ChartSpec, data: ChartData) -> dict[str, Any]:
    """A Plotly figure (``data`` + ``layout``, plain JSON) drawing ``data`` as ``spec`` says
    (empty for a ``table``)."""
    if spec.kind == "table":
        return {}
    traces: dict[str, dict[str, list[Cell]]] = {}
    x_index, y_index = data.columns.index(spec.x), data.columns.index(spec.y)
    series_index = [data.columns.index(name) for name in spec.series]
    for row in data.rows:
        name = " / ".join(str(row[i]) for i in series_index) or spec.y
        trace = traces.setdefault(name, {"x": [], "y": []})
        trace["x"].append(row[x_index])
        trace["y"].append(row[y_index])
    plotly_type = "scatter" if spec.kind == "line" else "bar"
    figure_data = [
        {
            "type": plotly_type,
            "name": name,
            "x": trace["x"],
            "y": trace["y"],
            **({"mode": "lines+markers"} if spec.kind == "line" else {}),
        }
        for name, trace in traces.items()
    ]
    # categories in the rows' order: otherwise Plotly orders them trace by trace, which puts
    # a later trace's own days (or segments) after every category of the first trace
    categories = list(dict.fromkeys(row[x_index] for row in data.rows))
    layout: dict[str, Any] = {
        "margin": {"l": 60, "r": 20, "t": 10, "b": 60},
        "height": 340,
        "xaxis": {
            "title": {"text": spec.x},
            "type": "category",
            "categoryorder": "array",
            "categoryarray": categories,
        },
        "yaxis": {"title": {"text": spec.y}},
        "legend": {"orientation": "h", "y": -0.3},
    }
    if spec.kind == "stacked_bar":
        layout["barmode"] = "stack"
    return {"data": figure_data, "layout": layout}
