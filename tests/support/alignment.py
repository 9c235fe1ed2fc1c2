"""Party workspaces for alignment tests: phone columns in each party's own spelling."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fedrisk.federation.identifiers import normalise_phone
from fedrisk.release.identity import generate_signing_key, save_private_key, save_public_key


def spelled(number: int, style: int) -> str:
    """Customer ``number``'s mobile number as different parties write it."""
    digits = f"138{number:08d}"
    return [digits, f"+86 {digits[:3]}-{digits[3:7]}-{digits[7:]}", f"0086{digits}"][style % 3]


def canonical(column: Sequence[str]) -> list[str]:
    """The normalised form of each number."""
    return [normalise_phone(v) for v in column]


def write_alignment_workspace(
    root: Path, columns: Mapping[str, Sequence[str]], *, order: Sequence[str]
) -> Path:
    """``root/parties/party_<i>/`` for each party of ``order``: a ``train.csv`` with its
    ``phone`` column and a ``party.toml`` naming one shared secret-context file (the key
    material the federation's identifier key is derived from), the party's own signing key and
    the roster of every party's verify key (``root/roster/<party>.pub``)."""
    root.mkdir(parents=True, exist_ok=True)
    roster = root / "roster"
    roster.mkdir()
    secret = root / "context.secret"
    secret.write_bytes(hashlib.sha512(b"the federation's sealed secret context").digest())
    for pid, name in enumerate(order):
        folder = root / "parties" / f"party_{pid}"
        folder.mkdir(parents=True)
        frame = pd.DataFrame({"phone": list(columns[name]), "x": np.arange(len(columns[name]))})
        frame.to_csv(folder / "train.csv", index=False)
        signing = generate_signing_key()
        save_private_key(signing, folder / "signing.key")
        save_public_key(signing.public_key(), roster / f"{name}.pub")
        (folder / "party.toml").write_text(
            f'name = "{name}"\ntrain = "train.csv"\ntest = "train.csv"\n'
            f'schema_file = "schema.toml"\nsecret_context = "{secret}"\n'
            f'signing_key = "signing.key"\nroster = "{roster}"\n',
            encoding="utf-8",
        )
    return root
