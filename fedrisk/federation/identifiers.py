"""Customer identifiers for vertical federation: normalisation, salted PSI inputs, keyed hashes.

Parties of a vertical federation name the same customer in different spellings ("+86 138-0013-
8000" at the bank, "13800138000" at the operator). Before private set intersection (PSI) or
online scoring, every party brings each identifier to one canonical text with the rules below;
two spellings match exactly when their canonical texts are equal.

Normalisation rules
-------------------
``phone``
    1. Remove spaces, tabs, ``-``, ``.``, ``(``, ``)`` and ``/``.
    2. A leading ``+`` or ``00`` marks an international number: the digits after it are the
       country code and the national number.
    3. Otherwise the number is national: one leading trunk ``0`` is dropped and the
       federation's ``default_country_code`` is put in front.
    4. What remains must be digits only, 8 to 15 of them (E.164's longest is 15).
    The canonical text is ``+`` and those digits. No checksum or numbering-plan check is made.
``national-id``
    1. Remove spaces, tabs, ``-``, ``.`` and ``/``.
    2. Fold case (Unicode NFKC, then upper case: a Chinese resident ID's final ``x`` and ``X``
       are one).
    3. What remains must be ASCII letters and digits, 5 to 32 of them. Check digits are not
       verified: a typo makes a different identifier, never an error.
``opaque``
    An existing shared customer key: Unicode NFKC, surrounding white space removed, then it
    must be non-empty and at most 128 characters. Case is kept.

Every party of a federation must use the same kind and ``default_country_code``; a party's
identifiers must be unique after normalisation (two rows for one customer cannot be aligned).

Notes
-----
Identifiers never cross the wire as text. For PSI each canonical text becomes a 32-byte
:func:`psi_digests` value, salted per federation and domain-separated by kind, which the PSI
then blinds; for online scoring it becomes an HMAC-SHA256 :meth:`IdentifierKey.keyed_hash`
under a key shared among the federation's parties (never the coordinator), so a listener
without the key cannot test guessed phone numbers against it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import stat
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, get_args

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedrisk.errors import FedRiskError
from fedrisk.files import write_atomic

IdentifierKind = Literal["phone", "national-id", "opaque"]
IDENTIFIER_KINDS: Final[tuple[str, ...]] = get_args(IdentifierKind)

DIGEST_BYTES: Final = 32
KEY_BYTES: Final = 32
_PSI_DOMAIN: Final = b"fedrisk/psi-identifier/v1"
_KEY_INFO: Final = b"fedrisk/identifier-key/v1"
_SALT_INFO: Final = b"fedrisk/psi-salt/v1"
_KEY_FORMAT: Final = "fedrisk-identifier-key/v1"

_PHONE_SEPARATORS: Final = re.compile(r"[\s\-.()/]")
_ID_SEPARATORS: Final = re.compile(r"[\s\-./]")
_DIGITS: Final = re.compile(r"[0-9]+")
_ALNUM: Final = re.compile(r"[0-9A-Z]+")
_MAX_EXAMPLES: Final = 5


class IdentifierError(FedRiskError, ValueError):
    """Identifiers cannot be normalised or are not unique; ``problems`` lists each one."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems: list[str] = list(problems)


def normalise_phone(raw: str, *, default_country_code: str = "86") -> str:
    """The canonical ``+<digits>`` form of a phone number (rules in the module docstring).

    Raises
    ------
    IdentifierError
        If the number holds other characters or has too few or too many digits.
    """
    _check_country_code(default_country_code)
    text = _PHONE_SEPARATORS.sub("", unicodedata.normalize("NFKC", str(raw)))
    if text.startswith("+"):
        digits = text[1:]
    elif text.startswith("00"):
        digits = text[2:]
    else:
        digits = default_country_code + (text[1:] if text.startswith("0") else text)
    if not _DIGITS.fullmatch(digits):
        raise IdentifierError(f"phone must be digits after removing separators; got {raw!r}")
    if not 8 <= len(digits) <= 15:
        raise IdentifierError(
            f"phone must have 8 to 15 digits with its country code; got {len(digits)} in {raw!r}"
        )
    return "+" + digits


