"""The risk manager's report of a simulation study: one self-contained HTML page, PNG plots, JSON.

:func:`write_report` turns a study's results (see :mod:`simulations.studies`) into
``DIR/index.html`` (every plot embedded as base64 PNG, so the page can be mailed alone),
``DIR/plots/*.png`` (the same plots as files) and ``DIR/results.json``: every number shown
in the report (the summary table, the per-party gains, the cold-start table, the AUC of each
curve) plus the study's raw cells. Plots per task and model kind, one panel per partition:

- ``roc_<task>_<model>.png``: ROC curves of the federated, centralized and local-only models;
- ``ks_<task>_<model>.png``: KS charts (cumulative share of bads and goods, riskiest first);
- ``rounds_<task>_<model>.png``: AUC per round, federated vs each party's local-only model;
- ``scores_<task>_<model>.png``: scorecard points of goods vs bads under the federated model;
- ``gain_<task>_<model>.png``: each party's AUC gain from joining, on its own test rows;

and ``gap_overview.png``: federated minus centralized AUC for every task, partition and model.
Given a vertical study's results (:mod:`simulations.studies.vertical`) the page, the JSON and
``summary.md`` also get the vertical section: one row per vertical dataset, the encrypted
vertical LR against the centralized LR on the joined features and the guest's own LR.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from rich.table import Table

from fedrisk.errors import ConfigError
from fedrisk.files import write_atomic
from simulations.scenarios import get_scenario
from simulations.studies import (
    PARTITION_KINDS,
    PARTITION_LABELS,
    SMALL_LENDER_SHARE,
    TARGET_GAP,
    CellResult,
    StudyConfig,
    StudyResults,
    SummaryRow,
    mean_sd,
    summarize,
)
from simulations.studies.vertical import (
    VerticalStudyResults,
    VerticalSummaryRow,
    signed,
    summarize_vertical,
)

REPORT_FORMAT = "fedrisk-report"
REPORT_VERSION = 1
PLOT_KINDS = ("roc", "ks", "rounds", "scores", "gain")
_DPI = 110
_FED = "#1f5fa8"
_CEN = "#d9822b"
_PLAIN = "#6a3d9a"
_BAD = "#c0392b"
_GOOD = "#2e8b57"
_LOCAL = "#8c8c8c"


# ---------------------------------------------------------------- number formats (shared)


def fmt(value: float | None, sd: float | None = None, *, signed: bool = False) -> str:
    """``0.7712 ± 0.0031``: the one number format of the table, the HTML and the JSON check."""
    if value is None:
        return "n/a"
    text = f"{value:+.4f}" if signed else f"{value:.4f}"
    return f"{text} ± {sd:.4f}" if sd is not None else text


def task_label(task: str) -> str:
    """Human title of a task (scenario)."""
    try:
        return get_scenario(task).title
    except ConfigError:  # a task from an older scenario list still gets a label
        return task


def partition_label(row_or_cell: SummaryRow | CellResult) -> str:
    """``label skew (dirichlet:0.3)``-style label of a partition."""
    kind = PARTITION_LABELS[row_or_cell.partition_kind]
    return (
        kind
        if row_or_cell.partition_kind in ("iid", "quantity")
        else (f"{kind} ({row_or_cell.partition})")
    )


TABLE_COLUMNS = (
    "task",
    "partition",
    "model",
    "seeds",
    "encrypted fed. AUC",
    "encrypted fed. KS",
    "plaintext fed. AUC",
    "centralized AUC",
    "centralized KS",
    "gap (fed − central)",
    "local-only AUC",
    "local-only KS",
    "small-lender gain",
    "status",
)


def table_cells(row: SummaryRow) -> list[str]:
    """The printed and HTML summary-table cells of one row (same strings everywhere)."""
    return [
        row.task,
        partition_label(row),
        row.model,
        str(row.n_seeds),
        fmt(row.encrypted_auc_mean, row.encrypted_auc_sd),
        fmt(row.encrypted_ks_mean, row.encrypted_ks_sd),
        fmt(row.plaintext_auc_mean),
        fmt(row.centralized_auc_mean, row.centralized_auc_sd),
        fmt(row.centralized_ks_mean, row.centralized_ks_sd),
        fmt(row.gap_mean, row.gap_sd, signed=True),
        fmt(row.local_auc_mean),
        fmt(row.local_ks_mean),
        fmt(row.cold_start_gain_mean, row.cold_start_gain_sd, signed=True),
        row.status,
    ]


def summary_table(rows: Sequence[SummaryRow], *, title: str = "Study summary") -> Table:
    """The summary table the CLI prints (mean ± sd over seeds)."""
    table = Table(title=title)
    for column in TABLE_COLUMNS:
        table.add_column(column, no_wrap=True)
    for row in rows:
        cells = table_cells(row)
        style = {"gap": "red", "federated better": "yellow"}.get(row.status)
        table.add_row(*cells, style=style)
    return table


VERTICAL_COLUMNS = (
    "dataset",
    "parties (overlap)",
    "seeds",
    "federated AUC",
    "centralized AUC",
    "guest-only AUC",
    "fed − centralized, per seed",
    "fed − guest only, per seed",
    "s / epoch",
    "bars",
)


def vertical_table_cells(row: VerticalSummaryRow) -> list[str]:
    """The printed, HTML and Markdown cells of one vertical row (same strings everywhere)."""
    parties = ", ".join(
        f"{name} ({role})" if role == "guest" else f"{name} ({row.overlap.get(name, 1.0):.0%})"
        for name, role in row.parties.items()
    )
    bars = []
    if row.central_gap_bar is not None:
        bars.append(f"fed − central ≥ {row.central_gap_bar:+.3f}")
    if row.guest_gain_bar is not None:
        bars.append(f"fed − guest ≥ {row.guest_gain_bar:+.2f}")
    status = "" if row.passes is None else ("; all seeds pass" if row.passes else "; MISSED")
    return [
        row.dataset,
        parties,
        ", ".join(str(s) for s in row.seeds),
        fmt(row.federated_mean, row.federated_sd),
        fmt(row.centralized_mean),
        fmt(row.guest_only_mean),
        signed(row.central_gaps),
        signed(row.guest_gains),
        f"{min(row.seconds_per_epoch):.1f}–{max(row.seconds_per_epoch):.1f}",
        (", ".join(bars) or "none") + status,
    ]


def vertical_summary_table(rows: Sequence[VerticalSummaryRow]) -> Table:
    """The vertical table the CLI prints."""
    table = Table(title="Vertical LR under CKKS: mean ± sd over seeds")
    for column in VERTICAL_COLUMNS:
        table.add_column(column)
    for row in rows:
        table.add_row(*vertical_table_cells(row), style="red" if row.passes is False else None)
    return table


def vertical_markdown(rows: Sequence[VerticalSummaryRow]) -> str:
    """The vertical table as Markdown."""
    lines = [
        "| " + " | ".join(VERTICAL_COLUMNS) + " |",
        "|" + "|".join("---" for _ in VERTICAL_COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(vertical_table_cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- report document


def summary_markdown(rows: Sequence[SummaryRow]) -> str:
    """The summary table as Markdown (``summary.md``, pasted into the README)."""
    lines = [
        "| " + " | ".join(TABLE_COLUMNS) + " |",
        "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|",
    ]
    for row in rows:
        cells = table_cells(row)
        cells[0] = task_label(row.task)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote."""

    html: Path
    results: Path
    plots: dict[str, Path]
    markdown: Path


