"""Relationship graph of applications linked by shared identifiers, for fraud-ring detection.

API
---
``GraphConfig(link_kinds=("device_id", "ip", "phone", "bank_card"), max_component_size=5,
hub_threshold=50, hub_threshold_by_kind={})``
``RelationshipGraph(config=None)``
    ``.add(application_id, identifiers) -> RingCheck``   incremental, O(identifiers) amortised
    ``.check(application_id) -> RingCheck``              current status of a known application
    ``.component(application_id) -> list[str]``, ``.components()``, ``.rings()``, ``.hubs()``
    ``.to_networkx(application_id=None, *, include_hubs=False) -> networkx.Graph``
    ``RelationshipGraph.from_rows(rows, *, config=None)``  rebuild after a restart from stored
    ``(application_id, identifiers)`` rows; gives the same components as adding them one by one.
``RingCheck(application_id, component_size, is_ring, linked_kinds, ignored_hub_kinds)``

Model: a bipartite graph of applications and identifiers ``(kind, value)``; two applications are
linked when they share an identifier. An identifier shared by more than ``hub_threshold``
applications (e.g. a carrier NAT IP) is a hub and links nothing. A connected component with more
than ``max_component_size`` applications is flagged as a possible ring.

Implementation: every application carries a component label; an identifier -> applications
index gives the links. Linking two components relabels the smaller one (amortised O(log n) per
application), so adding an application costs a few dictionary operations per identifier. When an
identifier turns into a hub (once per identifier), its component may fall apart: breadth-first
searches from the hub's applications run in lockstep and stop as soon as they all meet (no split)
or all but one have exhausted their piece, which is then carved out. The cost is bounded by the
smaller pieces, not by the component. Incremental adds and a rebuild from rows therefore always
give the same components.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from typing import Self

import networkx as nx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedrisk.errors import DecisionError

__all__ = ["GraphConfig", "RelationshipGraph", "RingCheck"]

Key = tuple[str, str]
"""An identifier: (kind, value)."""


class GraphConfig(BaseModel):
    """Relationship-graph settings.

    Attributes
    ----------
    link_kinds
        Identifier kinds that link applications; other keys of an application are ignored.
    max_component_size
        A component with more applications than this is flagged as a possible ring.
    hub_threshold
        An identifier shared by more applications than this is a hub and is not used as a link.
    hub_threshold_by_kind
        Per-kind overrides of ``hub_threshold`` (e.g. a lower one for ``ip``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    link_kinds: tuple[str, ...] = ("device_id", "ip", "phone", "bank_card")
    max_component_size: int = Field(default=5, ge=1)
    hub_threshold: int = Field(default=50, ge=2)
    hub_threshold_by_kind: dict[str, int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.link_kinds or len(set(self.link_kinds)) != len(self.link_kinds):
            raise ValueError(
                "link_kinds must be a non-empty list of distinct kinds; "
                f"got {list(self.link_kinds)}"
            )
        for kind, threshold in self.hub_threshold_by_kind.items():
            if kind not in self.link_kinds:
                raise ValueError(
                    f"hub_threshold_by_kind keys must be in link_kinds {list(self.link_kinds)}; "
                    f"got {kind!r}"
                )
            if threshold < 2:
                raise ValueError(f"hub_threshold_by_kind[{kind!r}] must be >= 2; got {threshold}")
        return self

    def threshold(self, kind: str) -> int:
        """Hub threshold of one identifier kind."""
        return self.hub_threshold_by_kind.get(kind, self.hub_threshold)


class RingCheck(BaseModel):
    """Graph status of one application (safe to store: no identifier values).

    Attributes
    ----------
    application_id
        The application.
    component_size
        Applications in its connected component (itself included).
    is_ring
        ``component_size > max_component_size``.
    linked_kinds
        Kinds of its identifiers shared with at least one other application.
    ignored_hub_kinds
        Kinds of its identifiers ignored because they are hubs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    application_id: str
    component_size: int
    is_ring: bool
    linked_kinds: tuple[str, ...]
    ignored_hub_kinds: tuple[str, ...]


class RelationshipGraph:
    """Incrementally maintained application–identifier graph with ring detection.

    Parameters
    ----------
    config
        Graph settings; defaults to :class:`GraphConfig()`.

    Notes
    -----
    Identifier values are kept in memory as given. Pass tokenised values for sensitive
    identifiers (e.g. a card fingerprint, not the card number); equal tokens still link.
    All methods are thread-safe (one lock; the work under it is a few dictionary operations).
    A graph of 10^5 applications holds a few hundred thousand small containers, so CPython's
    full garbage collections can pause an add for ~0.1 s; a service should call ``gc.freeze()``
    after :meth:`from_rows` (and periodically) to keep those objects out of the collector's scans.
    """

    def __init__(self, config: GraphConfig | None = None) -> None:
        self._config = GraphConfig() if config is None else config
        self._lock = threading.RLock()
        self._index: dict[str, int] = {}
        self._names: list[str] = []
        self._comp: list[int] = []  # application -> component label
        self._members: dict[int, set[int]] = {}  # component label -> applications
        self._next_label = 0
        self._app_keys: list[tuple[Key, ...]] = []
        self._key_apps: dict[Key, list[int]] = {}
        self._hub_counts: dict[Key, int] = {}

    @property
    def config(self) -> GraphConfig:
        """The graph's settings."""
        return self._config

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, application_id: object) -> bool:
        return application_id in self._index

    # -- building ------------------------------------------------------------------------------

    def _keys(self, identifiers: Mapping[str, object]) -> tuple[Key, ...]:
        keys: dict[Key, None] = {}
        for kind in self._config.link_kinds:
            raw = identifiers.get(kind)
            values = raw if isinstance(raw, list | tuple | set | frozenset) else (raw,)
            for value in values:
                if value is None or (isinstance(value, float) and value != value):  # NaN
                    continue
                text = str(value).strip()
                if text:
                    keys[(kind, text)] = None
        return tuple(keys)

    def _register(self, application_id: str, keys: tuple[Key, ...]) -> int | None:
        """Add the application node; None if it is already known with the same identifiers."""
        if not isinstance(application_id, str) or not application_id:
            raise DecisionError(
                f"application_id must be a non-empty string; got {application_id!r}"
            )
        known = self._index.get(application_id)
        if known is not None:
            if set(self._app_keys[known]) != set(keys):
                raise DecisionError(
                    f"application_id must be new or re-sent with the same identifiers; got "
                    f"{application_id!r} again with different identifiers"
                )
            return None
        idx = len(self._names)
        self._index[application_id] = idx
        self._names.append(application_id)
        self._comp.append(self._new_component({idx}))
        self._app_keys.append(keys)
        return idx

    def add(self, application_id: str, identifiers: Mapping[str, object]) -> RingCheck:
        """Add one application and report its ring status.

        Parameters
        ----------
        application_id
            Unique id; re-adding it with the same identifiers is a no-op (retries are safe).
        identifiers
            Kind -> value (or list of values); only ``config.link_kinds`` are used, None and
            blank values are skipped.

        Returns
        -------
        RingCheck
            Status right after the add (later applications may grow the component; use
            :meth:`check` for the current status).

        Raises
        ------
        DecisionError
            If the id is empty, or known with different identifiers.
        """
        keys = self._keys(identifiers)
        with self._lock:
            idx = self._register(application_id, keys)
            if idx is None:
                return self._status(self._index[application_id])
            # first turn identifiers that now cross their threshold into hubs (which may split
            # the component they had joined), then link the new application via the rest
            for key in keys:
                if key in self._hub_counts:
                    self._hub_counts[key] += 1
                    continue
                count = len(self._key_apps.get(key, ())) + 1
                if count > self._config.threshold(key[0]):
                    self._hub_counts[key] = count
                    self._split_without(key)
            for key in keys:
                if key in self._hub_counts:
                    continue
                apps = self._key_apps.setdefault(key, [])
                if apps:
                    self._link(idx, apps[0])
                apps.append(idx)
            return self._status(idx)

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[tuple[str, Mapping[str, object]]],
        *,
        config: GraphConfig | None = None,
    ) -> RelationshipGraph:
        """Rebuild a graph from stored ``(application_id, identifiers)`` rows.

        Counts identifiers first so hubs are known before linking (no splits needed); the result
        has the same components, hubs and statuses as adding the rows one by one.

        Raises
        ------
        DecisionError
            If an id repeats with different identifiers.
        """
        graph = cls(config)
        added: list[int] = []
        for application_id, identifiers in rows:
            idx = graph._register(application_id, graph._keys(identifiers))
            if idx is not None:
                added.append(idx)
        counts = Counter(key for idx in added for key in graph._app_keys[idx])
        cfg = graph._config
        graph._hub_counts = {k: c for k, c in counts.items() if c > cfg.threshold(k[0])}
        for idx in added:
            for key in graph._app_keys[idx]:
                if key in graph._hub_counts:
                    continue
                apps = graph._key_apps.setdefault(key, [])
                if apps:
                    graph._link(idx, apps[0])
                apps.append(idx)
        return graph

    # -- union-find ----------------------------------------------------------------------------

    def _new_component(self, members: set[int]) -> int:
        label = self._next_label
        self._next_label += 1
        self._members[label] = members
        return label

    def _link(self, a: int, b: int) -> None:
        ca, cb = self._comp[a], self._comp[b]
        if ca == cb:
            return
        if len(self._members[ca]) < len(self._members[cb]):
            ca, cb = cb, ca
        moved = self._members.pop(cb)
        for m in moved:
            self._comp[m] = ca
        self._members[ca] |= moved

    def _neighbours(self, app: int) -> Iterable[int]:
        for key in self._app_keys[app]:
            if key not in self._hub_counts:
                yield from self._key_apps.get(key, ())

    def _split_without(self, hub: Key) -> None:
        """Carve the pieces off the component ``hub`` had joined, now that ``hub`` is a hub.

        Every piece holds at least one of the hub's applications, so searches start there. A
        search that reaches another's territory merges groups with it; a group whose queues are
        all empty has found a whole piece. The searches stop when one group is left.
        """
        starts = self._key_apps.pop(hub, [])
        if len(starts) < 2:
            return
        k = len(starts)
        group = list(range(k))  # union-find over searches

        def find(i: int) -> int:
            while group[i] != i:
                group[i] = group[group[i]]
                i = group[i]
            return i

        owner = {app: i for i, app in enumerate(starts)}
        queues = [deque([app]) for app in starts]
        n_groups = k
        while True:
            for i in range(k):
                queue = queues[i]
                if not queue:
                    continue
                gi = find(i)
                for v in self._neighbours(queue.popleft()):
                    o = owner.get(v)
                    if o is None:
                        owner[v] = i
                        queue.append(v)
                        continue
                    go = find(o)
                    if go != gi:
                        group[go] = gi
                        n_groups -= 1
                if n_groups == 1:
                    return  # the hub's applications are still connected without it
            active = {find(i) for i in range(k) if queues[i]}
            if len(active) <= 1:
                break
        pieces: dict[int, set[int]] = {}
        for app, i in owner.items():
            pieces.setdefault(find(i), set()).add(app)
        # the one still-searching group (or else the largest piece) keeps the old label: it may
        # hold applications no search has reached
        keep = next(iter(active)) if active else max(pieces, key=lambda g: len(pieces[g]))
        old = self._comp[starts[0]]
        for label, piece in pieces.items():
            if label == keep:
                continue
            new = self._new_component(piece)
            for m in piece:
                self._comp[m] = new
            self._members[old] -= piece

    # -- queries -------------------------------------------------------------------------------

    def _idx(self, application_id: str) -> int:
        try:
            return self._index[application_id]
        except KeyError as e:
            raise DecisionError(
                f"application_id must be in the graph; got {application_id!r}"
            ) from e

    def _status(self, idx: int) -> RingCheck:
        size = len(self._members[self._comp[idx]])
        keys = self._app_keys[idx]
        linked = {k[0] for k in keys if len(self._key_apps.get(k, ())) > 1}
        hubs = {k[0] for k in keys if k in self._hub_counts}
        return RingCheck(
            application_id=self._names[idx],
            component_size=size,
            is_ring=size > self._config.max_component_size,
            linked_kinds=tuple(sorted(linked)),
            ignored_hub_kinds=tuple(sorted(hubs)),
        )

    def check(self, application_id: str) -> RingCheck:
        """Current ring status of a known application (``DecisionError`` if unknown)."""
        with self._lock:
            return self._status(self._idx(application_id))

    def component(self, application_id: str) -> list[str]:
        """Sorted ids of the applications in ``application_id``'s component."""
        with self._lock:
            label = self._comp[self._idx(application_id)]
            return sorted(self._names[m] for m in self._members[label])

    def components(self) -> list[list[str]]:
        """Every component as a sorted id list, largest first (ties by first id)."""
        with self._lock:
            groups = [sorted(self._names[m] for m in ms) for ms in self._members.values()]
        return sorted(groups, key=lambda g: (-len(g), g[0]))

    def rings(self) -> list[list[str]]:
        """Components with more than ``max_component_size`` applications, largest first."""
        limit = self._config.max_component_size
        return [group for group in self.components() if len(group) > limit]

    def hubs(self) -> dict[Key, int]:
        """Hub identifiers and how many applications share each."""
        with self._lock:
            return dict(self._hub_counts)

    def to_networkx(
        self, application_id: str | None = None, *, include_hubs: bool = False
    ) -> nx.Graph:
        """Export the bipartite graph (or one application's component) for investigation.

        Nodes are ``"app:<id>"`` (``bipartite=0``, ``kind="application"``) and
        ``"<kind>:<value>"`` (``bipartite=1``, ``kind=<kind>``, ``hub=<bool>``); edges join an
        application to its identifiers. Hubs are left out unless ``include_hubs``.
        """
        graph: nx.Graph = nx.Graph()
        with self._lock:
            if application_id is None:
                apps: Iterable[int] = range(len(self._names))
            else:
                apps = list(self._members[self._comp[self._idx(application_id)]])
            for idx in apps:
                app_node = f"app:{self._names[idx]}"
                graph.add_node(app_node, bipartite=0, kind="application")
                for key in self._app_keys[idx]:
                    is_hub = key in self._hub_counts
                    if is_hub and not include_hubs:
                        continue
                    key_node = f"{key[0]}:{key[1]}"
                    graph.add_node(key_node, bipartite=1, kind=key[0], hub=is_hub)
                    graph.add_edge(app_node, key_node)
        return graph
