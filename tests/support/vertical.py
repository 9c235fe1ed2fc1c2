"""Helpers for vertical-federation tests: decrypt a ciphertext with a chosen party's key."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import tenseal as ts


def decrypt_with(secret_context: bytes, chunk: bytes) -> npt.NDArray[np.float64]:
    """What the holder of ``secret_context`` reads from ``chunk`` (garbage under another key)."""
    ctx = ts.context_from(secret_context)
    return np.asarray(ts.ckks_vector_from(ctx, chunk).decrypt(), dtype=np.float64)