def party_gains(cells: Sequence[CellResult]) -> list[dict[str, Any]]:
    """Per party, mean ± sd over seeds of its own-test gain and local/federated AUCs."""
    by_party: dict[str, list[Any]] = {}
    for cell in cells:
        for p in cell.party_results:
            by_party.setdefault(p.party, []).append(p)
    out = []
    for party, results in by_party.items():
        gains = [p.own_gain for p in results if p.own_gain is not None]
        gain = mean_sd(gains) if gains else (None, None)
        out.append(
            {
                "party": party,
                "share_of_rows": float(np.mean([p.share_of_rows for p in results])),
                "n_test_bad": float(np.mean([p.n_test_bad for p in results])),
                "bad_rate": float(np.mean([p.bad_rate for p in results])),
                "local_auc_pooled": mean_sd([p.local_auc for p in results])[0],
                "gain_mean": gain[0],
                "gain_sd": gain[1],
                "n_seeds": len(gains),
            }
        )
    return out


def _groups(results: StudyResults) -> dict[tuple[str, str], dict[str, list[CellResult]]]:
    """(task, model) -> partition -> cells, in study order."""
    out: dict[tuple[str, str], dict[str, list[CellResult]]] = {}
    order = {kind: i for i, kind in enumerate(PARTITION_KINDS)}
    cells = sorted(
        results.cells.values(),
        key=lambda c: (
            results.config.tasks.index(c.task) if c.task in results.config.tasks else 99,
            c.model,
            order[c.partition_kind],
            c.seed,
        ),
    )
    for cell in cells:
        out.setdefault((cell.task, cell.model), {}).setdefault(cell.partition, []).append(cell)
    return out


