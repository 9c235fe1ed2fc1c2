"""Vertical (same customers, different columns) datasets and the aligned-rows interface.

A vertical run trains on rows that private set intersection has already aligned. What each party
holds after alignment is an :class:`AlignedView`: its own columns in the guest's row order, with a
``known`` mask (a host does not know every guest customer; its columns are missing there) and the
guest's split of those rows into train, validation and test. ``align_by_join`` builds the views
from a plain join on the identifier: simulations score and compare models on them. Training
itself never lays a host's rows out in guest order (``clients.vertical_party``).

Datasets:

- ``fate-hetero``: FATE's hetero split of the Taiwan credit-card data (guest ``x0..x12`` and the
  label; one host ``x0..x9``).
- ``synthetic-vertical``: :func:`fedrisk.data.synthetic.generate_vertical`'s bank (guest),
  telecom and e-commerce views, with partial overlap (each host knows a share of the bank's
  customers).
- ``taiwan-3way``: the raw Taiwan file split three ways (see :data:`TAIWAN_THREE_WAY`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from fedrisk.data.catalog import VERTICAL_DATASET_NAMES
from fedrisk.data.datasets import resolve_data_dir
from fedrisk.data.synthetic import generate_vertical, synthetic_view_schema
from fedrisk.errors import FedRiskError

Split = Literal["train", "valid", "test"]
SPLIT_CODES: Final[dict[str, int]] = {"train": 0, "valid": 1, "test": 2}
VERTICAL_DATASETS: Final = VERTICAL_DATASET_NAMES

TAIWAN_THREE_WAY: Final[dict[str, tuple[str, ...]]] = {
    # The card issuer holds the label and what it sees on its own card: the limit it granted, the
    # monthly statements and repayments.
    "bank": (
        "LIMIT_BAL",
        "BILL_AMT1",
        "BILL_AMT2",
        "BILL_AMT3",
        "BILL_AMT4",
        "BILL_AMT5",
        "BILL_AMT6",
        "PAY_AMT1",
        "PAY_AMT2",
        "PAY_AMT3",
        "PAY_AMT4",
        "PAY_AMT5",
        "PAY_AMT6",
    ),
    # A credit bureau sees repayment status across lenders: how late the customer paid each month.
    "bureau": ("PAY_0", "PAY_2", "PAY_3", "PAY_4", "PAY_5", "PAY_6"),
    # A telecom operator's contract file holds the demographics it collects at sign-up.
    "telecom": ("SEX", "EDUCATION", "MARRIAGE", "AGE"),
}
"""Who would hold which Taiwan column in the three-way vertical split, and why (see comments)."""


class VerticalDataError(FedRiskError, ValueError):
    """A vertical dataset or alignment is malformed."""


@dataclass(frozen=True)
class PartyColumns:
    """One party's raw view before alignment: its identifiers, features and kinds."""

    name: str
    frame: pd.DataFrame
    id_column: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    label: str | None = None


@dataclass(frozen=True)
class AlignedView:
    """One party's columns in the guest's aligned row order.

    Attributes
    ----------
    name
        The party's name.
    role
        ``"guest"`` (holds the label) or ``"host"``.
    features
        The party's raw feature columns, one row per aligned position; rows the party does not
        know hold missing values.
    known
        True where the party knows the customer at that position (all true for the guest).
    split
        The guest's split code per position (:data:`SPLIT_CODES`); every party gets the same array.
    labels
        The labels (guest only).
    numeric, categorical
        The feature columns by kind.
    """

    name: str
    role: Literal["guest", "host"]
    features: pd.DataFrame
    known: npt.NDArray[np.bool_]
    split: npt.NDArray[np.int8]
    numeric: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    labels: npt.NDArray[np.int64] | None = field(default=None, repr=False)

    def rows(self, split: Split) -> npt.NDArray[np.int64]:
        """Positions of one split, in aligned order."""
        return np.flatnonzero(self.split == SPLIT_CODES[split]).astype(np.int64)

    def to_frame(self) -> pd.DataFrame:
        """The view as one frame (features, ``_known``, ``_split`` and ``_label`` for the guest),
        the form a party's aligned-data file takes."""
        out = self.features.reset_index(drop=True).copy()
        out["_known"] = self.known.astype(np.int8)
        out["_split"] = self.split
        if self.labels is not None:
            out["_label"] = self.labels
        return out

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        name: str,
        numeric: Sequence[str],
        categorical: Sequence[str] = (),
    ) -> AlignedView:
        """Read back :meth:`to_frame`'s form."""
        missing = sorted({"_known", "_split", *numeric, *categorical} - set(frame.columns))
        if missing:
            raise VerticalDataError(
                f"aligned data of {name} must hold columns {missing}; got {list(frame.columns)}"
            )
        labels = frame["_label"].to_numpy(dtype=np.int64) if "_label" in frame else None
        return cls(
            name=name,
            role="guest" if labels is not None else "host",
            features=frame[[*numeric, *categorical]].reset_index(drop=True),
            known=frame["_known"].to_numpy(dtype=bool),
            split=frame["_split"].to_numpy(dtype=np.int8),
            numeric=tuple(numeric),
            categorical=tuple(categorical),
            labels=labels,
        )


