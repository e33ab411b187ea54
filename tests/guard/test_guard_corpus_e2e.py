"""Held-out corpus rows through the real guard process, in four transports: what the client
receives equals the in-process redaction of the whole text."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path

import aiohttp
import pytest

from conftest import GuardProc
from secureai.pii import Redactor

CORPUS = Path(__file__).resolve().parents[1] / "data" / "guard_corpus_v2.jsonl"
REDACTOR = Redactor(custom=[("employee_id", "EMP-[0-9]{6}")])


def _rows(n: int) -> list[str]:
    rows = [json.loads(x) for x in CORPUS.read_text().splitlines() if x.strip()]
    held = [r["text"] for r in rows if r["split"] == "heldout"]
    return random.Random(15).sample(held, n)


def _content(how: str, raw: bytes) -> str:
    if how == "json":
        return str(json.loads(raw)["choices"][0]["message"]["content"])
    if how == "ndjson":
        return "".join(json.loads(x)["response"] for x in raw.decode().splitlines() if x.strip())
    if how == "sse":
        out = ""
        for block in raw.decode().split("\n\n"):
            if block.startswith("data: {"):
                out += json.loads(block[6:])["choices"][0]["delta"].get("content", "")
        return out
    return raw.decode()


@pytest.mark.parametrize("how", ["json", "sse", "ndjson", "text"])
async def test_heldout_rows_end_to_end(guard: GuardProc, how: str) -> None:
    ctx = guard.ca.client_context() if guard.ca else None
    conn = aiohttp.TCPConnector(ssl=ctx if ctx else False)
    async with aiohttp.ClientSession(connector=conn) as s:
        for text in _rows(120):
            hdr = {"X-Client-Id": uuid.uuid4().hex, "Content-Type": "text/plain"}
            url = f"{guard.url}/replay?as={how}"
            async with s.post(url, data=text.encode(), headers=hdr) as r:
                assert r.status == 200
                got = _content(how, await r.read())
            assert got == REDACTOR.redact(text), (how, text)
