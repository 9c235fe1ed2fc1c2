"""The vertical protocol's messages as plain data: a step name, public metadata, ciphertexts and
masked floats.

A :class:`Packet` is what one vertical step sends or answers. It holds nothing a relay could read
about a party's data: ``enc`` are CKKS ciphertexts (under some party's own key) and ``masked``
are numbers that are either masked sums or public metrics. The Flower transport turns it into a
``RecordDict`` (``secure_agg.vertical_records``); the in-process driver passes it as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

MSG_VERTICAL: Final = "query.vertical"

# Steps, in the order of one mini-batch (docs/vertical.md numbers them).
STEP_SETUP: Final = "setup"
STEP_INSTALL: Final = "install"
STEP_PLAN: Final = "plan"
STEP_SCORES: Final = "scores"
STEP_RESIDUAL: Final = "residual"
STEP_CONVERT: Final = "convert"
STEP_GRADIENT: Final = "gradient"
STEP_UPDATE: Final = "update"
STEP_VALID_SCORES: Final = "valid-scores"
STEP_VALID_CONVERT: Final = "valid-convert"
STEP_VALIDATE: Final = "validate"
STEP_RELEASE: Final = "release"

# Keys inside a packet.
PUBLIC_CONTEXT: Final = "public-context"
X25519: Final = "x25519"
U_FOR_GUEST: Final = "u-under-guest-key"
U_OWN: Final = "u-under-own-key"
ROWS: Final = "row-references"
CONVERT: Final = "masked-for-reencryption"
VALID: Final = "valid"
"""The destination name of validation's re-encrypted scores (training's are named by host)."""
C_ENC: Final = "guest-residual-part"
D4_ENC: Final = "residual4"
PRODUCTS: Final = "masked-products"
SUMS: Final = "flooded-sums"
VALID_AUC: Final = "valid-auc"

Meta = dict[str, int | float | str | bool]


def for_party(key: str, party: str) -> str:
    """The key of ``key`` addressed to (or coming from) ``party``."""
    return f"{key}/{party}"


@dataclass
class Packet:
    """One step's payload."""

    step: str
    meta: Meta = field(default_factory=dict)
    enc: dict[str, list[bytes]] = field(default_factory=dict)
    masked: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)

    def nbytes(self) -> int:
        """Bytes of ciphertexts and floats (the payload a relay carries)."""
        return sum(len(c) for chunks in self.enc.values() for c in chunks) + sum(
            8 * v.size for v in self.masked.values()
        )
