"""The error hierarchy of the secure_agg package."""

from __future__ import annotations


class SecureAggError(Exception):
    """Base class of every error raised by ``secure_agg``."""


class HEParamsError(SecureAggError, ValueError):
    """CKKS parameters cannot hold the required precision or multiplicative depth."""


class KeyFileError(SecureAggError, ValueError):
    """A context file is missing, unreadable, of the wrong kind, or holds a forbidden secret key."""


class SecretContextRefusedError(KeyFileError):
    """A server-side loader was handed a context that holds a secret key."""


class CodecError(SecureAggError, ValueError):
    """Ciphertext bytes are corrupted, truncated or do not match the expected layout."""


class AggregationError(SecureAggError, ValueError):
    """Encrypted updates cannot be summed: mismatched shapes, contexts or too few parties."""


class PublicContextError(SecureAggError, ValueError):
    """An operation that needs the secret key (decrypt) was given a public context."""
