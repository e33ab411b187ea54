"""One unambiguous KEK format for key files, ``--key-env`` and Secret data (issue 14 item 4)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secureai.cli.crypto_cmds import main
from secureai.crypto import KEY_FORMS, InvalidKeyError, format_kek, generate_kek, load_kek

KEK = bytes(range(32))
B64_BODY = re.compile(rb"[A-Za-z0-9+/]{43}=")


def _accepted_forms(data: bytes) -> bytes | None:
    """The key an input denotes under the documented format, or None (an independent oracle)."""
    text = set(range(0x20, 0x7F)) | {9, 10, 13}
    if len(data) == 32 and not set(data) <= text:
        return data
    line = data[:-1] if data.endswith(b"\n") else data
    for prefix in (b"base64:", b"hex:"):
        if line.startswith(prefix):
            body = line[len(prefix) :]
            try:
                if prefix == b"base64:":
                    key = base64.b64decode(body, validate=True)
                else:
                    key = bytes.fromhex(body.decode("ascii"))
            except (ValueError, UnicodeDecodeError):
                return None
            canonical = base64.b64encode(key) if prefix == b"base64:" else key.hex().encode()
            ok = len(key) == 32 and canonical == (body if prefix == b"base64:" else body.lower())
            return key if ok else None
    if B64_BODY.fullmatch(line) and base64.b64encode(base64.b64decode(line)) == line:
        return base64.b64decode(line)
    return None


# The examples: each used to become a key silently.
AMBIGUOUS = {
    "32-char passphrase": b"correct horse battery staple!!!!",
    "128-bit key as 32 hex chars": bytes(range(16)).hex().encode(),
    "31 chars plus newline": b"a" * 31 + b"\n",
    "31 chars without newline": b"a" * 31,
    "bare 64 hex digits": KEK.hex().encode(),
    "base64 with spaces": b"  " + base64.b64encode(KEK) + b"  \n",
    "urlsafe base64": base64.urlsafe_b64encode(b"\xfb" * 32),
    "base64 of 16 bytes": b"base64:" + base64.b64encode(bytes(16)),
    "hex of 16 bytes": b"hex:" + bytes(16).hex().encode(),
    "33 raw bytes": KEK + b"\n",
}


@pytest.mark.parametrize("material", AMBIGUOUS.values(), ids=AMBIGUOUS.keys())
def test_ambiguous_material_is_rejected_with_the_expected_form(material: bytes) -> None:
    assert len(material) != 32 or set(material) <= set(range(0x20, 0x7F)) | {10}
    with pytest.raises(InvalidKeyError) as exc:
        load_kek(material)
    message = str(exc.value)
    assert "\n" not in message and KEY_FORMS in message
    assert material.strip().decode() not in message


def test_accepted_forms_and_keygen_output() -> None:
    assert load_kek(KEK) == KEK
    assert load_kek(b"base64:" + base64.b64encode(KEK)) == KEK
    assert load_kek(b"base64:" + base64.b64encode(KEK) + b"\n") == KEK
    assert load_kek(b"hex:" + KEK.hex().upper().encode() + b"\n") == KEK
    assert load_kek(format_kek(KEK)) == KEK
    # keygen before this version wrote the bare base64 line: it keeps working
    assert load_kek(base64.b64encode(KEK) + b"\n") == KEK


@given(st.binary(max_size=80))
def test_any_input_is_a_key_only_in_a_documented_form(data: bytes) -> None:
    expected = _accepted_forms(data)
    try:
        key = load_kek(data)
    except InvalidKeyError as exc:
        assert expected is None
        assert "\n" not in str(exc) and KEY_FORMS in str(exc)
        return
    assert key == expected and len(key) == 32


@given(st.binary(min_size=32, max_size=32))
def test_generated_forms_round_trip(key: bytes) -> None:
    assert load_kek(format_kek(key)) == key
    assert load_kek(b"hex:" + key.hex().encode()) == key


def _cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str
) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("material", "ok"),
    [
        (b"base64:" + base64.b64encode(KEK) + b"\n", True),
        (b"hex:" + KEK.hex().encode(), True),
        (AMBIGUOUS["32-char passphrase"], False),
        (AMBIGUOUS["128-bit key as 32 hex chars"], False),
        (AMBIGUOUS["31 chars plus newline"], False),
    ],
)
def test_key_file_key_env_and_secret_data_follow_one_rule(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    material: bytes,
    ok: bool,
) -> None:
    src = tmp_path / "plain"
    src.write_bytes(b"x" * 100)
    # a Secret's data value is base64 of the file content; the pod sees the decoded bytes
    secret_value = base64.b64encode(material).decode()
    mounted = tmp_path / "secret-kek"
    mounted.write_bytes(base64.b64decode(secret_value))
    monkeypatch.setenv("KEK", material.decode())
    results = []
    for i, key_args in enumerate((["--key", str(mounted)], ["--key-env", "KEK"])):
        out_path = tmp_path / f"enc{i}"
        code, out, err = _cli(capsys, monkeypatch, "dataset", "encrypt", *key_args, str(src),
                              str(out_path))  # fmt: skip
        results.append(code)
        if ok:
            assert (code, err) == (0, "")
        else:
            assert code == 2 and out == "" and len(err.splitlines()) == 1
            assert "expected 32 raw bytes, or one line 'base64:" in err
            assert not out_path.exists()
    assert len(set(results)) == 1


def test_keygen_writes_the_prefixed_form(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "k"
    assert main(["dataset", "keygen", "--out", str(path)]) == 0
    capsys.readouterr()
    data = path.read_bytes()
    assert re.fullmatch(rb"base64:[A-Za-z0-9+/]{43}=\n", data)
    assert len(load_kek(path)) == 32
    assert generate_kek() != load_kek(path)