def report_document(
    results: StudyResults, rows: Sequence[SummaryRow], plots: dict[str, str]
) -> dict[str, Any]:
    """The report's ``results.json``: every number the report shows, and the raw cells."""
    groups = _groups(results)
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "target_gap": TARGET_GAP,
        "small_lender_share": SMALL_LENDER_SHARE,
        "config": results.config.model_dump(mode="json"),
        "table_columns": list(TABLE_COLUMNS),
        "summary": [{**row.model_dump(mode="json"), "table": table_cells(row)} for row in rows],
        "party_gains": [
            {"task": task, "model": model, "partition": partition, "parties": party_gains(cells)}
            for (task, model), by_partition in groups.items()
            for partition, cells in by_partition.items()
        ],
        "cold_start": [
            {
                "task": row.task,
                "partition": row.partition,
                "model": row.model,
                "party": row.cold_start_party,
                "share_of_rows": row.cold_start_share,
                "n_test_bad": row.cold_start_n_test_bad,
                "small_lender": row.small_lender,
                "gain_mean": row.cold_start_gain_mean,
                "gain_sd": row.cold_start_gain_sd,
                "n_seeds": row.cold_start_n,
            }
            for row in rows
        ],
        "plots": plots,
        "failures": results.failures,
        "study": results.model_dump(mode="json"),
    }


# ---------------------------------------------------------------- plots