def normalise_national_id(raw: str) -> str:
    """The canonical upper-case form of a national ID (rules in the module docstring).

    Raises
    ------
    IdentifierError
        If the ID holds other characters or is shorter than 5 or longer than 32.
    """
    text = _ID_SEPARATORS.sub("", unicodedata.normalize("NFKC", str(raw))).upper()
    if not _ALNUM.fullmatch(text):
        raise IdentifierError(
            f"national-id must be ASCII letters and digits after removing separators; got {raw!r}"
        )
    if not 5 <= len(text) <= 32:
        raise IdentifierError(
            f"national-id must have 5 to 32 characters; got {len(text)} in {raw!r}"
        )
    return text


def normalise_opaque(raw: str) -> str:
    """An existing customer key, NFKC-normalised and trimmed.

    Raises
    ------
    IdentifierError
        If it is empty or longer than 128 characters.
    """
    text = unicodedata.normalize("NFKC", str(raw)).strip()
    if not 1 <= len(text) <= 128:
        raise IdentifierError(f"opaque identifier must have 1 to 128 characters; got {raw!r}")
    return text


def normalise_identifier(
    raw: str, kind: IdentifierKind, *, default_country_code: str = "86"
) -> str:
    """One identifier in canonical form.

    Raises
    ------
    IdentifierError
        If it breaks its kind's rules, or ``kind`` is unknown.
    """
    if kind == "phone":
        return normalise_phone(raw, default_country_code=default_country_code)
    if kind == "national-id":
        return normalise_national_id(raw)
    if kind == "opaque":
        return normalise_opaque(raw)
    raise IdentifierError(f"identifier kind must be one of {list(IDENTIFIER_KINDS)}; got {kind!r}")


def normalise_identifiers(
    values: Iterable[object],
    kind: IdentifierKind,
    *,
    default_country_code: str = "86",
    source: str = "identifiers",
) -> list[str]:
    """Every identifier of a party's table in canonical form, in row order.

    Raises
    ------
    IdentifierError
        One error for the whole column, listing every bad or duplicate row (count, rule and
        up to five examples by row number); ``problems`` holds them all.
    """
    if kind not in IDENTIFIER_KINDS:
        raise IdentifierError(
            f"identifier kind must be one of {list(IDENTIFIER_KINDS)}; got {kind!r}"
        )
    _check_country_code(default_country_code)
    canonical: list[str] = []
    problems: list[str] = []
    first_row: dict[str, int] = {}
    for row, value in enumerate(values):
        if value is None or (isinstance(value, float) and value != value):  # NaN: a missing cell
            problems.append(f"row {row}: {kind} is missing")
            canonical.append("")
            continue
        try:
            text = normalise_identifier(str(value), kind, default_country_code=default_country_code)
        except IdentifierError as e:
            problems.append(f"row {row}: {e}")
            canonical.append("")
            continue
        if text in first_row:
            problems.append(f"row {row}: {kind} is the same customer as row {first_row[text]}")
        else:
            first_row[text] = row
        canonical.append(text)
    if problems:
        shown = "".join(f"\n  - {p}" for p in problems[:_MAX_EXAMPLES])
        more = f"\n  ... and {len(problems) - _MAX_EXAMPLES} more" if len(problems) > 5 else ""
        raise IdentifierError(
            f"{source}: {len(problems)} of {len(canonical)} {kind} identifiers must be valid "
            f"and unique after normalisation; got:{shown}{more}",
            problems,
        )
    return canonical


def psi_digests(canonical: Sequence[str], *, kind: IdentifierKind, salt: bytes) -> list[bytes]:
    """The 32-byte PSI input of each canonical identifier: SHA-256 over a domain tag, the
    federation's salt and the kind, each length-prefixed, then the identifier.

    Notes
    -----
    The salt makes a federation's digests useless anywhere else (no cross-federation
    dictionary); the length prefixes keep (salt, kind, id) splits unambiguous. The digests are
    never sent: the PSI blinds them first (:mod:`secure_agg.psi`).
    """
    prefix = hashlib.sha256()
    for part in (_PSI_DOMAIN, salt, kind.encode("ascii")):
        prefix.update(len(part).to_bytes(4, "big") + part)
    out: list[bytes] = []
    for text in canonical:
        h = prefix.copy()
        h.update(text.encode("utf-8"))
        out.append(h.digest())
    return out


