"""The real guard process on awkward traffic: content it cannot inspect, headers, text/plain
carrying SSE or JSON escapes, and prompts redacted before they reach the model."""

from __future__ import annotations

import codecs
import json
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from conftest import AWS_KEY, CARD, EMAIL, GuardProc, Upstream, start_guard, wait_until


@pytest.fixture(scope="module")
def traffic_guard(
    upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GuardProc]:
    g = start_guard(
        tmp_path_factory.mktemp("traffic"),
        upstream.port,
        tls=False,
        redact_request_bodies=True,
        allow_uninspectable_paths=["/v2/models/*/infer"],
    )
    yield g
    g.stop()


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), auto_decompress=False)


def _hdr(**extra: str) -> dict[str, str]:
    return {"X-Client-Id": uuid.uuid4().hex, **extra}


def _audit_lines(g: GuardProc) -> list[dict[str, Any]]:
    return [json.loads(x) for x in g.stdout.read_text().splitlines() if x.startswith("{")]


def _audit_for(g: GuardProc, path: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        found[:] = [x for x in _audit_lines(g) if x["path"] == path]
        return bool(found)

    wait_until(seen, 10, f"audit line for {path}")
    return found[-1]


@pytest.mark.parametrize("path", ["/binary", "/encoded"])
async def test_uninspectable_response_refused_with_audit_line(
    traffic_guard: GuardProc, path: str
) -> None:
    async with _session() as s, s.get(traffic_guard.url + path, headers=_hdr()) as r:
        assert r.status == 502
        body = await r.json()
        raw = await r.read()
    assert body["reason"] == "uninspectable_response"
    assert CARD.encode() not in raw
    line = _audit_for(traffic_guard, path)
    assert line["status"] == 502 and line["rejected"] == "uninspectable_response"


async def test_binary_under_a_json_type_is_refused(traffic_guard: GuardProc) -> None:
    async with _session() as s, s.get(traffic_guard.url + "/mislabelled", headers=_hdr()) as r:
        assert r.status == 502
        assert CARD.encode() not in await r.read()


async def test_allowed_path_passes_binary_through(traffic_guard: GuardProc) -> None:
    url = traffic_guard.url + "/v2/models/m/infer"
    async with _session() as s, s.get(url, headers=_hdr()) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert (await r.read()).startswith(b"\x00\x01Contact")


async def test_response_headers_are_redacted(traffic_guard: GuardProc) -> None:
    url = traffic_guard.url + "/leaky-headers"
    async with _session() as s, s.get(url, headers=_hdr()) as r:
        assert r.status == 200
        assert r.headers["X-Debug-User"] == "[REDACTED:email]"
        assert AWS_KEY not in r.headers["X-Trace"]


async def test_text_plain_carrying_sse_is_reassembled(traffic_guard: GuardProc) -> None:
    async with _session() as s, s.get(traffic_guard.url + "/plain-sse", headers=_hdr()) as r:
        text = (await r.read()).decode()
    content = ""
    for block in text.split("\n\n"):
        if block.startswith("data: {"):
            content += json.loads(block[6:])["choices"][0]["delta"].get("content", "")
    assert CARD not in content and EMAIL not in content
    assert "[REDACTED:payment_card]" in content and "[REDACTED:email]" in content


async def test_text_plain_with_json_escapes_is_inspected(traffic_guard: GuardProc) -> None:
    url = traffic_guard.url + "/plain-json-escapes"
    async with _session() as s, s.get(url, headers=_hdr()) as r:
        body = json.loads(await r.read())
    assert body == {"card": "[REDACTED:payment_card]"}


PROMPT = {"messages": [{"role": "user", "content": f"I am {EMAIL}, card {CARD}"}]}


@pytest.mark.parametrize(
    ("ctype", "data"),
    [
        ("application/json", json.dumps(PROMPT).encode()),
        ("application/json", b"  \n" + json.dumps(PROMPT).encode()),
        ("application/json", codecs.BOM_UTF16_LE + json.dumps(PROMPT).encode("utf-16-le")),
        ("application/x-www-form-urlencoded", f"q=I am {EMAIL}&card={CARD}".encode()),
        ("text/plain", f"I am {EMAIL}, card {CARD}".encode()),
    ],
    ids=["json", "leading-space", "utf16-bom", "form", "text"],
)
async def test_request_bodies_redacted_before_the_model(
    traffic_guard: GuardProc, upstream: Upstream, ctype: str, data: bytes
) -> None:
    probe = uuid.uuid4().hex
    url = traffic_guard.url + "/record"
    hdr = _hdr(**{"Content-Type": ctype, "X-Probe": probe})
    async with _session() as s, s.post(url, data=data, headers=hdr) as r:
        assert r.status == 200
    got = upstream.seen[probe]
    text = got.decode("utf-16") if got.startswith(codecs.BOM_UTF16_LE) else got.decode()
    for value in (EMAIL, CARD, "jane.doe%40example.com", CARD.replace(" ", "+")):
        assert value not in text, text
    assert "REDACTED" in text
    if "json" in ctype:
        parsed = json.loads(text.strip())
        assert parsed["messages"][0]["role"] == "user"