def _panels(n: int) -> tuple[Figure, list[Axes]]:
    cols = 1 if n == 1 else 2
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(6.2 * cols, 4.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def _first_seed(cells: Sequence[CellResult]) -> CellResult:
    return min(cells, key=lambda c: c.seed)


def _panel_title(cells: Sequence[CellResult], suffix: str = "") -> str:
    cell = cells[0]
    return f"{partition_label(cell)}{suffix}"


def plot_roc(by_partition: dict[str, list[CellResult]], title: str) -> bytes:
    """ROC curves per partition (first seed): federated, centralized, each local-only."""
    fig, axes = _panels(len(by_partition))
    for ax, cells in zip(axes, by_partition.values(), strict=True):
        cell = _first_seed(cells)
        for name, curve in cell.curves.items():
            if name.startswith("local:"):
                party = name.split(":", 1)[1]
                result = next(p for p in cell.party_results if p.party == party)
                ax.plot(
                    curve.roc.fpr,
                    curve.roc.tpr,
                    color=_LOCAL,
                    lw=0.9,
                    alpha=0.7,
                    label=f"local only {party} (AUC {result.local_auc:.3f})",
                )
        cen = cell.curves["centralized"].roc
        fed = cell.curves["federated"].roc
        ax.plot(
            cen.fpr,
            cen.tpr,
            color=_CEN,
            lw=2,
            ls="--",
            label=f"centralized pooled (AUC {cell.centralized.auc:.3f})",
        )
        ax.plot(
            fed.fpr,
            fed.tpr,
            color=_FED,
            lw=2.2,
            label=f"federated, encrypted (AUC {cell.encrypted.auc:.3f})",
        )
        ax.plot([0, 1], [0, 1], color="black", lw=0.6, ls=":")
        ax.set_title(_panel_title(cells, f", seed {cell.seed}"), fontsize=10)
        ax.set_xlabel("false-positive rate (share of goods flagged)")
        ax.set_ylabel("true-positive rate (share of bads caught)")
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
    fig.suptitle(f"ROC curves: {title}")
    return _png(fig)


def plot_ks(by_partition: dict[str, list[CellResult]], title: str) -> bytes:
    """KS charts of the federated model per partition, centralized KS curves dashed."""
    fig, axes = _panels(len(by_partition))
    for ax, cells in zip(axes, by_partition.values(), strict=True):
        cell = _first_seed(cells)
        fed, cen = cell.curves["federated"].ks, cell.curves["centralized"].ks
        assert fed is not None and cen is not None
        pop = np.asarray(fed.population) * 100
        ax.plot(pop, np.asarray(fed.cum_bad) * 100, color=_BAD, lw=2, label="bads, federated")
        ax.plot(pop, np.asarray(fed.cum_good) * 100, color=_GOOD, lw=2, label="goods, federated")
        cpop = np.asarray(cen.population) * 100
        ax.plot(
            cpop,
            np.asarray(cen.cum_bad) * 100,
            color=_BAD,
            lw=1,
            ls="--",
            label="bads, centralized",
        )
        ax.plot(
            cpop,
            np.asarray(cen.cum_good) * 100,
            color=_GOOD,
            lw=1,
            ls="--",
            label="goods, centralized",
        )
        at = int(np.argmin(np.abs(np.asarray(fed.population) - fed.at_population)))
        ax.vlines(pop[at], fed.cum_good[at] * 100, fed.cum_bad[at] * 100, color="black", lw=1.5)
        ax.annotate(
            f"KS {fed.ks:.3f}\n(centralized {cen.ks:.3f})",
            (pop[at], (fed.cum_good[at] + fed.cum_bad[at]) * 50),
            xytext=(8, 0),
            textcoords="offset points",
            fontsize=8,
            va="center",
        )
        ax.set_title(_panel_title(cells, f", seed {cell.seed}"), fontsize=10)
        ax.set_xlabel("accounts declined / worked, riskiest first (%)")
        ax.set_ylabel("cumulative share (%)")
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
    fig.suptitle(f"KS charts: {title}")
    return _png(fig)


def plot_rounds(by_partition: dict[str, list[CellResult]], title: str) -> bytes:
    """AUC per round: federated (mean ± sd over seeds) vs each party's local-only model."""
    fig, axes = _panels(len(by_partition))
    for ax, cells in zip(axes, by_partition.values(), strict=True):
        rounds = np.arange(1, len(cells[0].encrypted.history) + 1)
        fed = np.array([[h.auc for h in c.encrypted.history] for c in cells])
        mean = fed.mean(axis=0)
        ax.plot(
            rounds,
            mean,
            color=_FED,
            lw=2.2,
            marker="o",
            ms=3,
            label=f"federated, encrypted (mean of {len(cells)} seeds)",
        )
        if len(cells) > 1:
            sd = fed.std(axis=0, ddof=1)
            ax.fill_between(rounds, mean - sd, mean + sd, color=_FED, alpha=0.15)
        plain = [c for c in cells if c.plaintext is not None]
        if plain and plain[0].plaintext is not None:
            ax.plot(
                rounds,
                [h.auc for h in plain[0].plaintext.history],
                color=_PLAIN,
                lw=1.2,
                ls=":",
                marker="x",
                ms=5,
                label=f"federated, plaintext (seed {plain[0].seed})",
            )
        parties = [p.party for p in cells[0].party_results]
        for index, party in enumerate(parties):
            curves = np.array([c.party_results[index].local_round_auc for c in cells])
            share = cells[0].party_results[index].share_of_rows
            ax.plot(
                rounds,
                curves.mean(axis=0),
                color=_LOCAL,
                lw=1,
                alpha=0.4 + 0.5 * index / max(len(parties), 1),
                label=f"local only {party} ({share:.0%} of rows)",
            )
        ax.axhline(
            float(np.mean([c.centralized.auc for c in cells])),
            color=_CEN,
            ls="--",
            lw=1.5,
            label="centralized pooled (early-stopped)",
        )
        ax.set_title(_panel_title(cells), fontsize=10)
        ax.set_xlabel("federated round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("AUC on the pooled test data")
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
    fig.suptitle(f"AUC per round, federated vs local: {title}")
    return _png(fig)


def plot_scores(by_partition: dict[str, list[CellResult]], title: str) -> bytes:
    """Distributions of scorecard points of goods and bads under the federated model."""
    fig, axes = _panels(len(by_partition))
    for ax, cells in zip(axes, by_partition.values(), strict=True):
        cell = _first_seed(cells)
        hist = cell.curves["federated"].scores
        assert hist is not None
        edges = np.asarray(hist.edges)
        goods = np.asarray(hist.goods, dtype=float)
        bads = np.asarray(hist.bads, dtype=float)
        width = np.diff(edges)
        ax.bar(
            edges[:-1],
            goods / max(goods.sum(), 1) * 100,
            width=width,
            align="edge",
            color=_GOOD,
            alpha=0.55,
            label=f"goods ({int(goods.sum())})",
        )
        ax.bar(
            edges[:-1],
            bads / max(bads.sum(), 1) * 100,
            width=width,
            align="edge",
            color=_BAD,
            alpha=0.55,
            label=f"bads ({int(bads.sum())})",
        )
        ax.set_title(_panel_title(cells, f", seed {cell.seed}"), fontsize=10)
        ax.set_xlabel("score points (600 = 50:1 good:bad odds, +20 doubles the odds)")
        ax.set_ylabel("share of the group (%)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Score distributions, federated model: {title}")
    return _png(fig)


def plot_gain(by_partition: dict[str, list[CellResult]], title: str) -> bytes:
    """Per-party AUC gain from joining, on each party's own test rows (mean ± sd)."""
    fig, axes = _panels(len(by_partition))
    for ax, cells in zip(axes, by_partition.values(), strict=True):
        gains = party_gains(cells)
        names = [f"{g['party']}\n{g['share_of_rows']:.0%} rows" for g in gains]
        values = [g["gain_mean"] if g["gain_mean"] is not None else 0.0 for g in gains]
        errors = [g["gain_sd"] or 0.0 for g in gains]
        smallest = int(np.argmin([g["share_of_rows"] for g in gains]))
        colors = [_FED if v >= 0 else _BAD for v in values]
        bars = ax.bar(names, values, yerr=errors, color=colors, alpha=0.85, capsize=3)
        bars[smallest].set_edgecolor("black")
        bars[smallest].set_linewidth(2)
        for bar, value, g in zip(bars, values, gains, strict=True):
            text = f"{value:+.3f}" if g["gain_mean"] is not None else "n/a"
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, value),
                ha="center",
                va="bottom" if value >= 0 else "top",
                fontsize=8,
            )
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(_panel_title(cells, " (outlined: smallest party)"), fontsize=10)
        ax.set_ylabel("AUC gain on own test rows\n(federated − local only)")
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"What each party gains by joining: {title}")
    return _png(fig)


