"""HE parameter validation: SEAL security limits, depth, scale precision, frozen/extra=forbid."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from secure_agg.codec import decrypt_vector, encrypt_vector
from secure_agg.errors import HEParamsError
from secure_agg.keys import generate_context
from secure_agg.params import HEParams, parse_he_params


def test_defaults_match_the_measured_setup() -> None:
    params = HEParams()

    assert params.poly_modulus_degree == 8192
    assert params.coeff_mod_bit_sizes == (60, 40, 40, 60)
    assert params.global_scale_bits == 40
    assert params.slots == 8192
    assert params.global_scale == 2.0**40


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"poly_modulus_degree": 5000}, "poly_modulus_degree must be a power of two"),
        ({"poly_modulus_degree": 2048}, "poly_modulus_degree must be a power of two"),
        ({"coeff_mod_bit_sizes": (60, 60, 60, 60)}, "must sum to <= 218 bits"),
        ({"poly_modulus_degree": 4096}, "must sum to <= 109 bits"),
        (
            {"poly_modulus_degree": 16384, "coeff_mod_bit_sizes": (60,) * 8},
            "must sum to <= 438 bits",
        ),
        ({"coeff_mod_bit_sizes": (60, 60)}, "at least 3 primes"),
        ({"coeff_mod_bit_sizes": (60, 36, 60)}, "global_scale_bits must be <= the smallest middle"),
        ({"coeff_mod_bit_sizes": (61, 40, 60)}, "must each be in [20, 60] bits"),
        ({"global_scale_bits": 25}, "global_scale_bits must be >= 35"),
    ],
)
def test_invalid_parameters_are_rejected_with_a_clear_message(
    fields: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ValidationError) as info:
        HEParams.model_validate(fields)

    message = str(info.value)
    assert fragment in message
    assert "got" in message


def test_extra_fields_are_forbidden_and_params_are_frozen() -> None:
    with pytest.raises(ValidationError, match="extra"):
        HEParams.model_validate({"scale": 40})
    params = HEParams()
    with pytest.raises(ValidationError):
        params.global_scale_bits = 30  # type: ignore[misc]


def test_parse_he_params_reports_every_problem_as_one_error() -> None:
    with pytest.raises(HEParamsError) as info:
        parse_he_params({"poly_modulus_degree": 5000, "global_scale_bits": 20})

    message = str(info.value)
    assert "poly_modulus_degree" in message
    assert "global_scale_bits" in message
    assert isinstance(info.value, ValueError)


def test_parse_he_params_round_trips_a_dump() -> None:
    params = HEParams(poly_modulus_degree=16384, coeff_mod_bit_sizes=(60, 40, 40, 40, 60))

    assert parse_he_params(params.model_dump(mode="json")) == params


@pytest.mark.parametrize(
    "params",
    [
        HEParams(),
        HEParams(poly_modulus_degree=4096, coeff_mod_bit_sizes=(37, 35, 37), global_scale_bits=35),
        HEParams(poly_modulus_degree=16384, coeff_mod_bit_sizes=(60, 40, 40, 40, 60)),
    ],
    ids=["default", "n4096", "n16384"],
)
def test_every_accepted_parameter_set_builds_a_working_context(params: HEParams) -> None:
    ctx = generate_context(params)
    vec = np.linspace(-3.0, 3.0, params.slots + 5)

    out = decrypt_vector(ctx, encrypt_vector(ctx, vec), length=vec.size)

    assert ctx.slots == params.slots
    np.testing.assert_allclose(out, vec, atol=1e-6)
