"""Tests for fedrisk.data.schema: models, validation rules, TOML round trip and fingerprints."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fedrisk.data.datasets import DATASET_NAMES, dataset_schema
from fedrisk.data.schema import (
    DatasetSchema,
    FeatureKind,
    FeatureSpec,
    load_schema,
    schema_from_toml,
    schema_to_toml,
    write_schema,
)
from fedrisk.errors import ConfigError, SchemaError


def make_schema(**changes: object) -> DatasetSchema:
    fields: dict[str, object] = {
        "name": "demo",
        "id_column": "id",
        "target_column": "bad",
        "features": (
            FeatureSpec(
                name="income",
                kind=FeatureKind.NUMERIC,
                min=0,
                max=1e6,
                transform="log1p",
                nullable=True,
                description="Monthly income",
            ),
            FeatureSpec(name="region", kind=FeatureKind.CATEGORICAL, categories=("n", "s")),
        ),
    }
    fields.update(changes)
    return DatasetSchema.model_validate(fields)


def test_feature_names_columns_and_lookup() -> None:
    schema = make_schema()

    assert schema.feature_names == ["income", "region"]
    assert schema.columns == ["id", "bad", "income", "region"]
    assert schema.feature("region").categories == ("n", "s")


def test_unknown_feature_lookup_names_the_feature() -> None:
    with pytest.raises(SchemaError, match="'age'"):
        make_schema().feature("age")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "numeric", "min": 5, "max": 1}, "min must be <= max"),
        ({"kind": "numeric", "categories": ("a",)}, "must not list categories"),
        ({"kind": "numeric", "min": -1, "transform": "log1p"}, "log1p needs min >= 0"),
        ({"kind": "numeric", "transform": "log1p"}, "log1p needs min >= 0"),
        ({"kind": "numeric", "max": float("inf")}, "finite"),
        ({"kind": "categorical"}, "must list its categories"),
        ({"kind": "categorical", "categories": ("a", "a")}, "unique"),
        ({"kind": "categorical", "categories": ("a",), "min": 0}, "must not set min/max"),
        ({"kind": "categorical", "categories": ("a",), "transform": "log1p"}, "transform 'none'"),
        ({"kind": "numeric", "unit": "EUR"}, "Extra inputs"),
    ],
)
def test_feature_spec_rejects_inconsistent_fields(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FeatureSpec.model_validate({"name": "x", **spec})


def test_schema_rejects_repeated_columns() -> None:
    with pytest.raises(ValidationError, match="repeated"):
        make_schema(target_column="income")
    with pytest.raises(ValidationError, match="repeated"):
        make_schema(meta_columns=("id",))


def test_schemas_are_frozen() -> None:
    schema = make_schema()

    with pytest.raises(ValidationError):
        schema.name = "other"  # type: ignore[misc]


def test_toml_round_trip_keeps_every_field(tmp_path: Path) -> None:
    schema = make_schema(meta_columns=("segment",))
    path = tmp_path / "schema.toml"

    write_schema(schema, path)
    loaded = load_schema(path)

    assert loaded == schema
    assert loaded.fingerprint() == schema.fingerprint()


def test_missing_target_column_in_toml_means_no_target() -> None:
    schema = make_schema(target_column=None)

    text = schema_to_toml(schema)

    assert "target_column" not in text
    assert schema_from_toml(text).target_column is None


def test_load_schema_reports_bad_toml_with_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\nid_column = \n', encoding="utf-8")

    with pytest.raises(ConfigError, match=r"broken\.toml must be valid TOML"):
        load_schema(path)


def test_load_schema_reports_invalid_content(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'name = "x"\nid_column = "id"\n[[features]]\nname = "a"\nkind = "numbr"\n',
        encoding="utf-8",
    )

    with pytest.raises(ConfigError, match=r"bad\.toml is invalid"):
        load_schema(path)


def test_load_schema_reports_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_schema(tmp_path / "nope.toml")


def test_fingerprint_is_sha256_hex_and_tracks_every_change() -> None:
    base = make_schema()
    changed = [
        make_schema(name="other"),
        make_schema(target_column=None),
        make_schema(meta_columns=("party",)),
        make_schema(
            features=(
                base.features[0].model_copy(update={"max": 2e6}),
                base.features[1],
            )
        ),
        make_schema(
            features=(
                base.features[0].model_copy(update={"description": "Income per month"}),
                base.features[1],
            )
        ),
    ]

    fingerprint = base.fingerprint()

    assert len(fingerprint) == 64
    assert int(fingerprint, 16) >= 0
    assert fingerprint == make_schema().fingerprint()
    assert len({fingerprint, *(s.fingerprint() for s in changed)}) == len(changed) + 1


def test_toml_text_keeps_unicode_and_escapes_controls() -> None:
    schema = make_schema(name='Zürich "bank"\t\x7f😀')

    text = schema_to_toml(schema)

    assert 'name = "Zürich \\"bank\\"\\t\\u007f😀"' in text
    assert schema_from_toml(text) == schema


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_shipped_dataset_schemas_round_trip(name: str) -> None:
    schema = dataset_schema(name)

    assert schema_from_toml(schema_to_toml(schema)) == schema


names = st.text(min_size=1, max_size=12)
texts = st.text(max_size=40)
bounds = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)


@st.composite
def feature_specs(draw: st.DrawFn, name: str) -> FeatureSpec:
    if draw(st.booleans()):
        low = draw(st.none() | bounds)
        high = draw(st.none() | bounds)
        if low is not None and high is not None and low > high:
            low, high = high, low
        log1p = low is not None and low >= 0 and draw(st.booleans())
        return FeatureSpec(
            name=name,
            kind=FeatureKind.NUMERIC,
            min=low,
            max=high,
            transform="log1p" if log1p else "none",
            nullable=draw(st.booleans()),
            description=draw(texts),
        )
    categories = draw(st.lists(texts, min_size=1, max_size=5, unique=True))
    return FeatureSpec(
        name=name,
        kind=FeatureKind.CATEGORICAL,
        categories=tuple(categories),
        nullable=draw(st.booleans()),
        description=draw(texts),
    )


@st.composite
def schemas(draw: st.DrawFn) -> DatasetSchema:
    columns = draw(st.lists(names, min_size=4, max_size=8, unique=True))
    id_column, target, meta, *feature_names = columns
    return DatasetSchema(
        name=draw(names),
        id_column=id_column,
        target_column=draw(st.sampled_from([None, target])),
        features=tuple(draw(feature_specs(n)) for n in feature_names),
        meta_columns=draw(st.sampled_from([(), (meta,)])),
    )


@settings(max_examples=150, deadline=None)
@given(schemas())
def test_any_schema_survives_toml(schema: DatasetSchema) -> None:
    restored = schema_from_toml(schema_to_toml(schema))

    assert restored == schema
    assert restored.fingerprint() == schema.fingerprint()
