"""CKKS key files: secret/public split, file modes, kind checks on load, no key material leaks."""

from __future__ import annotations

import os
import pickle
import re
import stat
from pathlib import Path

import numpy as np
import pytest

from secure_agg.codec import decrypt_vector, encrypt_vector
from secure_agg.errors import (
    CodecError,
    KeyFileError,
    PublicContextError,
    SecretContextRefusedError,
)
from secure_agg.keys import (
    CkksContext,
    KeyPaths,
    context_from_bytes,
    generate_context,
    load_public_context,
    load_secret_context,
    public_context,
    public_context_bytes,
    secret_context_bytes,
    write_atomics,
)
from secure_agg.params import HEParams

SMALL = HEParams(poly_modulus_degree=4096, coeff_mod_bit_sizes=(37, 35, 37), global_scale_bits=35)


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, KeyPaths]:
    directory = tmp_path_factory.mktemp("keys")
    return directory, write_atomics(HEParams(), directory)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_files_have_owner_only_secret_and_readable_public(
    key_dir: tuple[Path, KeyPaths],
) -> None:
    directory, paths = key_dir

    assert _mode(paths.secret) == 0o600
    assert _mode(paths.public) == 0o644
    assert paths.secret.parent == directory
    assert sorted(p.name for p in directory.iterdir()) == ["ckks.public.ctx", "ckks.secret.ctx"]


def test_secret_file_mode_ignores_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        paths = write_atomics(SMALL, tmp_path, stem="party")
    finally:
        os.umask(old)

    assert _mode(paths.secret) == 0o600


def test_loaders_return_the_right_kind(key_dir: tuple[Path, KeyPaths]) -> None:
    _, paths = key_dir

    secret = load_secret_context(paths.secret)
    public = load_public_context(paths.public)

    assert secret.kind == "secret"
    assert public.kind == "public"
    assert not public.has_secret_key
    assert not public.has_galois_keys
    assert public.slots == secret.slots == 8192


def test_public_file_carries_no_relin_or_galois_keys(key_dir: tuple[Path, KeyPaths]) -> None:
    _, paths = key_dir

    # parameters + public key only; with relinearization keys it would be ~1.9 MB
    assert paths.public.stat().st_size < 600_000
    assert paths.secret.stat().st_size < 800_000


def test_server_loader_refuses_a_secret_context(key_dir: tuple[Path, KeyPaths]) -> None:
    _, paths = key_dir

    with pytest.raises(SecretContextRefusedError) as info:
        load_public_context(paths.secret)

    message = str(info.value)
    assert str(paths.secret) in message
    assert "must never hold the CKKS secret key" in message


def test_party_loader_refuses_a_public_context(key_dir: tuple[Path, KeyPaths]) -> None:
    _, paths = key_dir

    with pytest.raises(KeyFileError, match="must hold a secret CKKS context"):
        load_secret_context(paths.public)


def test_public_context_with_galois_keys_is_refused() -> None:
    ctx = generate_context(SMALL)
    ctx._raw.generate_galois_keys()  # only to build the forbidden case
    data = ctx._raw.serialize(save_secret_key=False, save_galois_keys=True)

    with pytest.raises(KeyFileError, match="without Galois keys"):
        context_from_bytes(data, expect="public")


@pytest.mark.parametrize("loader", [load_secret_context, load_public_context])
def test_missing_file_names_the_path(tmp_path: Path, loader: object) -> None:
    path = tmp_path / "nope.ctx"

    with pytest.raises(KeyFileError, match=re.escape(str(path))):
        loader(path)  # type: ignore[operator]


@pytest.mark.parametrize("loader", [load_secret_context, load_public_context])
def test_corrupted_file_names_the_path(
    key_dir: tuple[Path, KeyPaths], tmp_path: Path, loader: object
) -> None:
    _, paths = key_dir
    broken = tmp_path / "broken.ctx"
    broken.write_bytes(paths.public.read_bytes()[:-1000])

    with pytest.raises(KeyFileError, match=re.escape(str(broken))):
        loader(broken)  # type: ignore[operator]


def test_existing_key_files_are_not_overwritten(key_dir: tuple[Path, KeyPaths]) -> None:
    directory, paths = key_dir
    before = paths.secret.read_bytes()

    with pytest.raises(KeyFileError, match="must not exist already"):
        write_atomics(HEParams(), directory)

    assert paths.secret.read_bytes() == before


