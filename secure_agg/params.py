"""CKKS encryption parameters, checked against SEAL's 128-bit security limits and our precision."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from secure_agg.errors import HEParamsError

SUPPORTED_POLY_MODULUS_DEGREES: Final[tuple[int, ...]] = (4096, 8192, 16384, 32768)
"""Ring dimensions we accept. Smaller rings cannot fit three primes at 128-bit security."""

MAX_COEFF_MODULUS_BITS: Final[dict[int, int]] = {
    1024: 27,
    2048: 54,
    4096: 109,
    8192: 218,
    16384: 438,
    32768: 881,
}
"""SEAL's ``CoeffModulus::MaxBitCount`` for 128-bit classical security."""

MIN_PRIME_BITS: Final = 20
MAX_PRIME_BITS: Final = 60
"""SEAL builds coefficient primes of at most 60 bits; below 20 bits suitable primes run out."""

MIN_SCALE_BITS: Final = 35
"""Smallest accepted ``global_scale_bits``.

Measured on TenSEAL 0.3.18 (N=8192): a fresh ciphertext decodes with an absolute error of about
2^13 / scale, and a sum of k ciphertexts with about sqrt(k) times that. At 2^35 a sum of ten parties
is still within 1e-6 (7e-7 measured); at 2^30 it is 2e-5 and at 2^25 it is 8e-4.
"""


class HEParams(BaseModel):
    """CKKS parameters shared by every party and the aggregation server.

    Parameters
    ----------
    poly_modulus_degree
        Ring dimension N, a power of two in ``SUPPORTED_POLY_MODULUS_DEGREES``. One ciphertext holds
        N values (``slots``): N / 2 complex slots, each carrying a real and an imaginary part.
    coeff_mod_bit_sizes
        Bit sizes of the coefficient primes: first, middle (one per multiplicative level), special.
    global_scale_bits
        log2 of the CKKS scale; sets the fixed-point precision of every encrypted value.

    Notes
    -----
    The server only adds ciphertexts (clients weight their updates in plaintext before encrypting),
    so no rescaling happens; still at least one middle prime is required so the parameters stay
    usable for one plaintext-scalar multiply. Total coefficient bits above SEAL's limit for N would
    drop below 128-bit security and are refused here rather than deep inside SEAL.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 40, 60)
    global_scale_bits: int = 40

    @field_validator("poly_modulus_degree")
    @classmethod
    def _check_degree(cls, value: int) -> int:
        if value not in SUPPORTED_POLY_MODULUS_DEGREES:
            raise ValueError(
                "poly_modulus_degree must be a power of two in "
                f"{list(SUPPORTED_POLY_MODULUS_DEGREES)}; got {value}"
            )
        return value

    @field_validator("coeff_mod_bit_sizes")
    @classmethod
    def _check_primes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(value) < 3:
            raise ValueError(
                "coeff_mod_bit_sizes must list at least 3 primes (first, >= 1 middle, special) "
                f"for multiplicative depth >= 1; got {len(value)}: {list(value)}"
            )
        bad = [bits for bits in value if not MIN_PRIME_BITS <= bits <= MAX_PRIME_BITS]
        if bad:
            raise ValueError(
                f"coeff_mod_bit_sizes must each be in [{MIN_PRIME_BITS}, {MAX_PRIME_BITS}] bits; "
                f"got {bad} in {list(value)}"
            )
        return value

    @field_validator("global_scale_bits")
    @classmethod
    def _check_scale(cls, value: int) -> int:
        if value < MIN_SCALE_BITS:
            raise ValueError(
                f"global_scale_bits must be >= {MIN_SCALE_BITS} (CKKS noise is about 2^13 / scale "
                "per ciphertext, so a smaller scale loses 1e-6 precision when many parties are "
                f"summed); got {value}"
            )
        return value

    @model_validator(mode="after")
    def _check_combination(self) -> HEParams:
        limit = MAX_COEFF_MODULUS_BITS[self.poly_modulus_degree]
        total = sum(self.coeff_mod_bit_sizes)
        if total > limit:
            raise ValueError(
                f"coeff_mod_bit_sizes must sum to <= {limit} bits for poly_modulus_degree="
                f"{self.poly_modulus_degree} (SEAL 128-bit security); got {total} from "
                f"{list(self.coeff_mod_bit_sizes)}"
            )
        middle = self.coeff_mod_bit_sizes[1:-1]
        if self.global_scale_bits > min(middle):
            raise ValueError(
                f"global_scale_bits must be <= the smallest middle prime ({min(middle)} bits of "
                f"{list(self.coeff_mod_bit_sizes)}) so a rescale keeps the value; "
                f"got {self.global_scale_bits}"
            )
        return self

    @property
    def slots(self) -> int:
        """Number of real values one ciphertext holds (N: two per complex CKKS slot)."""
        return self.poly_modulus_degree

    @property
    def global_scale(self) -> float:
        """The CKKS scale as a float, ``2 ** global_scale_bits``."""
        return float(2**self.global_scale_bits)


def parse_he_params(values: Mapping[str, object]) -> HEParams:
    """Build ``HEParams`` from config values, turning pydantic's report into one ``HEParamsError``.

    Parameters
    ----------
    values
        Field values, e.g. a ``[tool.fedrisk.he]`` table or the artifact's ``he_params``.

    Returns
    -------
    HEParams
        The validated parameters.

    Raises
    ------
    HEParamsError
        Listing every problem found.
    """
    try:
        return HEParams.model_validate(dict(values))
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'he_params'}: {err['msg']}"
            for err in e.errors()
        )
        raise HEParamsError(f"invalid CKKS parameters: {problems}") from e
