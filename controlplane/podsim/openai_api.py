"""OpenAI-shaped requests and responses of a simulated pod (pure).

A request's lengths come from the request itself:

- prompt tokens: estimated from the text (``prompt`` for completions, a string, a list
  of strings or a list of token ids; ``messages`` for chat, as ``role: content`` lines),
  one token per word or punctuation mark; or ``"sluice_prompt_tokens": N``;
- output tokens: ``max_tokens`` (chat also ``max_completion_tokens``; default
  ``PodSpec.default_max_tokens``), finish reason ``length``; or
  ``"sluice_output_tokens": N`` (capped by ``max_tokens``), finish reason ``stop``;
- prefix-cache blocks: from the prompt's text, or with ``"sluice_prefix": "NAME"`` (and
  ``"sluice_prefix_tokens": N``, default all of the prompt) from a named prefix that
  requests share, the rest of the prompt being the request's own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

from controlplane.podsim.blocks import prefix_block_hashes, text_block_hashes, text_tokens

__all__ = ["Completion", "chunk", "completion_body", "final_usage_chunk", "parse_completion"]


@dataclass(frozen=True)
class Completion:
    chat: bool
    stream: bool
    prompt_tokens: int
    output_tokens: int
    finish_reason: str  # "length" or "stop"
    block_hashes: tuple[int, ...]
    include_usage: bool = False  # stream_options.include_usage


def _count(payload: Mapping[str, object], key: str) -> int | None:
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be an integer >= 1")
    return value


def _chat_text(messages: object) -> str:
    if not isinstance(messages, list):
        raise ValueError("messages must be a list")
    lines = []
    for m in messages:
        if not isinstance(m, dict):
            raise ValueError("each message must be an object")
        content = m.get("content", "")
        if isinstance(content, list):  # content parts
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        lines.append(f"{m.get('role', 'user')}: {content}")
    return "\n".join(lines)


def _prompt_ids(payload: Mapping[str, object], chat: bool) -> list[int]:
    if chat:
        return text_tokens(_chat_text(payload.get("messages", [])))
    prompt = payload.get("prompt", "")
    if isinstance(prompt, str):
        return text_tokens(prompt)
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        return text_tokens("\n".join(str(p) for p in prompt))
    if isinstance(prompt, list) and all(
        isinstance(p, int) and not isinstance(p, bool) for p in prompt
    ):
        return [int(p) for p in prompt]
    raise ValueError("prompt must be a string, a list of strings or a list of token ids")


def parse_completion(
    payload: object, *, chat: bool, block_size: int, default_max_tokens: int, unique: int
) -> Completion:
    """Read a completion request; ValueError with a message for the client."""
    if not isinstance(payload, dict):
        raise ValueError("request body must be a JSON object")
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise ValueError("stream must be true or false")
    options = payload.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    ids = _prompt_ids(payload, chat)
    explicit_prompt = _count(payload, "sluice_prompt_tokens")
    prompt_tokens = explicit_prompt or max(1, len(ids))
    prefix = payload.get("sluice_prefix")
    if prefix is not None and not isinstance(prefix, str):
        raise ValueError("sluice_prefix must be a string")
    prefix_tokens = _count(payload, "sluice_prefix_tokens")
    if prefix or explicit_prompt is not None:
        hashes = prefix_block_hashes(
            prefix, prefix_tokens or prompt_tokens, prompt_tokens, block_size, unique
        )
    else:
        hashes = text_block_hashes(ids, block_size)
    max_tokens = _count(payload, "max_completion_tokens") if chat else None
    max_tokens = max_tokens or _count(payload, "max_tokens")
    wanted = _count(payload, "sluice_output_tokens")
    if wanted is None:
        output, reason = max_tokens or default_max_tokens, "length"
    elif max_tokens is not None and wanted > max_tokens:
        output, reason = max_tokens, "length"
    else:
        output, reason = wanted, "stop"
    return Completion(
        chat=chat,
        stream=stream,
        prompt_tokens=prompt_tokens,
        output_tokens=output,
        finish_reason=reason,
        block_hashes=hashes,
        include_usage=include_usage,
    )


def words(service: str, version: str) -> tuple[str, ...]:
    """The output text, one piece per token, repeated as long as needed."""
    return ("Hello", " from", f" {service}", f" {version}", ". ")


def _text(pieces: tuple[str, ...], start: int, stop: int) -> str:
    return "".join(pieces[i % len(pieces)] for i in range(start, stop))


def _usage(c: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.output_tokens,
        "total_tokens": c.prompt_tokens + c.output_tokens,
    }


def completion_body(
    c: Completion, cid: str, model: str, pieces: tuple[str, ...]
) -> dict[str, object]:
    text = _text(pieces, 0, c.output_tokens)
    base = {"id": cid, "created": int(time.time()), "model": model, "usage": _usage(c)}
    if c.chat:
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": c.finish_reason}
        return {**base, "object": "chat.completion", "choices": [choice]}
    choice = {"index": 0, "text": text, "finish_reason": c.finish_reason}
    return {**base, "object": "text_completion", "choices": [choice]}


def chunk(
    c: Completion, cid: str, model: str, pieces: tuple[str, ...], start: int, stop: int
) -> bytes:
    """SSE events for output tokens ``start`` to ``stop - 1``, one event per token."""
    out = []
    for i in range(start, stop):
        piece = _text(pieces, i, i + 1)
        reason = c.finish_reason if i == c.output_tokens - 1 else None
        if c.chat:
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            choice: dict[str, object] = {"index": 0, "delta": delta, "finish_reason": reason}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": piece, "finish_reason": reason}
            obj = "text_completion"
        body = {"id": cid, "object": obj, "model": model, "choices": [choice]}
        out.append(f"data: {json.dumps(body)}\n\n")
    return "".join(out).encode()


def final_usage_chunk(c: Completion, cid: str, model: str) -> bytes:
    obj = "chat.completion.chunk" if c.chat else "text_completion"
    body = {"id": cid, "object": obj, "model": model, "choices": [], "usage": _usage(c)}
    return f"data: {json.dumps(body)}\n\n".encode()
