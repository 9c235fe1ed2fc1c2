"""The outcome of private entity alignment at each party: which rows are the same customers.

This is what the vertical trainer reads after the ``align`` phase (:mod:`secure_agg.psi` runs
it; ``clients.alignment`` stores it in the party's run state). The guest trains on all of its
rows; a host's features are missing for the guest rows that host does not know.

- The guest holds a :class:`GuestAlignment`: for each host, the guest rows that host knows,
  ascending, and the *reference* that names each one's host row (the host's secret PSI slot).
- A host holds a :class:`HostAlignment`: which of its own rows are shared, each with its
  reference. It holds no guest row number: it never learns where a shared customer sits in the
  guest's table, nor anything about the guest's customers it lacks (docs/vertical.md: the
  trainer sends a host only padded lists of references).
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
    refs
        Per host name, the host's reference (PSI slot) of each of ``shared``, in that order.
    """

    guest: str
    n_rows: int
    shared: Mapping[str, Rows] = field(default_factory=dict)
    refs: Mapping[str, Rows] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.refs) != set(self.shared) or any(
            len(self.refs[h]) != len(r) for h, r in self.shared.items()
        ):
            raise AlignmentError("refs must name one host reference per shared guest row")
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

    def references(self, host: str) -> Rows:
        """For each guest row, the reference of ``host``'s row of that customer, or -1.

        Raises
        ------
        AlignmentError
            If ``host`` was not aligned with.
        """
        out = np.full(self.n_rows, -1, dtype=np.int64)
        out[self._shared(host)] = self.refs[host]
        return out

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
        raw["refs"] = {str(h): _rows(r) for h, r in raw["refs"].items()}
        return cls(**raw)


@dataclass(frozen=True)
class HostAlignment(_JsonResult):
    """A host's result: which of its rows are shared, and the reference naming each.

    Attributes
    ----------
    host, guest
        Party names.
    slots
        The references (PSI slots) of the shared rows, ascending.
    rows
        This host's own row behind each reference.
    """

    host: str
    guest: str
    slots: Rows
    rows: Rows

    def __post_init__(self) -> None:
        if len(self.rows) != len(self.slots):
            raise AlignmentError(
                f"rows and slots must have one length; got {len(self.rows)} and {len(self.slots)}"
            )

    def row_of(self, refs: npt.ArrayLike) -> Rows:
        """The host's own rows behind ``refs``.

        Raises
        ------
        AlignmentError
            If a reference does not name a shared row.
        """
        wanted = np.asarray(refs, dtype=np.int64).reshape(-1)
        at = np.searchsorted(self.slots, wanted)
        found = np.append(self.slots, -1)[np.minimum(at, len(self.slots))]
        ok = (at < len(self.slots)) & (found == wanted)
        if not bool(np.all(ok)):
            raise AlignmentError(
                f"references must name shared rows of {self.host}; got {int(np.sum(~ok))} others"
            )
        return np.asarray(self.rows[at], dtype=np.int64)

    @classmethod
    def from_json(cls, text: str) -> HostAlignment:
        """Read :meth:`to_json` back."""
        raw: dict[str, Any] = json.loads(text)
        return cls(**{**raw, "slots": _rows(raw["slots"]), "rows": _rows(raw["rows"])})