def plot_gap_overview(rows: Sequence[SummaryRow]) -> bytes:
    """Federated minus centralized AUC for every row, with the ±0.01 target band."""
    fig = Figure(figsize=(9, 0.42 * len(rows) + 1.6), layout="constrained")
    ax = fig.subplots()
    labels = [f"{r.task} | {r.partition} | {r.model}" for r in rows]
    y = np.arange(len(rows))[::-1]
    ax.axvspan(-TARGET_GAP, TARGET_GAP, color=_GOOD, alpha=0.12, label="within ±0.01")
    ax.axvline(0, color="black", lw=0.8)
    for yi, row in zip(y, rows, strict=True):
        color = _BAD if row.status == "gap" else _FED
        ax.errorbar(row.gap_mean, yi, xerr=row.gap_sd or 0.0, fmt="o", color=color, capsize=3)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("AUC: federated encrypted − centralized pooled (mean ± sd over seeds)")
    ax.set_title("Is federated as good as pooling the data?")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


_PLOTTERS = {
    "roc": plot_roc,
    "ks": plot_ks,
    "rounds": plot_rounds,
    "scores": plot_scores,
    "gain": plot_gain,
}


def plot_name(kind: str, task: str, model: str) -> str:
    """File name of one plot."""
    return f"{kind}_{task}_{model}.png"


