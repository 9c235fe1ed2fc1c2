"""Tests of the relationship graph: linking, ring flags, hubs, rebuild equivalence, export."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fedrisk.decisions.fraud_graph import GraphConfig, RelationshipGraph
from fedrisk.errors import DecisionError

Row = tuple[str, Mapping[str, object]]


def components(graph: RelationshipGraph) -> set[frozenset[str]]:
    return {frozenset(c) for c in graph.components()}


def oracle_components(rows: list[Row], config: GraphConfig) -> set[frozenset[str]]:
    """Connected components computed from scratch with networkx, hubs removed."""
    graph = nx.Graph()
    apps: dict[str, set[tuple[str, str]]] = {}
    for app, ids in rows:
        keys = apps.setdefault(app, set())
        for kind in config.link_kinds:
            value = ids.get(kind)
            if value is not None and str(value).strip():
                keys.add((kind, str(value).strip()))
    counts = Counter(key for keys in apps.values() for key in keys)
    for app, keys in apps.items():
        graph.add_node(("app", app))
        for key in keys:
            if counts[key] <= config.threshold(key[0]):
                graph.add_edge(("app", app), ("id", *key))
    return {
        frozenset(node[1] for node in comp if node[0] == "app")
        for comp in nx.connected_components(graph)
        if any(node[0] == "app" for node in comp)
    }


def test_applications_sharing_an_identifier_are_linked() -> None:
    graph = RelationshipGraph()

    first = graph.add("a1", {"device_id": "d1", "ip": "10.0.0.1"})
    second = graph.add("a2", {"device_id": "d1", "ip": "10.0.0.2"})

    assert (first.component_size, first.linked_kinds) == (1, ())
    assert (second.component_size, second.linked_kinds, second.is_ring) == (
        2,
        ("device_id",),
        False,
    )
    assert graph.component("a1") == ["a1", "a2"]
    assert graph.check("a1").linked_kinds == ("device_id",)


def test_same_value_of_different_kinds_does_not_link() -> None:
    graph = RelationshipGraph()
    graph.add("a1", {"device_id": "x"})

    status = graph.add("a2", {"phone": "x"})

    assert status.component_size == 1


def test_component_larger_than_the_limit_is_a_ring() -> None:
    graph = RelationshipGraph(GraphConfig(max_component_size=5))
    statuses = [
        graph.add(f"a{i}", {"device_id": f"d{i // 2}", "phone": f"p{(i + 1) // 2}"})
        for i in range(6)
    ]  # a chain: a0-a1 share d0, a1-a2 share p1, a2-a3 share d1, ...

    assert [s.component_size for s in statuses] == [1, 2, 3, 4, 5, 6]
    assert [s.is_ring for s in statuses] == [False] * 5 + [True]
    assert graph.check("a0").is_ring  # the earlier members are flagged now too
    assert graph.rings() == [[f"a{i}" for i in range(6)]]


def test_hub_identifier_is_ignored_and_its_links_are_undone() -> None:
    graph = RelationshipGraph(GraphConfig(hub_threshold=3, max_component_size=2))
    graph.add("a0", {"ip": "nat", "device_id": "shared"})
    graph.add("a1", {"ip": "nat", "device_id": "shared"})
    third = graph.add("a2", {"ip": "nat"})

    fourth = graph.add("a3", {"ip": "nat"})  # 4 > 3 applications: nat is a hub

    assert third.is_ring  # before the IP was known to be a hub
    assert (fourth.component_size, fourth.ignored_hub_kinds, fourth.is_ring) == (1, ("ip",), False)
    assert components(graph) == {frozenset({"a0", "a1"}), frozenset({"a2"}), frozenset({"a3"})}
    assert graph.check("a0").linked_kinds == ("device_id",)
    assert graph.check("a2").is_ring is False
    assert graph.hubs() == {("ip", "nat"): 4}


def test_hub_applications_still_linked_otherwise_stay_together() -> None:
    graph = RelationshipGraph(GraphConfig(hub_threshold=2))
    graph.add("a0", {"ip": "nat", "phone": "p"})
    graph.add("a1", {"ip": "nat", "device_id": "d"})
    graph.add("a2", {"device_id": "d", "phone": "p"})  # a0-a2-a1 without the IP

    graph.add("a3", {"ip": "nat"})

    assert components(graph) == {frozenset({"a0", "a1", "a2"}), frozenset({"a3"})}


def test_hub_threshold_by_kind() -> None:
    config = GraphConfig(hub_threshold=10, hub_threshold_by_kind={"ip": 2})
    graph = RelationshipGraph(config)
    for i in range(3):
        graph.add(f"i{i}", {"ip": "nat"})
        graph.add(f"d{i}", {"device_id": "dev"})

    assert components(graph) == {
        frozenset({"i0"}),
        frozenset({"i1"}),
        frozenset({"i2"}),
        frozenset({"d0", "d1", "d2"}),
    }


def test_unknown_kinds_missing_and_blank_values_are_skipped_and_lists_link() -> None:
    graph = RelationshipGraph()
    graph.add("a0", {"device_id": None, "ip": "  ", "email": "same", "bank_card": ["c1", "c2"]})

    unlinked = graph.add("a1", {"email": "same", "device_id": ""})
    linked = graph.add("a2", {"bank_card": "c2"})

    assert unlinked.component_size == 1
    assert (linked.component_size, linked.linked_kinds) == (2, ("bank_card",))


def test_re_adding_is_idempotent_but_conflicting_identifiers_are_rejected() -> None:
    graph = RelationshipGraph()
    graph.add("a0", {"device_id": "d"})
    graph.add("a1", {"device_id": "d"})

    again = graph.add("a0", {"device_id": "d"})

    assert (again.component_size, len(graph)) == (2, 2)
    with pytest.raises(DecisionError, match="re-sent with the same identifiers"):
        graph.add("a0", {"device_id": "other"})


def test_bad_ids_are_rejected() -> None:
    graph = RelationshipGraph()

    with pytest.raises(DecisionError, match="application_id must be a non-empty string"):
        graph.add("", {"device_id": "d"})
    with pytest.raises(DecisionError, match="application_id must be in the graph; got 'zz'"):
        graph.check("zz")


def test_rebuild_from_rows_equals_incremental_adds_on_a_hand_case() -> None:
    config = GraphConfig(hub_threshold=3, max_component_size=3)
    rows: list[Row] = [
        ("a0", {"ip": "nat", "device_id": "d0"}),
        ("a1", {"ip": "nat", "device_id": "d0"}),
        ("a2", {"ip": "nat", "phone": "p"}),
        ("a3", {"phone": "p", "bank_card": "c"}),
        ("a4", {"ip": "nat", "bank_card": "c"}),
        ("a5", {"device_id": "d0"}),
    ]
    graph = RelationshipGraph(config)
    for app, ids in rows:
        graph.add(app, ids)

    rebuilt = RelationshipGraph.from_rows(rows, config=config)

    assert components(graph) == components(rebuilt) == oracle_components(rows, config)
    assert graph.hubs() == rebuilt.hubs()
    assert [graph.check(a) for a, _ in rows] == [rebuilt.check(a) for a, _ in rows]


_VALUES = st.sampled_from(["v0", "v1", "v2", "v3", "v4", "v5", None])
_IDS = st.fixed_dictionaries(
    {"device_id": _VALUES, "ip": _VALUES, "phone": _VALUES, "bank_card": _VALUES}
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(_IDS, min_size=1, max_size=40),
    st.integers(2, 8),
    st.integers(1, 6),
)
def test_incremental_rebuilt_and_networkx_oracle_agree(
    identifiers: list[dict[str, str | None]], hub_threshold: int, max_size: int
) -> None:
    config = GraphConfig(hub_threshold=hub_threshold, max_component_size=max_size)
    rows: list[Row] = [(f"a{i}", ids) for i, ids in enumerate(identifiers)]
    graph = RelationshipGraph(config)
    for app, ids in rows:
        graph.add(app, ids)

    rebuilt = RelationshipGraph.from_rows(rows, config=config)

    expected = oracle_components(rows, config)
    assert components(graph) == expected
    assert components(rebuilt) == expected
    assert graph.hubs() == rebuilt.hubs()
    assert [graph.check(a) for a, _ in rows] == [rebuilt.check(a) for a, _ in rows]
    assert graph.rings() == [c for c in graph.components() if len(c) > max_size]


def test_rebuild_rejects_conflicting_duplicate_rows_and_skips_identical_ones() -> None:
    rebuilt = RelationshipGraph.from_rows([("a", {"ip": "1"}), ("a", {"ip": "1"})])

    assert len(rebuilt) == 1
    with pytest.raises(DecisionError, match="different identifiers"):
        RelationshipGraph.from_rows([("a", {"ip": "1"}), ("a", {"ip": "2"})])


def test_networkx_export_is_bipartite_and_can_show_hubs() -> None:
    graph = RelationshipGraph(GraphConfig(hub_threshold=2))
    graph.add("a0", {"device_id": "d", "ip": "nat"})
    graph.add("a1", {"device_id": "d", "ip": "nat"})
    graph.add("a2", {"ip": "nat"})
    graph.add("b0", {"phone": "p"})

    whole = graph.to_networkx()
    one = graph.to_networkx("a0")
    with_hubs = graph.to_networkx("a0", include_hubs=True)

    assert set(whole.nodes) == {"app:a0", "app:a1", "app:a2", "app:b0", "device_id:d", "phone:p"}
    assert nx.is_bipartite(whole)
    assert whole.nodes["app:a0"] == {"bipartite": 0, "kind": "application"}
    assert whole.nodes["device_id:d"] == {"bipartite": 1, "kind": "device_id", "hub": False}
    assert set(one.nodes) == {"app:a0", "app:a1", "device_id:d"}
    assert with_hubs.nodes["ip:nat"]["hub"] is True


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"link_kinds": []}, "link_kinds must be a non-empty list"),
        ({"link_kinds": ["ip", "ip"]}, "distinct kinds"),
        ({"hub_threshold_by_kind": {"email": 5}}, "keys must be in link_kinds"),
        ({"hub_threshold_by_kind": {"ip": 1}}, r"hub_threshold_by_kind\['ip'\] must be >= 2"),
        ({"hub_threshold": 1}, "hub_threshold"),
        ({"max_component_size": 0}, "max_component_size"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_config_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        GraphConfig.model_validate(kwargs)


def test_adds_are_cheap() -> None:
    graph = RelationshipGraph(GraphConfig(hub_threshold=20))
    n = 5_000
    start = time.perf_counter()

    for i in range(n):
        graph.add(
            f"a{i}",
            {
                "device_id": f"d{i % 2000}",
                "ip": f"ip{i % 100}",
                "phone": f"p{i}",
                "bank_card": f"c{i}",
            },
        )

    elapsed = time.perf_counter() - start
    # ~10-40 µs per add here; a generous bound keeps this stable on a busy machine
    assert elapsed / n < 1e-3
    assert len(graph.hubs()) == 100
