"""Streamed answers of every common server shape, split at every character boundary.

The guard finds the text of a stream by its JSON path, whatever the field is called, and
reassembles it per stream; a value split across events must come out redacted exactly as if
the whole text had arrived at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from secureai.guard.stream import NDJSONStream, SSEStream
from secureai.pii import Redactor

REDACTOR = Redactor()
TEXT = (
    "Mail jane.doe@example.com or +44 20 7946 0958; card 4111 1111 1111 1111, "
    "token ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5 ok"
)
EXPECTED = REDACTOR.redact(TEXT)


@dataclass(frozen=True)
class Shape:
    name: str
    sse: bool
    event: Callable[[str, int], dict[str, Any]]
    text_of: Callable[[dict[str, Any]], str]
    last: list[dict[str, Any]]  # terminal events after the fragments
    done: bool = False  # "data: [DONE]" at the end (OpenAI-style)
    sse_event_name: str | None = None


def _get(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], str]:
    def get(obj: dict[str, Any]) -> str:
        cur: Any = obj
        for p in path:
            try:
                cur = cur[p]
            except (KeyError, IndexError, TypeError):
                return ""
        return cur if isinstance(cur, str) else ""

    return get


SHAPES = [
    Shape(
        "openai-chat",
        True,
        lambda f, i: {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": f}, "finish_reason": None}],
        },
        _get(("choices", 0, "delta", "content")),
        [{"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}],
        done=True,
    ),
    Shape(
        "openai-responses",
        True,
        lambda f, i: {
            "type": "response.output_text.delta",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": f,
            "sequence_number": i,
        },
        lambda o: o.get("delta", "") if o.get("type", "").endswith(".delta") else "",
        [
            {
                "type": "response.output_text.done",
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "text": TEXT,
            }
        ],
        sse_event_name="response.output_text.delta",
    ),
    Shape(
        "anthropic",
        True,
        lambda f, i: {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": f},
        },
        _get(("delta", "text")),
        [{"type": "content_block_stop", "index": 0}, {"type": "message_stop"}],
    ),
    Shape(
        "ollama",
        False,
        lambda f, i: {
            "model": "m",
            "created_at": f"2026-11-29T19:00:{i % 60:02d}Z",
            "response": f,
            "done": False,
        },
        _get(("response",)),
        [{"model": "m", "created_at": "2026-11-29T19:01:00Z", "response": "", "done": True}],
    ),
    Shape(
        "ollama-chat",
        False,
        lambda f, i: {"model": "m", "message": {"role": "assistant", "content": f}, "done": False},
        _get(("message", "content")),
        [{"model": "m", "message": {"role": "assistant", "content": ""}, "done": True}],
    ),
    Shape(
        "tgi",
        True,
        lambda f, i: {
            "index": i,
            "token": {"id": 100 + i, "text": f, "logprob": -0.5, "special": False},
            "generated_text": None,
            "details": None,
        },
        _get(("token", "text")),
        [
            {
                "index": 999,
                "token": {"id": 2, "text": "", "logprob": 0.0, "special": True},
                "generated_text": TEXT,
                "details": None,
            }
        ],
    ),
    Shape(
        "vllm-completions",
        True,
        lambda f, i: {
            "id": "cmpl-1",
            "object": "text_completion",
            "model": "m",
            "choices": [{"index": 0, "text": f, "logprobs": None, "finish_reason": None}],
        },
        _get(("choices", 0, "text")),
        [{"id": "cmpl-1", "choices": [{"index": 0, "text": "", "finish_reason": "length"}]}],
        done=True,
    ),
    Shape(
        "kserve-v2",
        True,
        lambda f, i: {"model_name": "m", "model_version": "1", "text_output": f},
        _get(("text_output",)),
        [],
    ),
    Shape(
        "triton",
        True,
        lambda f, i: {
            "model_name": "m",
            "model_version": "1",
            "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [1], "data": [f]}],
        },
        _get(("outputs", 0, "data", 0)),
        [],
    ),
]


def _body(shape: Shape, fragments: list[str]) -> bytes:
    events = [shape.event(f, i) for i, f in enumerate(fragments)] + shape.last
    if not shape.sse:
        return b"".join(json.dumps(e).encode() + b"\n" for e in events)
    out = []
    for e in events:
        head = f"event: {e.get('type', shape.sse_event_name)}\n" if shape.sse_event_name else ""
        out.append((head + "data: " + json.dumps(e) + "\n\n").encode())
    if shape.done:
        out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def _events(shape: Shape, out: bytes) -> list[dict[str, Any]]:
    if not shape.sse:
        return [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    objs = []
    for block in out.decode().split("\n\n"):
        data = [ln[6:] for ln in block.splitlines() if ln.startswith("data: ")]
        if data and data[0] != "[DONE]":
            objs.append(json.loads("\n".join(data)))
    return objs


def _run(shape: Shape, fragments: list[str], chunk: int = 0) -> list[dict[str, Any]]:
    body = _body(shape, fragments)
    flt = SSEStream(REDACTOR, {}) if shape.sse else NDJSONStream(REDACTOR, {})
    if chunk:
        out = b"".join(flt.feed(body[i : i + chunk]) for i in range(0, len(body), chunk))
    else:
        out = flt.feed(body)
    return _events(shape, out + flt.flush())


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_split_at_every_character_boundary(shape: Shape) -> None:
    for i in range(1, len(TEXT)):
        objs = _run(shape, [TEXT[:i], TEXT[i:]])
        assert "".join(shape.text_of(o) for o in objs) == EXPECTED, (shape.name, i)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_one_character_per_event(shape: Shape) -> None:
    objs = _run(shape, list(TEXT), chunk=7)
    assert "".join(shape.text_of(o) for o in objs) == EXPECTED
    # Structure is kept: every event that went in comes out, with the same keys.
    assert len(objs) >= len(TEXT)
    first_in = shape.event("x", 0)
    assert set(objs[0]) == set(first_in)
    # Metadata is never shifted between events.
    for o in objs:
        for k in ("id", "model", "model_name", "type", "created_at"):
            if k in o and k in first_in and k != "created_at":
                assert o[k] == first_in[k] or o[k] in {e.get(k) for e in shape.last}


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_complete_copies_of_the_text_are_redacted(shape: Shape) -> None:
    objs = _run(shape, [TEXT[:10], TEXT[10:]])
    for o in objs:
        blob = json.dumps(o)
        for value in ("jane.doe", "4111 1111", "7946 0958", "ghp_aB3d"):
            assert value not in blob, (shape.name, o)