# ---------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1250px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:3px solid #1f5fa8;padding-bottom:.3em}
h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.85em;margin:1em 0}
th,td{border:1px solid #ccc;padding:.3em .55em;text-align:right;white-space:nowrap}
th{background:#f0f4fa}td.l,th.l{text-align:left}
tr.gap td{background:#fdecea}tr.better td{background:#fff8e1}
.note{font-size:.85em;color:#444;max-width:1100px}
.box{background:#f6f8fb;border-left:4px solid #1f5fa8;padding:.6em 1em;margin:1em 0}
.warn{background:#fff4e5;border-left:4px solid #d9822b;padding:.6em 1em;margin:1em 0}
figure{margin:1.2em 0}figcaption{font-size:.85em;color:#444;max-width:1100px}
img{max-width:100%;border:1px solid #ddd}
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _img(name: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><a href="plots/{_e(name)}"><img alt="{_e(caption)}" '
        f'src="data:image/png;base64,{data}"></a><figcaption>{_e(caption)} '
        f"(file: <code>plots/{_e(name)}</code>)</figcaption></figure>"
    )


def _summary_html(rows: Sequence[SummaryRow]) -> str:
    head = "".join(
        f'<th class="{"l" if i < 3 else ""}">{_e(c)}</th>' for i, c in enumerate(TABLE_COLUMNS)
    )
    body = []
    for row in rows:
        cls = {"gap": "gap", "federated better": "better"}.get(row.status, "")
        cells = "".join(
            f'<td class="{"l" if i < 3 else ""}">{_e(c)}</td>'
            for i, c in enumerate(table_cells(row))
        )
        body.append(f'<tr class="{cls}">{cells}</tr>')
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _detail_html(rows: Sequence[SummaryRow]) -> str:
    head = (
        "<tr><th class='l'>partition</th><th class='l'>model</th><th>encrypted KS</th>"
        "<th>centralized KS</th><th>best local-only AUC</th><th>test bads</th>"
        "<th>enc. vs plaintext |ΔAUC|</th><th>s / round</th><th>MB up / party / round</th></tr>"
    )
    body = "".join(
        f"<tr><td class='l'>{_e(r.partition)}</td><td class='l'>{_e(r.model)}</td>"
        f"<td>{fmt(r.encrypted_ks_mean, r.encrypted_ks_sd)}</td>"
        f"<td>{fmt(r.centralized_ks_mean, r.centralized_ks_sd)}</td>"
        f"<td>{fmt(r.best_local_auc_mean)}</td><td>{r.n_test_bad:.0f}</td>"
        f"<td>{fmt(r.encrypted_vs_plaintext_max_abs)}</td><td>{r.seconds_per_round:.2f}</td>"
        f"<td>{r.bytes_up_per_party_round / 1e6:.2f}</td></tr>"
        for r in rows
    )
    return f"<table>{head}{body}</table>"


def _cold_start_html(rows: Sequence[SummaryRow]) -> str:
    head = (
        "<tr><th class='l'>partition</th><th class='l'>model</th><th class='l'>smallest party</th>"
        "<th>share of rows</th><th>bads in its test rows</th>"
        "<th>AUC gain on own test rows</th><th>seeds</th></tr>"
    )
    body = "".join(
        f"<tr><td class='l'>{_e(r.partition)}</td><td class='l'>{_e(r.model)}</td>"
        f"<td class='l'>{_e(r.cold_start_party)}{' (small lender)' if r.small_lender else ''}"
        f"</td><td>{r.cold_start_share:.1%}</td><td>{r.cold_start_n_test_bad:.0f}</td>"
        f"<td>{fmt(r.cold_start_gain_mean, r.cold_start_gain_sd, signed=True)}</td>"
        f"<td>{r.cold_start_n}</td></tr>"
        for r in rows
    )
    return f"<table>{head}{body}</table>"


_CAPTIONS = {
    "roc": (
        "ROC curves on the pooled test data. The higher and further left a curve, the more bads "
        "a model catches for a given share of good customers wrongly flagged. Grey: each "
        "party alone."
    ),
    "ks": (
        "KS charts of the federated model: sort accounts from riskiest to safest; the red line "
        "is the share of all bads among the accounts so far, the green line the share of all "
        "goods. KS is the widest gap between them (the vertical bar). Dashed: centralized."
    ),
    "rounds": (
        "AUC after every federated round (blue, band = ±1 sd over seeds) against each party "
        "training alone for the same number of epochs (grey) and the centralized model (orange)."
    ),
    "scores": (
        "Score distributions of goods (green) and bads (red) under the federated model. The "
        "less they overlap, the better the model separates good from bad accounts. The "
        "outermost bars also hold the few accounts beyond the plotted range."
    ),
    "gain": (
        "How much each party's AUC on its own test rows improves by using the federated model "
        "instead of a model trained on its own data alone (mean ± sd over seeds). The outlined "
        "bar is the smallest party: the cold-start case."
    ),
}


def _header_html(results: StudyResults, rows: Sequence[SummaryRow]) -> list[str]:
    """The page head, the title, what the study ran and a warning on synthetic data."""
    config = results.config
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>fedrisk: federated credit-risk study</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Federated credit-risk models: study report</h1>",
        f"<p>Generated {_e(datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC'))} from study preset "
        f"<b>{_e(config.preset)}</b>: {len(results.cells)} cells "
        f"({len(config.tasks)} task(s) × {len(config.partitions)} partition(s) × "
        f"{len(config.models)} model kind(s) × {len(config.seeds)} seed(s)).</p>",
    ]
    if any(r.synthetic for r in rows):
        parts.append(
            "<div class='warn'><b>Synthetic data.</b> Rows marked smoke-synthetic use "
            "generated applicants to test the pipeline; their numbers say nothing about real "
            "credit risk.</div>"
        )
    return parts


def _how_to_read_html(config: StudyConfig) -> str:
    """The box that explains the comparison, AUC, KS and the target to a risk manager."""
    plaintext = ", ".join(str(s) for s in config.plaintext_seeds) or "none"
    return (
        "<div class='box'><b>How to read this report.</b> Several lenders train one risk "
        "model together without pooling their data: each trains on its own rows and sends "
        "its update encrypted (CKKS homomorphic encryption); the server adds the encrypted "
        "updates without being able to read them. We compare that <b>federated, "
        "encrypted</b> model with a <b>centralized</b> model trained on all rows pooled "
        "(what one would get if data could be shared) and with each lender's "
        "<b>local-only</b> model (what it has today). <b>AUC</b> is the probability that a "
        "random bad account scores riskier than a random good one (0.5 = coin toss, 1 = "
        "perfect); <b>KS</b> is the largest gap between the cumulative shares of bads and "
        "goods. Every model is scored on the same pooled test accounts, which no model "
        "trained on. Target: the federated encrypted AUC within "
        f"{TARGET_GAP} of centralized. Numbers are mean ± sd over seeds "
        f"({', '.join(str(s) for s in config.seeds)}); the plaintext (insecure) federation "
        f"ran for seed(s) {plaintext} only, to measure what encryption costs in accuracy. "
        "Small-lender gain: the smallest party's AUC on its own test rows with the "
        "federated model minus with its own model (a small lender holds ≤ "
        f"{SMALL_LENDER_SHARE:.0%} of rows, as under quantity skew).</div>"
    )


def _summary_section_html(rows: Sequence[SummaryRow], pngs: dict[str, bytes]) -> list[str]:
    """The summary table, how many rows miss the target, and the gap overview plot."""
    parts = ["<h2>Summary</h2>", _summary_html(rows)]
    failing = [r for r in rows if r.status == "gap"]
    if failing:
        parts.append(
            f"<p><b>{len(failing)} of {len(rows)} rows miss the {TARGET_GAP} target.</b> "
            "The notes below say why and what would close the gap.</p>"
        )
    else:
        parts.append(
            f"<p>No row has the federated model more than {TARGET_GAP} AUC below centralized.</p>"
        )
    if "gap_overview.png" in pngs:
        parts.append(
            _img(
                "gap_overview.png",
                pngs["gap_overview.png"],
                "Federated encrypted minus centralized AUC per task, partition and model; the "
                "green band is the ±0.01 target.",
            )
        )
    return parts


def _notes_html(rows: Sequence[SummaryRow], failures: dict[str, str]) -> list[str]:
    """The notes on every row that misses (or beats) the target, and the failed cells."""
    parts = []
    notes = [r for r in rows if r.note]
    if notes:
        parts.append("<h2>Notes on gaps</h2><ul class='note'>")
        parts.extend(
            f"<li><b>{_e(r.task)} | {_e(r.partition)} | {_e(r.model)}</b>: {_e(r.note)}</li>"
            for r in notes
        )
        parts.append("</ul>")
    if failures:
        parts.append("<h2>Cells that failed</h2><ul class='note'>")
        parts.extend(f"<li>{_e(k)}: {_e(v)}</li>" for k, v in failures.items())
        parts.append("</ul>")
    return parts


def _task_section_html(
    task: str, task_rows: Sequence[SummaryRow], pngs: dict[str, bytes]
) -> list[str]:
    """One task: its description, detail and cold-start tables, and its plots per model."""
    parts = [f"<h2>{_e(task_label(task))}</h2>"]
    try:
        scenario = get_scenario(task)
        parts.append(
            f"<p>{_e(scenario.description)}<br><b>Stage:</b> {_e(scenario.stage)}; "
            f"<b>target:</b> {_e(scenario.target)}; <b>dataset:</b> "
            f"<code>{_e(scenario.dataset)}</code>; <b>parties:</b> {scenario.parties}.</p>"
        )
    except ConfigError:  # a task from an older scenario list: no description
        pass
    parts.append(_detail_html(task_rows))
    parts.append("<h3>Cold start: the smallest party</h3>")
    parts.append(_cold_start_html(task_rows))
    for model in dict.fromkeys(r.model for r in task_rows):
        parts.append(f"<h3>{_e(model.upper())} models</h3>")
        for kind in PLOT_KINDS:
            name = plot_name(kind, task, model)
            if name in pngs:
                parts.append(_img(name, pngs[name], _CAPTIONS[kind]))
    return parts


_METHOD_HTML = (
    "<h2>Method</h2><p class='note'>Each cell deals the task's rows to parties with the "
    "stated partition (IID; label skew: each class's rows shared out by Dirichlet(0.3) "
    "weights; feature skew: contiguous bands of one column, or groups of whole states; "
    "quantity skew: one party with 50 % of rows, the others shrinking to about 4 %), "
    "splits each party 80/20 into train and test, and pools the test splits. The "
    "federated runs are real Flower simulations of the party and server apps; the released "
    "model is signed by the releasing party. Centralized and local-only LR, MLP and "
    "scorecard models are tuned and early-stopped on a validation split of their training "
    "rows (a local-only scorecard bins its own rows); for GBDT they are the same boosted "
    "trees (same hyper-parameters, early stopping on the same held-out share) fitted on the "
    "pooled or the party's rows, and a GBDT's rounds are its trees. Label-skew MLP cells use "
    "the scenario's server optimiser (FedYogi for the C-card). Curves are from the "
    "first seed; tables average all seeds. The C-card target is derived from the Taiwan "
    "data: accounts delinquent in some month from April to August 2005, taken at their "
    "first delinquent month, bad = still delinquent the next month; features use only "
    "what was known in that month. All numbers in this page are in "
    "<code>results.json</code>.</p>"
)


_VERTICAL_HTML = (
    "<p>Vertical federation: one <b>guest</b> (a bank, the label holder) and <b>hosts</b> "
    "(a telecom operator, an e-commerce platform, a credit bureau) hold different columns of "
    "the same customers. The parties first find the customers they share by private set "
    "intersection (nobody learns another party's other customers; a host never learns which "
    "of the guest's customers it lacks), then train one logistic regression with each "
    "party's own CKKS key: labels and residuals stay with the guest, features, weights and "
    "partial scores with each host. A host's features count as missing for a customer it does "
    "not know, in training as in online scoring. <b>Centralized</b> is a logistic regression "
    "on the joined features (what pooling the columns would give), <b>guest only</b> the "
    "bank's model on its own columns (what it has today), all scored on the guest's test "
    "customers. The bars are the issue's: on FATE's split the federated model within 0.005 "
    "AUC of centralized and at least 0.05 above guest only; on the synthetic three-party set "
    "at least 0.02 above the bank alone. Overlap: the share of the guest's customers each "
    "host knows. Details, protocol and leakage table: <code>docs/vertical.md</code>.</p>"
)


def vertical_section_html(results: VerticalStudyResults) -> list[str]:
    """The vertical section: what it compares, the table, and the failed cells."""
    rows = summarize_vertical(results)
    parts = ["<h2>Vertical federation: the bank, the operator and the platform</h2>"]
    parts.append(_VERTICAL_HTML)
    parts.append("<table><tr>" + "".join(f"<th>{_e(c)}</th>" for c in VERTICAL_COLUMNS) + "</tr>")
    for row in rows:
        cls = " class='gap'" if row.passes is False else ""
        cells = "".join(f"<td>{_e(c)}</td>" for c in vertical_table_cells(row))
        parts.append(f"<tr{cls}>{cells}</tr>")
    parts.append("</table>")
    if results.failures:
        parts.append("<ul class='note'>")
        parts.extend(f"<li>{_e(k)}: {_e(v)}</li>" for k, v in results.failures.items())
        parts.append("</ul>")
    return parts


def render_html(
    results: StudyResults,
    rows: Sequence[SummaryRow],
    pngs: dict[str, bytes],
    *,
    vertical: VerticalStudyResults | None = None,
) -> str:
    """The report page, with every PNG embedded as base64."""
    parts = [
        *_header_html(results, rows),
        _how_to_read_html(results.config),
        *_summary_section_html(rows, pngs),
        *_notes_html(rows, results.failures),
    ]
    for task in dict.fromkeys(r.task for r in rows):
        parts.extend(_task_section_html(task, [r for r in rows if r.task == task], pngs))
    if vertical is not None and vertical.cells:
        parts.extend(vertical_section_html(vertical))
    parts.append(_METHOD_HTML)
    parts.append("</body></html>")
    return "".join(parts)


def write_report(
    results: StudyResults, out: Path, *, vertical: VerticalStudyResults | None = None
) -> ReportFiles:
    """Write ``out/index.html``, ``out/plots/*.png``, ``out/results.json`` and ``out/summary.md``
    (with ``vertical``, each also gets the vertical study's section).

    Raises
    ------
    fedrisk.errors.ConfigError
        If ``results`` holds no cells.
    """
    if not results.cells:
        raise ConfigError("results must hold at least one finished cell to report; got none")
    rows = summarize(results)
    pngs: dict[str, bytes] = {"gap_overview.png": plot_gap_overview(rows)}
    for (task, model), by_partition in _groups(results).items():
        title = f"{task_label(task)}, {model.upper()}"
        for kind in PLOT_KINDS:
            pngs[plot_name(kind, task, model)] = _PLOTTERS[kind](by_partition, title)
    plots_dir = out / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, png in pngs.items():
        paths[name] = plots_dir / name
        paths[name].write_bytes(png)
    html_path = out / "index.html"
    write_atomic(html_path, render_html(results, rows, pngs, vertical=vertical))
    results_path = out / "results.json"
    document = report_document(results, rows, {name: f"plots/{name}" for name in pngs})
    markdown = summary_markdown(rows)
    if vertical is not None and vertical.cells:
        vertical_rows = summarize_vertical(vertical)
        document["vertical"] = {
            "table_columns": list(VERTICAL_COLUMNS),
            "summary": [
                {**row.model_dump(mode="json"), "table": vertical_table_cells(row)}
                for row in vertical_rows
            ],
            "study": vertical.model_dump(mode="json"),
        }
        markdown += "\n" + vertical_markdown(vertical_rows)
    write_atomic(results_path, json.dumps(document, indent=1))
    markdown_path = out / "summary.md"
    write_atomic(markdown_path, markdown)
    return ReportFiles(html=html_path, results=results_path, plots=paths, markdown=markdown_path)
