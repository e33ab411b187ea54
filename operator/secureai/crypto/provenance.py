"""DSSE envelopes over in-toto v1 Statements, signed with an ECDSA P-256 key.

The same envelope (``payloadType`` ``application/vnd.in-toto+json``, PAE v1, one signature)
as the model-signing bundles of :mod:`secureai.crypto.signing`, here bare: a standard DSSE
JSON envelope that any DSSE verifier (securesystemslib, cosign ``verify-blob-attestation``,
in-toto) accepts with the public key. The signature's ``keyid`` is the key's fingerprint.
"""

from __future__ import annotations

import json
from typing import Any, Final

from secureai.crypto.ca import fingerprint
from secureai.crypto.signing import (
    PAYLOAD_TYPE,
    STATEMENT_TYPE,
    SignatureError,
    SignatureMismatchError,
    dsse_sign,
    dsse_verify,
    load_private_key,
    load_public_key,
)

__all__ = [
    "PAYLOAD_TYPE",
    "STATEMENT_TYPE",
    "SignatureError",
    "public_key_fingerprint",
    "sign_statement",
    "verify_envelope",
]

_MAX_ENVELOPE: Final = 1 << 20


def public_key_fingerprint(public_key_pem: bytes) -> str:
    return fingerprint(load_public_key(public_key_pem))


def sign_statement(statement: dict[str, Any], private_key_pem: bytes) -> dict[str, Any]:
    """A DSSE envelope holding ``statement`` (an in-toto v1 Statement), signed; its key id is
    the key's fingerprint."""
    if statement.get("_type") != STATEMENT_TYPE:
        raise SignatureError("not an in-toto v1 statement")
    key = load_private_key(private_key_pem, None)
    return dsse_sign(statement, key, keyid=fingerprint(key.public_key()))


def verify_envelope(
    envelope: dict[str, Any] | bytes | str, public_key_pem: bytes, predicate_type: str
) -> dict[str, Any]:
    """The Statement of a DSSE envelope signed by ``public_key_pem``; fail closed.

    Raises ``SignatureError`` (a one-line, user-safe message) for anything but an envelope
    whose one signature verifies over exactly its payload, an in-toto v1 Statement of
    ``predicate_type``.
    """
    key = load_public_key(public_key_pem)
    if isinstance(envelope, bytes | str):
        if len(envelope) > _MAX_ENVELOPE:
            raise SignatureError("malformed envelope: too large")
        try:
            envelope = json.loads(envelope)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise SignatureError("malformed envelope: not JSON") from None
        if not isinstance(envelope, dict):
            raise SignatureError("malformed envelope: not a JSON object")
    if set(envelope) != {"payloadType", "payload", "signatures"}:
        raise SignatureError("malformed envelope: expected payloadType, payload and signatures")
    signatures = envelope["signatures"]
    entry = signatures[0] if isinstance(signatures, list) and signatures else None
    if not isinstance(entry, dict) or set(entry) - {"keyid", "sig"}:
        raise SignatureError("malformed envelope: invalid signature entry")
    keyid = entry.get("keyid", "")
    if keyid and keyid != fingerprint(key):
        raise SignatureError("wrong key: the envelope was signed by a different key")
    try:
        statement = dsse_verify(envelope, key)
    except SignatureMismatchError:
        raise SignatureError(
            "signature does not verify: the record was modified or signed by another key"
        ) from None
    if statement.get("_type") != STATEMENT_TYPE:
        raise SignatureError("malformed envelope: not an in-toto v1 statement")
    if statement.get("predicateType") != predicate_type:
        raise SignatureError(f"malformed envelope: predicateType is not {predicate_type}")
    subjects = statement.get("subject")
    if (
        not isinstance(subjects, list)
        or not subjects
        or not all(
            isinstance(s, dict) and isinstance(s.get("digest"), dict) and s["digest"]
            for s in subjects
        )
    ):
        raise SignatureError("malformed envelope: every subject needs a digest")
    if not isinstance(statement.get("predicate"), dict):
        raise SignatureError("malformed envelope: missing predicate")
    return statement