def test_bytes_round_trip_and_kind_checks() -> None:
    ctx = generate_context(SMALL)

    secret = context_from_bytes(secret_context_bytes(ctx), expect="secret")
    public = context_from_bytes(public_context_bytes(ctx), expect="public")

    assert secret.kind == "secret"
    assert public.kind == "public"
    with pytest.raises(KeyFileError):
        context_from_bytes(public_context_bytes(ctx), expect="secret")
    with pytest.raises(SecretContextRefusedError):
        context_from_bytes(secret_context_bytes(ctx), expect="public")
    with pytest.raises(KeyFileError, match="unparseable"):
        context_from_bytes(b"not a context", expect="public")
    with pytest.raises(PublicContextError):
        secret_context_bytes(public)


def test_public_side_encrypts_and_adds_but_cannot_decrypt(key_dir: tuple[Path, KeyPaths]) -> None:
    _, paths = key_dir
    secret = load_secret_context(paths.secret)
    public = load_public_context(paths.public)
    vec = np.array([1.5, -2.0, 3.25])
    chunks = encrypt_vector(public, vec)

    with pytest.raises(PublicContextError) as info:
        decrypt_vector(public, chunks, length=3)
    # the raw TenSEAL context refuses too: the secret key really is absent
    with pytest.raises(ValueError, match="Secret key"):
        public._raw.secret_key()

    assert isinstance(info.value, ValueError)
    np.testing.assert_allclose(decrypt_vector(secret, chunks, length=3), vec, atol=1e-6)


def test_repr_shows_no_key_material_and_pickling_is_refused() -> None:
    ctx = generate_context(SMALL)

    text = repr(ctx)

    assert text == "CkksContext(kind='secret', poly_modulus_degree=4096)"
    assert repr(public_context(ctx)) == "CkksContext(kind='public', poly_modulus_degree=4096)"
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(ctx)
    assert isinstance(ctx, CkksContext)


def test_party_and_server_ciphertexts_add_up(key_dir: tuple[Path, KeyPaths]) -> None:
    # Parties encrypt with the secret key (seeded); a public context encrypts with the public key.
    _, paths = key_dir
    secret = load_secret_context(paths.secret)
    public = load_public_context(paths.public)
    a, b = np.linspace(-5.0, 5.0, 8192), np.linspace(3.0, -1.0, 8192)
    from_party, from_public = secret.encrypt(a), public.encrypt(b)

    total = public.add([from_party, from_public, secret.encrypt(a)])

    np.testing.assert_allclose(secret.decrypt(total, expected_size=8192), 2 * a + b, atol=1e-6)
    # Seeded: the random half of a party's ciphertext travels as a seed.
    assert len(from_party) < 0.6 * len(from_public)
    assert len(from_party) < 150_000  # 8192 values, against 331 KB per 4096 in TenSEAL's vectors


def test_values_too_large_for_the_level_are_refused_by_name() -> None:
    ctx = generate_context(HEParams())
    limit = ctx.max_abs_value

    assert limit == 2.0 ** (60 + 40 - 40 - 1 - 10)
    ctx.encrypt(np.array([limit * 0.99, -limit * 0.99]))
    with pytest.raises(CodecError, match=r"must be below .* in magnitude"):
        ctx.encrypt(np.array([1.0, -limit]))


def test_ciphertext_at_another_level_or_scale_is_refused() -> None:
    import tenseal.sealapi as sealapi

    from secure_agg.keys import _chunk, _save

    ctx = generate_context(HEParams())
    seal_ctx = ctx._raw.seal_context().data
    encoder = sealapi.CKKSEncoder(seal_ctx)
    encryptor = sealapi.Encryptor(seal_ctx, ctx._raw.secret_key().data)

    def made(parms_id: object, scale: float) -> bytes:
        plain = sealapi.Plaintext()
        encoder.encode([1.0, 2.0], parms_id, scale, plain)
        return _chunk(_save(encryptor.encrypt_symmetric(plain)), 2)

    top = made(seal_ctx.first_parms_id(), 2.0**40)
    other_scale = made(seal_ctx.last_context_data().prev_context_data().parms_id(), 2.0**30)

    with pytest.raises(CodecError, match="at the protocol's level"):
        ctx.decrypt(top, expected_size=2)
    with pytest.raises(CodecError, match="scale must be 2\\^40"):
        ctx.add([other_scale, ctx.encrypt(np.array([1.0, 2.0]))])


def test_ciphertexts_round_trip_through_a_temp_file_where_memfd_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import secure_agg.keys as keys

    monkeypatch.setattr(keys, "_MEMFD", False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(keys.tempfile, "tempdir", None)  # re-read TMPDIR
    ctx = generate_context(SMALL)
    vec = np.array([0.5, -1.25, 8.0])

    total = ctx.add([ctx.encrypt(vec), ctx.encrypt(vec), ctx.encrypt(vec)])

    np.testing.assert_allclose(ctx.decrypt(total, expected_size=3), 3 * vec, atol=1e-6)
    assert list(tmp_path.iterdir()) == []  # every scratch file removed
