"""Regression tests for claims a review showed untested (issue 19): each fails on the broken code.

- a fresh data key per file (a constant data key passed every envelope test);
- model verification refuses a symlink the signer did not see, by that check's own message;
- `dataset encrypt|decrypt` onto an existing destination leaves its bytes intact.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from secureai.cli.crypto_cmds import main as crypto_main
from secureai.crypto import envelope
from secureai.crypto.signing import SignatureError, generate_signing_key, sign_model, verify_model

KEK = bytes(range(32))
PLAINTEXT = b"the same plaintext, twice " * 100


def _wrapped_dek(blob: bytes) -> bytes:
    """The wrapped data key, read from the documented header layout (docs/crypto.md)."""
    start = envelope._FIXED.size + envelope.KEK_ID_SIZE
    return blob[start : start + envelope.WRAPPED_SIZE]


def _dek(blob: bytes, kek: bytes = KEK) -> bytes:
    return aes_key_unwrap(kek, _wrapped_dek(blob))


def _encrypt(data: bytes) -> bytes:
    out = io.BytesIO()
    envelope.encrypt_stream(io.BytesIO(data), out, KEK)
    return out.getvalue()


def test_each_encryption_draws_a_fresh_data_key() -> None:
    first, second = _encrypt(PLAINTEXT), _encrypt(PLAINTEXT)
    # AES key wrap is deterministic: a reused data key would give the same wrapped bytes
    assert _wrapped_dek(first) != _wrapped_dek(second)
    assert _dek(first) != _dek(second)
    assert len(_dek(first)) == envelope.DEK_SIZE
    assert KEK not in (_dek(first), _dek(second))
    body = envelope.HEADER_SIZE
    assert first[body:] != second[body:]
    # and both still decrypt to the same plaintext
    for blob in (first, second):
        out = io.BytesIO()
        envelope.decrypt_stream(io.BytesIO(blob), out, KEK)
        assert out.getvalue() == PLAINTEXT


def test_every_file_of_a_tree_has_its_own_data_key(tmp_path: Path) -> None:
    src = tmp_path / "plain"
    (src / "sub").mkdir(parents=True)
    names = ["a.bin", "b.bin", "sub/c.bin", "sub/d.bin"]
    for name in names:
        (src / name).write_bytes(PLAINTEXT)  # same bytes in every file
    dst = tmp_path / "enc"
    envelope.encrypt_dir(src, dst, KEK)
    deks = [_dek((dst / name).read_bytes()) for name in names]
    assert len(set(deks)) == len(names)
    one = tmp_path / "one.enc"
    envelope.encrypt_file(src / "a.bin", one, KEK)
    assert _dek(one.read_bytes()) not in deks


@pytest.fixture
def twin_model(tmp_path: Path) -> Path:
    """A model with two identical files: one can become a symlink to the other and every
    digest still matches, so only the symlink check can refuse it."""
    root = tmp_path / "model"
    (root / "weights").mkdir(parents=True)
    (root / "config.json").write_text('{"layers": 2}\n')
    (root / "weights" / "a.bin").write_bytes(bytes(range(256)) * 8)
    (root / "weights" / "b.bin").write_bytes(bytes(range(256)) * 8)
    return root


def test_symlink_the_signer_did_not_see_is_refused_by_its_own_check(twin_model: Path) -> None:
    keys = generate_signing_key()
    signed = sign_model(twin_model, keys.private_key_pem)
    assert verify_model(twin_model, keys.public_key_pem).digest == signed.digest
    (twin_model / "weights" / "b.bin").unlink()
    (twin_model / "weights" / "b.bin").symlink_to("a.bin")
    with pytest.raises(SignatureError) as err:
        verify_model(twin_model, keys.public_key_pem)
    assert str(err.value) == "model contains symlinks but was signed without any"


def test_a_model_signed_with_its_symlink_still_verifies(twin_model: Path) -> None:
    """The positive control: the refusal above is about an unsigned symlink, not any link."""
    (twin_model / "weights" / "b.bin").unlink()
    (twin_model / "weights" / "b.bin").symlink_to("a.bin")
    keys = generate_signing_key()
    signed = sign_model(twin_model, keys.private_key_pem)
    assert verify_model(twin_model, keys.public_key_pem).digest == signed.digest


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    path = tmp_path / "kek.b64"
    path.write_bytes(base64.b64encode(KEK) + b"\n")
    return path


@pytest.mark.parametrize("verb", ["encrypt", "decrypt"])
def test_existing_destination_is_left_intact(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, keyfile: Path, verb: str
) -> None:
    src = tmp_path / "data"
    src.write_bytes(b"payload" * 100)
    if verb == "decrypt":
        envelope.encrypt_file(src, tmp_path / "data.enc", KEK)
        src = tmp_path / "data.enc"
    dst = tmp_path / "existing"
    kept = b"precious bytes that must survive\n" * 10
    dst.write_bytes(kept)
    dst.chmod(0o640)
    code = crypto_main(["dataset", verb, "--key", str(keyfile), str(src), str(dst)])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert "already exists" in err
    assert dst.read_bytes() == kept
    assert dst.stat().st_mode & 0o777 == 0o640


# --- from crypto mutants that survived the sampled mutation run (docs/testing.md) ----------


def test_a_wrong_length_kek_is_refused_with_its_reason() -> None:
    with pytest.raises(envelope.InvalidKeyError) as err:
        envelope.encrypt_stream(io.BytesIO(b"x"), io.BytesIO(), b"k" * 16)
    assert str(err.value) == "KEK must be exactly 32 bytes (use load_kek to decode base64 or hex)"


def test_bare_hex_key_is_refused_with_the_prefix_hint() -> None:
    with pytest.raises(envelope.InvalidKeyError) as err:
        envelope.load_kek(KEK.hex().encode() + b"\n")
    assert "hex text needs the 'hex:' prefix" in str(err.value)
    assert KEK.hex() not in str(err.value)  # never echoes key material


def test_a_header_cut_right_after_its_fixed_part_reports_what_it_can_read() -> None:
    """Exactly the fixed part (magic, version, algorithm, chunk size) of a version-2 file: the
    version is readable, so that is the error, not "truncated"."""
    fixed = envelope._FIXED.pack(envelope.MAGIC, 2, envelope.ALG_AES256GCM_STREAM_KW, 1024)
    with pytest.raises(envelope.UnsupportedVersionError) as err:
        envelope.read_header(io.BytesIO(fixed))
    assert str(err.value) == "unsupported envelope version 2 (this build reads version 1)"
    with pytest.raises(envelope.TruncatedError):
        envelope.read_header(io.BytesIO(fixed[:-1]))


def test_decrypting_reader_keeps_returning_nothing_after_the_end() -> None:
    reader = envelope.DecryptingReader(io.BytesIO(_encrypt(PLAINTEXT)), KEK)
    buf = bytearray(4096)
    got = b""
    while n := reader.readinto(buf):
        got += bytes(buf[:n])
    assert got == PLAINTEXT
    assert reader.readinto(buf) == 0
    assert reader.readinto(buf) == 0


def test_the_bundle_is_written_through_a_temporary_file_beside_it(
    twin_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Atomic publication needs the temporary file in the destination's directory (a rename
    across file systems is a copy, or fails)."""
    import tempfile  # noqa: PLC0415 - spied on below

    dirs: list[str | None] = []
    real = tempfile.mkstemp

    def spy(*args: object, **kw: object) -> tuple[int, str]:
        dirs.append(kw.get("dir"))  # type: ignore[arg-type]
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    signed = sign_model(twin_model, generate_signing_key().private_key_pem)
    assert dirs and all(Path(str(d)) == signed.bundle_path.parent for d in dirs)


