"""Audit log: one JSON line per request on stdout, never any request or response content."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import TextIO

from secureai.pii import Redactor

MAX_PATH_CHARS = 256


class ClientHasher:
    """sha256 of a client identity with a random per-process salt (unlinkable across restarts)."""

    def __init__(self, salt: bytes | None = None) -> None:
        self._salt = salt if salt is not None else os.urandom(16)

    def __call__(self, identity: str) -> str:
        return hashlib.sha256(self._salt + identity.encode("utf-8", "surrogatepass")).hexdigest()


class AuditLog:
    def __init__(self, redactor: Redactor, out: TextIO | None = None) -> None:
        self._redactor = redactor
        self._out = out if out is not None else sys.stdout

    def safe_path(self, path: str) -> str:
        """The path without query string, redacted, then truncated: routes, not content.

        Redaction comes first: a cut first could leave part of a value no detector matches.
        """
        return self._redactor.redact(path.split("?", 1)[0])[:MAX_PATH_CHARS]

    def write(
        self,
        *,
        client: str,
        method: str,
        path: str,
        status: int,
        bytes_in: int,
        bytes_out: int,
        started: float,
        redactions: dict[str, int],
        rejected: str | None = None,
        upstream_error: str | None = None,
    ) -> None:
        record = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "client": client,
            "method": method if method.isalpha() and len(method) <= 16 else "OTHER",
            "path": self.safe_path(path),
            "status": status,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "redactions": dict(sorted(redactions.items())),
            "rejected": rejected,
            "upstream_error": upstream_error,
        }
        try:
            self._out.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._out.flush()
        except (OSError, ValueError):
            pass  # a closed stdout must not take requests down
