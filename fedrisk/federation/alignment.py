"""The outcome of private entity alignment at each party: which rows are the same customers.

This is what the vertical trainer reads after the ``align`` phase (:mod:`secure_agg.psi` runs
it; ``clients.alignment`` stores it in the party's run state). The guest trains on all of its
rows; a host's features are missing for the guest rows that host does not know.

- The guest holds a :class:`GuestAlignment`: for each host, the guest rows that host knows,
  ascending. This ascending order is the *intersection order* shared with that host.
- A host holds a :class:`HostAlignment`: its own rows in the intersection order, and the guest
  row each one is. It never learns who the guest's other customers are.

Notes
-----
A host learns the guest's row count and which guest row numbers it shares, so that it can lay
its values out in guest order (:meth:`HostAlignment.to_guest_order`) without the guest moving
ciphertext slots. Row numbers say nothing about a customer unless the guest's table order does:
a guest whose table is sorted by something meaningful (account age, branch) shuffles it first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from fedrisk.errors import FedRiskError

Rows = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


class AlignmentError(FedRiskError, ValueError):
    """An alignment result is inconsistent, or is asked for a host it does not cover."""


def _rows(values: object) -> Rows:
    return np.asarray(values, dtype=np.int64).reshape(-1)


def _plain(value: object) -> object:
    """``value`` with its arrays as lists, for JSON."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


class _JsonResult:
    """A frozen dataclass result that writes itself as JSON (``from_json`` reads it back)."""

    def to_json(self) -> str:
        """A JSON text ``from_json`` reads back."""
        return json.dumps({f.name: _plain(getattr(self, f.name)) for f in fields(self)})  # type: ignore[arg-type]


@dataclass(frozen=True)
class GuestAlignment(_JsonResult):
    """The guest's result: for each host, which of its rows that host knows.

    Attributes
    ----------
    guest
        The guest's party name.
    n_rows
        The guest's row count (its whole table, in its own order).
    shared
        Per host name, the guest rows the host knows, ascending.
    """

    guest: str
    n_rows: int
    shared: Mapping[str, Rows] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for host, rows in self.shared.items():
            if len(rows) and (rows[0] < 0 or rows[-1] >= self.n_rows or np.any(np.diff(rows) <= 0)):
                raise AlignmentError(
                    f"shared rows of host {host!r} must be ascending guest rows below "
                    f"{self.n_rows}; got others"
                )

    @property
    def hosts(self) -> list[str]:
        """The hosts aligned with, sorted."""
        return sorted(self.shared)

    def known(self, host: str) -> Mask:
        """For each guest row, whether ``host`` knows that customer.

        Raises
        ------
        AlignmentError
            If ``host`` was not aligned with.
        """
        mask = np.zeros(self.n_rows, dtype=bool)
        mask[self._shared(host)] = True
        return mask

    def coverage(self) -> dict[str, float]:
        """Per host, the share of the guest's customers it knows."""
        return {h: len(r) / self.n_rows if self.n_rows else 0.0 for h, r in self.shared.items()}

    def _shared(self, host: str) -> Rows:
        if host not in self.shared:
            raise AlignmentError(f"host must be one of {self.hosts}; got {host!r}")
        return self.shared[host]

    @classmethod
    def from_json(cls, text: str) -> GuestAlignment:
        """Read :meth:`to_json` back."""
        raw: dict[str, Any] = json.loads(text)
        raw["shared"] = {str(h): _rows(r) for h, r in raw["shared"].items()}
        return cls(**raw)


@dataclass(frozen=True)
class HostAlignment(_JsonResult):
    """A host's result: its rows in the guest's intersection order.

    Attributes
    ----------
    host, guest
        Party names.
    guest_size
        The guest's row count.
    rows
        This host's rows, in the intersection order.
    guest_rows
        The guest row each of ``rows`` is, ascending.
    """

    host: str
    guest: str
    guest_size: int
    rows: Rows
    guest_rows: Rows

    def __post_init__(self) -> None:
        if len(self.rows) != len(self.guest_rows):
            raise AlignmentError(
                f"rows and guest_rows must have one length; got {len(self.rows)} and "
                f"{len(self.guest_rows)}"
            )

    def to_guest_order(self, values: npt.ArrayLike, *, fill: float = np.nan) -> npt.NDArray[Any]:
        """This host's per-row ``values`` (in its own row order) laid out in guest row order,
        ``fill`` where the host does not know the customer.

        Raises
        ------
        AlignmentError
            If ``values`` has fewer rows than the host's largest aligned row needs.
        """
        array = np.asarray(values)
        if len(self.rows) and len(array) <= int(self.rows.max()):
            raise AlignmentError(
                f"values must have a row for each of the host's rows (at least "
                f"{int(self.rows.max()) + 1}); got {len(array)}"
            )
        out = np.full((self.guest_size, *array.shape[1:]), fill, dtype=np.result_type(array, fill))
        out[self.guest_rows] = array[self.rows]
        return out

    @classmethod
    def from_json(cls, text: str) -> HostAlignment:
        """Read :meth:`to_json` back."""
        raw: dict[str, Any] = json.loads(text)
        return cls(**{**raw, "rows": _rows(raw["rows"]), "guest_rows": _rows(raw["guest_rows"])})