@dataclass(frozen=True)
class VerticalDataset:
    """The raw views of a vertical dataset, guest first."""

    name: str
    guest: PartyColumns
    hosts: tuple[PartyColumns, ...]


def split_codes(
    labels: npt.NDArray[np.int64],
    *,
    rng: np.random.Generator,
    test_fraction: float = 0.2,
    valid_fraction: float = 0.1,
) -> npt.NDArray[np.int8]:
    """A stratified train / validation / test assignment of the guest's rows (guest-side choice).

    ``valid_fraction`` is a share of the rows left after the test rows are taken.
    """
    codes = np.zeros(len(labels), dtype=np.int8)
    for cls_value in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls_value))
        n_test = round(test_fraction * len(idx))
        n_valid = round(valid_fraction * (len(idx) - n_test))
        codes[idx[:n_test]] = SPLIT_CODES["test"]
        codes[idx[n_test : n_test + n_valid]] = SPLIT_CODES["valid"]
    return codes


def align_by_join(
    dataset: VerticalDataset,
    *,
    rng: np.random.Generator,
    test_fraction: float = 0.2,
    valid_fraction: float = 0.1,
) -> list[AlignedView]:
    """Align every host to the guest's rows by a plain join on the identifier.

    Simulation and tests only: a deployment obtains the same views from private set
    intersection. The guest keeps all its customers; a host's columns are missing where it does
    not know the customer.
    """
    guest = dataset.guest
    if guest.label is None:
        raise VerticalDataError(f"guest {guest.name} must hold the label; got none")
    ids = guest.frame[guest.id_column].to_numpy()
    if len(np.unique(ids)) != len(ids):
        raise VerticalDataError(f"guest {guest.name}: identifiers must be unique")
    labels = guest.frame[guest.label].to_numpy(dtype=np.int64)
    codes = split_codes(labels, rng=rng, test_fraction=test_fraction, valid_fraction=valid_fraction)
    views = [
        AlignedView(
            name=guest.name,
            role="guest",
            features=guest.frame[[*guest.numeric, *guest.categorical]].reset_index(drop=True),
            known=np.ones(len(ids), dtype=bool),
            split=codes,
            numeric=guest.numeric,
            categorical=guest.categorical,
            labels=labels,
        )
    ]
    for host in dataset.hosts:
        # The join stands in for PSI: each aligned position gets the host's own identifier when
        # the host knows that customer.
        own_ids = set(host.frame[host.id_column].tolist())
        positions = [i if i in own_ids else None for i in ids.tolist()]
        views.append(host_view_from_positions(host, positions, split=codes))
    return views


def host_view_from_positions(
    host: PartyColumns, positions: Sequence[Hashable | None], *, split: npt.NDArray[np.int8]
) -> AlignedView:
    """A host's columns laid out in the guest's row order: for each of the guest's positions,
    the host's own identifier of that customer, or None where it does not know them.

    Simulations' evaluation and baselines only (they hold every party's table): in training a
    host never learns guest positions; it scores the padded references the guest sends
    (docs/vertical.md).
    """
    if len(positions) != len(split):
        raise VerticalDataError(
            f"positions of {host.name} must match the guest's {len(split)} rows; got "
            f"{len(positions)}"
        )
    cols = [*host.numeric, *host.categorical]
    indexed = host.frame.drop_duplicates(host.id_column).set_index(host.id_column)[cols]
    known = np.array([p is not None for p in positions], dtype=bool)
    unknown_ids = sorted(
        {str(p) for p in positions if p is not None} - {str(i) for i in indexed.index}
    )
    if unknown_ids:
        raise VerticalDataError(
            f"positions of {host.name} must name its own identifiers; got {len(unknown_ids)} "
            f"unknown, e.g. {unknown_ids[:3]}"
        )
    joined = indexed.reindex([p if p is not None else _MISSING for p in positions])
    return AlignedView(
        name=host.name,
        role="host",
        features=joined.reset_index(drop=True),
        known=known,
        split=split,
        numeric=host.numeric,
        categorical=host.categorical,
    )