def test_an_encrypted_private_key_asks_for_its_password(twin_model: Path) -> None:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(SignatureError) as err:
        sign_model(twin_model, pem)
    assert str(err.value) == "private key is encrypted: a password is required"


def _fixed(version: int = envelope.VERSION, alg: int = 1, chunk: int = 1024) -> bytes:
    return envelope._FIXED.pack(envelope.MAGIC, version, alg, chunk)


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        (b"", envelope.EnvelopeFormatError, "not a secureai envelope (bad magic)"),
        (envelope.MAGIC[:-1], envelope.EnvelopeFormatError, "not a secureai envelope (bad magic)"),
        (b"x" * 100, envelope.EnvelopeFormatError, "not a secureai envelope (bad magic)"),
        (envelope.MAGIC, envelope.TruncatedError, "envelope truncated inside its header"),
        (_fixed()[:-1], envelope.TruncatedError, "envelope truncated inside its header"),
        (_fixed(), envelope.TruncatedError, "envelope truncated inside its header"),
        (_fixed(alg=9) + bytes(80), envelope.EnvelopeFormatError,
         "unsupported envelope algorithm 9"),
        (
            _fixed(chunk=envelope.MAX_CHUNK_SIZE + 1) + bytes(80),
            envelope.HeaderTamperedError,
            f"envelope header is corrupt (chunk size {envelope.MAX_CHUNK_SIZE + 1})",
        ),
        (
            _fixed(chunk=envelope.MIN_CHUNK_SIZE - 1) + bytes(80),
            envelope.HeaderTamperedError,
            f"envelope header is corrupt (chunk size {envelope.MIN_CHUNK_SIZE - 1})",
        ),
    ],
    ids=["empty", "short-magic", "not-magic", "magic-only", "fixed-cut", "fixed-only",
         "algorithm", "chunk-too-large", "chunk-too-small"],
)  # fmt: skip
def test_each_header_defect_has_its_own_error(
    raw: bytes, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as err:
        envelope.read_header(io.BytesIO(raw))
    assert type(err.value) is error
    assert str(err.value) == message


@pytest.mark.parametrize("chunk", [envelope.MIN_CHUNK_SIZE, envelope.MAX_CHUNK_SIZE])
def test_the_chunk_size_bounds_are_inclusive(chunk: int) -> None:
    info = envelope.read_header(io.BytesIO(_fixed(chunk=chunk) + bytes(envelope.HEADER_SIZE)))
    assert info.chunk_size == chunk


def test_the_header_names_the_kek_it_was_encrypted_under() -> None:
    info = envelope.read_header(io.BytesIO(_encrypt(b"x")))
    assert info.kek_id == envelope.kek_id(KEK)
    assert (info.version, info.chunk_size) == (envelope.VERSION, envelope.DEFAULT_CHUNK_SIZE)
