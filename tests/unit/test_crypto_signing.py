"""Model signing: manifest, signature bundle, fail-closed verification, model-signing interop."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from secureai.crypto import fingerprint
from secureai.crypto import signing as sg
from secureai.crypto.signing import (
    BUNDLE_FILENAME,
    SignatureError,
    canonical_manifest,
    generate_signing_key,
    hash_model,
    sign_model,
    verify_model,
)

KEYS = generate_signing_key()
OTHER = generate_signing_key()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "weights").mkdir(parents=True)
    (root / "config.json").write_text('{"layers": 2}\n')
    (root / "weights" / "layer0.bin").write_bytes(bytes(range(256)) * 40)
    (root / "weights" / "layer1.bin").write_bytes(b"\x00" * 5000)
    (root / "empty").write_bytes(b"")
    return root


def _sign(model: Path, **kw: Any) -> Path:
    return sign_model(model, KEYS.private_key_pem, **kw).bundle_path


def _verify(model: Path, bundle: Path | None = None, key: bytes = KEYS.public_key_pem) -> Any:
    return verify_model(model, key, bundle)


def test_sign_and_verify(model: Path) -> None:
    signed = sign_model(model, KEYS.private_key_pem)
    assert signed.bundle_path == model / BUNDLE_FILENAME
    assert signed.files == 4
    assert signed.signer_fingerprint == KEYS.fingerprint == fingerprint(KEYS.public_key_pem)
    verified = _verify(model)
    assert verified.digest == signed.digest
    assert verified.signer_fingerprint == KEYS.fingerprint
    assert verified.files == 4


def test_digest_is_sha256_of_the_canonical_manifest(model: Path) -> None:
    digests, has_links = hash_model(model)
    assert not has_links
    assert list(digests) == sorted(digests)
    assert digests["empty"] == hashlib.sha256(b"").hexdigest()
    manifest = canonical_manifest(digests)
    assert json.loads(manifest)["files"][0] == {
        "path": "config.json",
        "sha256": digests["config.json"],
    }
    signed = sign_model(model, KEYS.private_key_pem, bundle_path=model.parent / "a.json")
    assert signed.digest == "sha256:" + hashlib.sha256(manifest).hexdigest()
    # The digest names the content, not the signature: re-signing (another key) keeps it.
    again = sign_model(model, OTHER.private_key_pem, bundle_path=model.parent / "other.json")
    assert again.digest == signed.digest
    assert again.signer_fingerprint != signed.signer_fingerprint


def test_bundle_outside_the_model(model: Path, tmp_path: Path) -> None:
    bundle = _sign(model, bundle_path=tmp_path / "sig.json")
    assert not (model / BUNDLE_FILENAME).exists()
    assert _verify(model, bundle).files == 4
    with pytest.raises(SignatureError, match="bundle not found"):
        _verify(model)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda m: (m / "config.json").write_text('{"layers": 3}\n'), "modified: config.json"),
        (lambda m: (m / "empty").write_bytes(b"\x00"), "modified: empty"),
        (lambda m: (m / "weights" / "layer1.bin").unlink(), "missing: weights/layer1.bin"),
        (lambda m: (m / "extra.py").write_text("import os"), "unexpected: extra.py"),
        (
            lambda m: (
                (m / "weights" / "sub").mkdir() or (m / "weights" / "sub" / "x").write_bytes(b"")
            ),
            "unexpected: weights/sub/x",
        ),
        (lambda m: (m / "config.json").rename(m / "config2.json"), "missing: config.json"),
    ],
    ids=["modified", "modified-empty", "removed", "added", "added-nested", "renamed"],
)
def test_tampered_model_fails(model: Path, change: Any, reason: str) -> None:
    _sign(model)
    change(model)
    with pytest.raises(SignatureError, match=reason):
        _verify(model)


def test_appended_byte_in_large_file_detected(model: Path) -> None:
    _sign(model)
    with (model / "weights" / "layer0.bin").open("ab") as fh:
        fh.write(b"\x00")
    with pytest.raises(SignatureError, match=r"modified: weights/layer0\.bin"):
        _verify(model)


def test_wrong_key_fails(model: Path) -> None:
    _sign(model)
    with pytest.raises(SignatureError, match="wrong key"):
        _verify(model, key=OTHER.public_key_pem)


def test_wrong_key_without_key_hint_fails(model: Path) -> None:
    bundle = _sign(model)
    doc = json.loads(bundle.read_text())
    del doc["verificationMaterial"]["publicKey"]
    bundle.write_text(json.dumps(doc))
    assert _verify(model).files == 4
    with pytest.raises(SignatureError, match="signature does not verify"):
        _verify(model, key=OTHER.public_key_pem)


def _rewrite(bundle: Path, edit: Any) -> None:
    doc = json.loads(bundle.read_text())
    edit(doc)
    bundle.write_text(json.dumps(doc))


def _edit_payload(doc: dict[str, Any], edit: Any) -> None:
    env = doc["dsseEnvelope"]
    statement = json.loads(base64.b64decode(env["payload"]))
    edit(statement)
    env["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()


def test_forged_manifest_fails(model: Path) -> None:
    """Editing the signed manifest to match a tampered file breaks the signature."""
    bundle = _sign(model)
    (model / "config.json").write_text("evil")
    evil = hashlib.sha256(b"evil").hexdigest()

    def forge(st: dict[str, Any]) -> None:
        for res in st["predicate"]["resources"]:
            if res["name"] == "config.json":
                res["digest"] = evil

    _rewrite(bundle, lambda d: _edit_payload(d, forge))
    with pytest.raises(SignatureError, match="signature does not verify"):
        _verify(model)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b"\xff\xfe", "not JSON"),
        (b'{"mediaType": "x"}', "mediaType"),
    ],
)
def test_malformed_bundle_file_fails(model: Path, content: bytes, reason: str) -> None:
    _sign(model)
    (model / BUNDLE_FILENAME).write_bytes(content)
    with pytest.raises(SignatureError, match=reason):
        _verify(model)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda d: d.pop("dsseEnvelope"), "dsseEnvelope"),
        (lambda d: d["dsseEnvelope"].update(payload="***"), "not base64"),
        (lambda d: d["dsseEnvelope"].update(payloadType="text/plain"), "payloadType"),
        (lambda d: d["dsseEnvelope"]["signatures"].clear(), "exactly one signature"),
        (
            lambda d: d["dsseEnvelope"]["signatures"].append(d["dsseEnvelope"]["signatures"][0]),
            "exactly one signature",
        ),
        (lambda d: d["dsseEnvelope"]["signatures"][0].update(sig="AAAA"), "does not verify"),
        (lambda d: d["dsseEnvelope"]["signatures"][0].pop("sig"), "'sig'"),
        (lambda d: d["verificationMaterial"]["publicKey"].update(hint="00"), "wrong key"),
    ],
)
def test_malformed_bundle_structure_fails(model: Path, edit: Any, reason: str) -> None:
    bundle = _sign(model)
    _rewrite(bundle, edit)
    with pytest.raises(SignatureError, match=reason):
        _verify(model)


def test_truncated_bundle_fails(model: Path) -> None:
    bundle = _sign(model)
    raw = bundle.read_bytes()
    for cut in (1, len(raw) // 2, len(raw) - 3):
        bundle.write_bytes(raw[:cut])
        with pytest.raises(SignatureError, match="malformed bundle"):
            _verify(model)


def test_verifier_checks_manifest_consistency(model: Path) -> None:
    """A manifest signed with bad entries is still refused (defence in depth)."""
    private = serialization.load_pem_private_key(KEYS.private_key_pem, None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)

    def resign(edit: Any) -> None:
        bundle = _sign(model)
        doc = json.loads(bundle.read_text())
        st = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
        edit(st)
        payload = json.dumps(st).encode()
        sig = private.sign(sg._pae(payload), ec.ECDSA(sg.hashes.SHA256()))
        doc["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
        doc["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(sig).decode()
        bundle.write_text(json.dumps(doc))

    resign(lambda st: st["subject"][0]["digest"].update(sha256="0" * 64))
    with pytest.raises(SignatureError, match="subject digest"):
        _verify(model)
    resign(lambda st: st["predicate"]["resources"][0].update(name="../outside"))
    with pytest.raises(SignatureError, match="invalid path"):
        _verify(model)
    resign(lambda st: st["predicate"]["serialization"].update(method="shards"))
    with pytest.raises(SignatureError, match="unsupported bundle"):
        _verify(model)
    resign(lambda st: st.update(predicateType="https://example.com/other"))
    with pytest.raises(SignatureError, match="predicateType"):
        _verify(model)


def test_symlink_escaping_the_model_is_refused(model: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    (model / "leak").symlink_to(secret)
    with pytest.raises(SignatureError, match="symlink escapes the model directory: leak"):
        _sign(model)
    (model / "leak").unlink()
    _sign(model)
    (model / "weights" / "up").symlink_to("../../secret.txt")
    with pytest.raises(SignatureError, match="escapes"):
        _verify(model)


def test_internal_symlink_is_hashed_as_its_target(model: Path) -> None:
    (model / "alias.bin").symlink_to("weights/layer0.bin")
    signed = sign_model(model, KEYS.private_key_pem)
    assert signed.files == 5
    assert _verify(model).files == 5
    (model / "weights" / "layer0.bin").write_bytes(b"changed")
    with pytest.raises(SignatureError, match=r"modified: alias\.bin, weights/layer0\.bin"):
        _verify(model)


def test_symlink_added_after_signing_fails(model: Path) -> None:
    _sign(model)
    (model / "config.json").rename(model / "real.json")
    (model / "config.json").symlink_to("real.json")
    with pytest.raises(SignatureError):
        _verify(model)


def test_directory_symlinks_and_dangling_links_are_refused(model: Path) -> None:
    (model / "dirlink").symlink_to("weights")
    with pytest.raises(SignatureError, match="symlinked directories"):
        _sign(model)
    (model / "dirlink").unlink()
    (model / "dangling").symlink_to("nope")
    with pytest.raises(SignatureError, match="dangling"):
        _sign(model)


def test_git_metadata_is_ignored_like_model_signing(model: Path) -> None:
    (model / ".git").mkdir()
    (model / ".git" / "HEAD").write_text("ref: main")
    (model / ".gitattributes").write_text("*.bin lfs")
    signed = sign_model(model, KEYS.private_key_pem)
    assert signed.files == 4
    (model / ".git" / "HEAD").write_text("changed")
    assert _verify(model).digest == signed.digest
    strict = sign_model(model, KEYS.private_key_pem, ignore_git_paths=False)
    assert strict.files == 6


def test_key_requirements(model: Path) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    pem = p384.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(SignatureError, match="P-256"):
        sign_model(model, pem)
    rsa_pub = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    _sign(model)
    with pytest.raises(SignatureError, match="P-256"):
        _verify(model, key=rsa_pub)
    with pytest.raises(SignatureError, match="not a PEM public key"):
        _verify(model, key=b"garbage")
    with pytest.raises(SignatureError, match="not a PEM private key"):
        sign_model(model, b"garbage")
    with pytest.raises(SignatureError, match="model directory not found"):
        _verify(model / "missing")


def test_encrypted_private_key(model: Path) -> None:
    pair = generate_signing_key(password=b"s3cret")
    assert b"ENCRYPTED" in pair.private_key_pem
    with pytest.raises(SignatureError, match="password is required"):
        sign_model(model, pair.private_key_pem)
    sign_model(model, pair.private_key_pem, password=b"s3cret")
    assert verify_model(model, pair.public_key_pem).signer_fingerprint == pair.fingerprint


def test_bundle_is_model_signing_key_format(model: Path) -> None:
    doc = json.loads(_sign(model).read_text())
    assert doc["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert doc["verificationMaterial"]["tlogEntries"] == []
    hint = hashlib.sha256(KEYS.public_key_pem).hexdigest()
    assert doc["verificationMaterial"]["publicKey"]["hint"] == hint
    env = doc["dsseEnvelope"]
    assert env["payloadType"] == "application/vnd.in-toto+json"
    st = json.loads(base64.b64decode(env["payload"]))
    assert st["_type"] == "https://in-toto.io/Statement/v1"
    assert st["predicateType"] == "https://model_signing/signature/v1.0"
    assert st["subject"][0]["name"] == "model"
    ser = st["predicate"]["serialization"]
    assert ser["method"] == "files"
    assert ser["hash_type"] == "sha256"
    assert BUNDLE_FILENAME in ser["ignore_paths"]
    names = [r["name"] for r in st["predicate"]["resources"]]
    assert names == ["config.json", "empty", "weights/layer0.bin", "weights/layer1.bin"]
    root = hashlib.sha256(
        b"".join(bytes.fromhex(r["digest"]) for r in st["predicate"]["resources"])
    ).hexdigest()
    assert st["subject"][0]["digest"]["sha256"] == root


# Made with the reference tool (model-signing 1.1.1):
#   model_signing sign key --private_key k.pem --signature model.sig model
# over model/config.json = "fixture model config\n", model/weights/layer0.bin = b"\0\1\2\3weights".
UPSTREAM_PUBLIC_KEY = b"""-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEBcDGWQQmDNv/xp8lPkJcVLlFuFzq
h+n0MylaKROb4RGl1lg5BLK0gR9m0t00SEQZkUo4K38MlUIwDzWrS/gEdQ==
-----END PUBLIC KEY-----
"""
UPSTREAM_BUNDLE = {
    "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
    "verificationMaterial": {
        "publicKey": {"hint": "439a8870e75fb00735ec43953fb4335868d2a8be98f1850a3ffdc6ed62ba709f"},
        "tlogEntries": [],
    },
    "dsseEnvelope": {
        "payload": (
            "ewogICJfdHlwZSI6ICJodHRwczovL2luLXRvdG8uaW8vU3RhdGVtZW50L3YxIiwKICAic3ViamVjdCI6IFsKICAg"
            "IHsKICAgICAgIm5hbWUiOiAibW9kZWwiLAogICAgICAiZGlnZXN0IjogewogICAgICAgICJzaGEyNTYiOiAiMzIz"
            "ZWYyNjRiNTg2Y2FhZGNmMTQzM2EzYzg5MWU1Y2RkNTY2ODU2NDVmNDkyZGUzNTU5ZmI0NDQzMmMyNDU1MiIKICAg"
            "ICAgfQogICAgfQogIF0sCiAgInByZWRpY2F0ZVR5cGUiOiAiaHR0cHM6Ly9tb2RlbF9zaWduaW5nL3NpZ25hdHVy"
            "ZS92MS4wIiwKICAicHJlZGljYXRlIjogewogICAgInNlcmlhbGl6YXRpb24iOiB7CiAgICAgICJoYXNoX3R5cGUi"
            "OiAic2hhMjU2IiwKICAgICAgIm1ldGhvZCI6ICJmaWxlcyIsCiAgICAgICJpZ25vcmVfcGF0aHMiOiBbCiAgICAg"
            "ICAgIi5naXQiLAogICAgICAgICIuZ2l0aWdub3JlIiwKICAgICAgICAiLmdpdGh1YiIsCiAgICAgICAgIi5naXRh"
            "dHRyaWJ1dGVzIgogICAgICBdLAogICAgICAiYWxsb3dfc3ltbGlua3MiOiBmYWxzZQogICAgfSwKICAgICJyZXNv"
            "dXJjZXMiOiBbCiAgICAgIHsKICAgICAgICAiYWxnb3JpdGhtIjogInNoYTI1NiIsCiAgICAgICAgIm5hbWUiOiAi"
            "Y29uZmlnLmpzb24iLAogICAgICAgICJkaWdlc3QiOiAiMDQ1YWVjMzdlYzA2ZDAyODAyYzk1ZmE0YmYwYzI4MDg5"
            "MmQ0ZmI3ZWJmYmIzNzc1MWFlMTNkZDI1NDcxYTQ4OSIKICAgICAgfSwKICAgICAgewogICAgICAgICJhbGdvcml0"
            "aG0iOiAic2hhMjU2IiwKICAgICAgICAibmFtZSI6ICJ3ZWlnaHRzL2xheWVyMC5iaW4iLAogICAgICAgICJkaWdl"
            "c3QiOiAiNzFiNjRhMjk2ZjViZTRmMDhmMDVjNjBkZDA1MzA0ZmExYTcwNzY4MDFkM2U1ZDNkNmMxODBkY2Q1YmMz"
            "YTU0ZSIKICAgICAgfQogICAgXQogIH0KfQ=="
        ),
        "payloadType": "application/vnd.in-toto+json",
        "signatures": [
            {
                "sig": (
                    "MEQCIBOFxV55fw2cLrIE4PANoWvpxOHuke2fcHdXknOA092DAiBAtipwYmlbxly8CfhmDKbsZD7Cb8HS"
                    "DFQ8wF7N73QaFw=="
                ),
                "keyid": "",
            }
        ],
    },
}


@pytest.fixture
def upstream_model(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "weights").mkdir(parents=True)
    (root / "config.json").write_bytes(b"fixture model config\n")
    (root / "weights" / "layer0.bin").write_bytes(b"\x00\x01\x02\x03weights")
    (tmp_path / "model.sig").write_text(json.dumps(UPSTREAM_BUNDLE))
    return root


def test_verifies_a_bundle_made_by_model_signing(upstream_model: Path) -> None:
    bundle = upstream_model.parent / "model.sig"
    verified = verify_model(upstream_model, UPSTREAM_PUBLIC_KEY, bundle)
    assert verified.files == 2
    assert verified.signer_fingerprint == fingerprint(UPSTREAM_PUBLIC_KEY)
    (upstream_model / "weights" / "layer0.bin").write_bytes(b"\x00\x01\x02\x03weightz")
    with pytest.raises(SignatureError, match=r"modified: weights/layer0\.bin"):
        verify_model(upstream_model, UPSTREAM_PUBLIC_KEY, bundle)
    with pytest.raises(SignatureError, match="wrong key"):
        verify_model(upstream_model, KEYS.public_key_pem, bundle)
