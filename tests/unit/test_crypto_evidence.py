"""Evidence bundles: round trip, every tampered byte refused, wrong keys, deterministic archive."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secureai.crypto import evidence as ev
from secureai.crypto.envelope import generate_kek
from secureai.crypto.signing import generate_signing_key

KEK = generate_kek()
SIGNER = generate_signing_key()
FILES = {
    "index.json": b'{"workloads": []}\n',
    "team-a/SecureInferenceService/web/cr.json": b'{"kind": "SecureInferenceService"}',
    "team-a/SecureInferenceService/web/logs/web-0/guard.log": b"line\n" * 20,
    "team-a/SecureInferenceService/web/empty": b"",
}
META = {"quarantine": "poisoned-model", "collected": "2026-11-30T02:00:00+00:00"}


def _sealed() -> bytes:
    return ev.seal(FILES, KEK, SIGNER.private_key_pem, META)


def test_round_trip_returns_files_and_signed_meta() -> None:
    blob = _sealed()
    files, meta = ev.open_bundle(blob, KEK, SIGNER.public_key_pem)
    assert files == FILES
    assert meta == META
    assert ev.digest(blob) == "sha256:" + hashlib.sha256(blob).hexdigest()


def _parts(blob: bytes) -> tuple[dict[str, object], bytes, int]:
    size = struct.unpack_from(">I", blob, 9)[0]
    return json.loads(blob[13 : 13 + size]), blob[13 + size :], 13 + size


def test_statement_is_in_toto_v1_over_the_ciphertext() -> None:
    blob = _sealed()
    dsse, ciphertext, _ = _parts(blob)
    assert dsse["payloadType"] == "application/vnd.in-toto+json"
    statement = json.loads(base64.b64decode(str(dsse["payload"])))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"][0]["digest"]["sha256"] == hashlib.sha256(ciphertext).hexdigest()
    assert statement["predicate"]["meta"] == META
    assert ev.statement_of(blob, SIGNER.public_key_pem) == statement
    # the plaintext is not visible in the blob
    assert b"SecureInferenceService" not in ciphertext


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_every_tampered_byte_fails_and_returns_nothing(mask: int) -> None:
    blob = _sealed()
    _, _, start = _parts(blob)
    regions: dict[type, int] = {}
    for i in range(len(blob)):
        tampered = bytearray(blob)
        tampered[i] ^= mask
        with pytest.raises(ev.EvidenceError) as info:
            ev.open_bundle(bytes(tampered), KEK, SIGNER.public_key_pem)
        assert "\n" not in str(info.value) and str(info.value)
        regions[type(info.value)] = regions.get(type(info.value), 0) + 1
        if i >= start:  # any ciphertext byte breaks the signed digest
            assert isinstance(info.value, ev.TamperedEvidenceError)
    assert ev.MalformedEvidenceError in regions


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _reframe(blob: bytes, raw: bytes) -> bytes:
    _, ciphertext, _ = _parts(blob)
    return blob[:9] + struct.pack(">I", len(raw)) + raw + ciphertext


def _same_bytes_other_text(text: str) -> str:
    """Base64 text that decodes to the same bytes (an unused low bit set before the padding)."""
    body = text.rstrip("=")
    last = _B64[_B64.index(body[-1]) ^ 1]
    other = body[:-1] + last + text[len(body) :]
    assert base64.b64decode(other) == base64.b64decode(text) and other != text
    return other


@pytest.mark.parametrize("field", ["payload", "sig"])
def test_non_canonical_base64_is_refused(field: str) -> None:
    for _ in range(50):  # until the field has padding (an unused bit exists)
        blob = _sealed()
        dsse, _, _ = _parts(blob)
        holder = dsse if field == "payload" else dsse["signatures"][0]  # type: ignore[index]
        if str(holder[field]).endswith("="):
            break
    holder[field] = _same_bytes_other_text(str(holder[field]))
    raw = json.dumps(dsse, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(ev.MalformedEvidenceError, match="canonical base64"):
        ev.open_bundle(_reframe(blob, raw), KEK, SIGNER.public_key_pem)


def test_non_canonical_json_is_refused() -> None:
    blob = _sealed()
    dsse, _, _ = _parts(blob)
    raw = json.dumps(dsse, sort_keys=True, indent=1).encode()  # same object, other bytes
    with pytest.raises(ev.MalformedEvidenceError, match="not canonical"):
        ev.open_bundle(_reframe(blob, raw), KEK, SIGNER.public_key_pem)


def test_truncated_or_extended_bundle_fails() -> None:
    blob = _sealed()
    for cut in (0, 4, 12, 13, len(blob) // 2, len(blob) - 1):
        with pytest.raises(ev.EvidenceError):
            ev.open_bundle(blob[:cut], KEK, SIGNER.public_key_pem)
    with pytest.raises(ev.TamperedEvidenceError):
        ev.open_bundle(blob + b"\x00", KEK, SIGNER.public_key_pem)


def test_wrong_public_key_is_named() -> None:
    other = generate_signing_key()
    with pytest.raises(ev.WrongSignerError, match="signed by a different key"):
        ev.open_bundle(_sealed(), KEK, other.public_key_pem)


def test_resigned_statement_with_another_key_fails_even_with_a_forged_keyid() -> None:
    """An attacker re-signs with their key and writes the expected key id: the signature fails."""
    blob = _sealed()
    other = generate_signing_key()
    forged = ev.seal(FILES, KEK, other.private_key_pem, META)
    dsse, ciphertext, _ = _parts(forged)
    good, _, _ = _parts(blob)
    dsse["signatures"][0]["keyid"] = good["signatures"][0]["keyid"]  # type: ignore[index]
    raw = json.dumps(dsse, sort_keys=True, separators=(",", ":")).encode()
    rebuilt = blob[:9] + struct.pack(">I", len(raw)) + raw + ciphertext
    with pytest.raises(ev.SignatureMismatchError, match="does not verify"):
        ev.open_bundle(rebuilt, KEK, SIGNER.public_key_pem)


def test_wrong_kek_fails_with_key_error() -> None:
    with pytest.raises(ev.EvidenceKeyError, match="wrong key"):
        ev.open_bundle(_sealed(), generate_kek(), SIGNER.public_key_pem)


def test_bad_key_material_is_refused() -> None:
    with pytest.raises(ev.EvidenceKeyError):
        ev.seal(FILES, b"short", SIGNER.private_key_pem, META)
    with pytest.raises(ev.EvidenceKeyError):
        ev.seal(FILES, KEK, b"not a key", META)
    with pytest.raises(ev.EvidenceKeyError):
        ev.open_bundle(_sealed(), KEK, b"not a key")


@pytest.mark.parametrize(
    "name", ["", "/abs", "a/../b", "a//b", "./a", "a/", ".", "a\\b", "x\x00y", ev.MANIFEST_NAME]
)
def test_unsafe_or_reserved_names_are_refused(name: str) -> None:
    with pytest.raises(ev.EvidenceError):
        ev.seal({name: b"x"}, KEK, SIGNER.private_key_pem, {})


def test_a_file_and_a_folder_of_the_same_name_are_refused() -> None:
    with pytest.raises(ev.EvidenceError, match="both a file and a directory"):
        ev.seal({"a": b"1", "a/b": b"2"}, KEK, SIGNER.private_key_pem, {})


def test_archive_is_deterministic_and_normalised() -> None:
    first = ev.archive(FILES)
    assert first == ev.archive(dict(reversed(list(FILES.items()))))
    with tarfile.open(fileobj=io.BytesIO(first), mode="r:gz") as tar:
        members = tar.getmembers()
        manifest = json.loads(tar.extractfile(members[0]).read())  # type: ignore[union-attr]
    assert [m.name for m in members] == [ev.MANIFEST_NAME, *sorted(FILES)]
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o644)
    assert {f["path"]: f["sha256"] for f in manifest["files"]} == {
        n: hashlib.sha256(d).hexdigest() for n, d in FILES.items()
    }


def test_two_seals_differ_only_by_their_random_data_key() -> None:
    a, b = _sealed(), _sealed()
    assert a != b
    assert ev.open_bundle(a, KEK, SIGNER.public_key_pem) == ev.open_bundle(
        b, KEK, SIGNER.public_key_pem
    )


_segment = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\\\x00"),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in {".", ".."})


@st.composite
def file_sets(draw: st.DrawFn) -> dict[str, bytes]:
    paths = draw(st.lists(st.lists(_segment, min_size=1, max_size=3), max_size=8))
    names = {"/".join(p) for p in paths} - {ev.MANIFEST_NAME}
    # no name may be a folder of another
    names = {n for n in names if not any(o.startswith(n + "/") for o in names)}
    return {n: draw(st.binary(max_size=300)) for n in sorted(names)}


@settings(max_examples=60, deadline=None)
@given(files=file_sets(), meta=st.dictionaries(st.text(max_size=8), st.text(max_size=8)))
def test_any_file_set_round_trips(files: dict[str, bytes], meta: dict[str, str]) -> None:
    blob = ev.seal(files, KEK, SIGNER.private_key_pem, meta)
    assert ev.open_bundle(blob, KEK, SIGNER.public_key_pem) == (files, meta)
    assert ev.archive(files) == ev.archive(dict(sorted(files.items(), reverse=True)))


@settings(max_examples=60, deadline=None)
@given(files=file_sets(), where=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255))
def test_any_tampered_byte_of_any_bundle_fails(
    files: dict[str, bytes], where: float, mask: int
) -> None:
    blob = bytearray(ev.seal(files, KEK, SIGNER.private_key_pem, {"q": "x"}))
    blob[int(where * len(blob))] ^= mask
    with pytest.raises(ev.EvidenceError):
        ev.open_bundle(bytes(blob), KEK, SIGNER.public_key_pem)