@dataclass(frozen=True)
class IdentifierKey:
    """The federation's identifier key: shared by its parties, never by the coordinator.

    Notes
    -----
    Derived with HKDF-SHA256 from secret material every party already holds alike (the CKKS
    secret context the key ceremony sealed to each of them), so no new secret has to be
    distributed and the coordinator, which holds only the public context, cannot derive it.
    The repr never shows the key.
    """

    secret: bytes = field(repr=False)
    federation: str = ""

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise IdentifierError(
                f"identifier key must be {KEY_BYTES} bytes; got {len(self.secret)}"
            )

    @classmethod
    def derive(cls, secret_material: bytes, *, federation: str) -> IdentifierKey:
        """HKDF-SHA256 of ``secret_material``, bound to the federation's name.

        Raises
        ------
        IdentifierError
            If ``secret_material`` is shorter than 32 bytes (too little entropy to trust).
        """
        if len(secret_material) < KEY_BYTES:
            raise IdentifierError(
                f"secret material must be at least {KEY_BYTES} bytes; got {len(secret_material)}"
            )
        hkdf = HKDF(
            algorithm=hashes.SHA256(),
            length=KEY_BYTES,
            salt=federation.encode("utf-8"),
            info=_KEY_INFO,
        )
        return cls(hkdf.derive(secret_material), federation)

    def keyed_hash(self, canonical: str, *, kind: IdentifierKind) -> str:
        """HMAC-SHA256 of a canonical identifier, hex: what online scoring sends for it."""
        message = kind.encode("ascii") + b"\x00" + canonical.encode("utf-8")
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def save(self, path: Path) -> Path:
        """Write the key to ``path`` (mode 0600, atomically), for a service of this party that
        holds no secret context (the lender's scoring service, a host's feature service)."""
        payload = {"format": _KEY_FORMAT, "federation": self.federation, "key": self.secret.hex()}
        return write_atomic(Path(path), json.dumps(payload) + "\n", private=True)

    @classmethod
    def load(cls, path: Path) -> IdentifierKey:
        """Read a key :meth:`save` wrote.

        Raises
        ------
        IdentifierError
            If the file is missing, readable by others than its owner, or not a key file.
        """
        path = Path(path)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise IdentifierError(f"identifier key file {path} must be readable JSON: {e}") from e
        if mode & 0o077:
            raise IdentifierError(
                f"identifier key file {path} must be mode 0600 (owner only); got {mode:04o}"
            )
        if not isinstance(raw, dict) or raw.get("format") != _KEY_FORMAT:
            raise IdentifierError(
                f"identifier key file {path} must have format {_KEY_FORMAT!r}; got another"
            )
        try:
            secret = bytes.fromhex(str(raw["key"]))
        except (KeyError, ValueError) as e:
            raise IdentifierError(f"identifier key file {path} must hold a hex key") from e
        return cls(secret, str(raw.get("federation", "")))

    def psi_salt(self) -> bytes:
        """The federation's PSI salt (secret among the parties too)."""
        return hmac.new(self.secret, _SALT_INFO, hashlib.sha256).digest()


def keyed_hashes(
    values: Iterable[object],
    kind: IdentifierKind,
    *,
    key: IdentifierKey,
    default_country_code: str = "86",
) -> list[str]:
    """Normalise identifiers and return their keyed hashes, in row order.

    Raises
    ------
    IdentifierError
        As :func:`normalise_identifiers`.
    """
    canonical = normalise_identifiers(values, kind, default_country_code=default_country_code)
    return [key.keyed_hash(text, kind=kind) for text in canonical]


def _check_country_code(code: str) -> None:
    if not (_DIGITS.fullmatch(code) and 1 <= len(code) <= 3 and not code.startswith("0")):
        raise IdentifierError(
            f"default_country_code must be 1 to 3 digits not starting with 0; got {code!r}"
        )