_MISSING: Final = object()


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise VerticalDataError(f"data file {path} must exist; set FEDRISK_DATA_DIR")
    return pd.read_csv(path)


def load_vertical(
    name: str,
    *,
    rng: np.random.Generator,
    data_dir: Path | None = None,
    n_customers: int = 20_000,
    overlap: Mapping[str, float] | None = None,
) -> VerticalDataset:
    """Load one of :data:`VERTICAL_DATASETS`.

    ``overlap`` gives, per host, the share of the guest's customers it knows (the synthetic and
    Taiwan three-way sets: default 0.8 for the first host and 0.65 for the second; FATE's split
    is used as shipped, full overlap, unless a share is given).
    """
    if name == "fate-hetero":
        root = resolve_data_dir(data_dir) / "fate"
        g = _read(root / "default_credit_hetero_guest.csv.gz")
        h = _read(root / "default_credit_hetero_host.csv.gz")
        gx = tuple(c for c in g.columns if c.startswith("x"))
        hx = tuple(c for c in h.columns if c.startswith("x"))
        guest = PartyColumns("guest", g, "id", gx, label="y")
        hosts = [PartyColumns("host", h, "id", hx)]
    elif name == "synthetic-vertical":
        views = generate_vertical(n_customers=n_customers, rng=rng)
        parties = []
        for view, frame in views.items():
            schema = synthetic_view_schema(view)
            numeric = tuple(f.name for f in schema.features if f.kind.value == "numeric")
            categorical = tuple(f.name for f in schema.features if f.kind.value == "categorical")
            parties.append(
                PartyColumns(
                    view, frame, schema.id_column, numeric, categorical, schema.target_column
                )
            )
        guest = next(p for p in parties if p.label is not None)
        hosts = [p for p in parties if p.label is None]
    elif name == "taiwan-3way":
        raw = _read(resolve_data_dir(data_dir) / "UCI_Credit_Card.csv.gz")
        label = "default.payment.next.month"
        guest = PartyColumns(
            "bank", raw[["ID", label, *TAIWAN_THREE_WAY["bank"]]], "ID",
            TAIWAN_THREE_WAY["bank"], label=label,
        )  # fmt: skip
        hosts = [
            PartyColumns("bureau", raw[["ID", *TAIWAN_THREE_WAY["bureau"]]], "ID",
                         TAIWAN_THREE_WAY["bureau"]),
            PartyColumns("telecom", raw[["ID", *TAIWAN_THREE_WAY["telecom"]]], "ID", ("AGE",),
                         ("SEX", "EDUCATION", "MARRIAGE")),
        ]  # fmt: skip
    else:
        raise VerticalDataError(
            f"vertical dataset must be one of {VERTICAL_DATASETS}; got {name!r}"
        )
    default_share = (
        {}
        if name == "fate-hetero"
        else {h.name: s for h, s in zip(hosts, (0.8, 0.65), strict=False)}
    )
    shares = {**default_share, **(overlap or {})}
    hosts = [_keep_share(h, shares.get(h.name, 1.0), rng=rng) for h in hosts]
    return VerticalDataset(name=name, guest=guest, hosts=tuple(hosts))


def _keep_share(host: PartyColumns, share: float, *, rng: np.random.Generator) -> PartyColumns:
    if not 0.0 < share <= 1.0:
        raise VerticalDataError(f"overlap of {host.name} must be in (0, 1]; got {share}")
    if share == 1.0:
        return host
    keep = rng.random(len(host.frame)) < share
    return PartyColumns(
        host.name,
        host.frame.loc[keep].reset_index(drop=True),
        host.id_column,
        host.numeric,
        host.categorical,
        host.label,
    )
