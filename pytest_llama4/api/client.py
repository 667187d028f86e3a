"""A thin HTTP client for the suites: raw requests (so malformed bodies can be sent) and SSE parsing."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import requests

REQUEST_TIMEOUT = 60.0  # connect and read, for non-streaming requests
STALL_TIMEOUT = 30.0  # the longest silence a stream may have between two chunks


class StreamStalled(AssertionError):
    """A stream went silent: a hang is a failure with its stall time, not a stall of the whole run."""


@dataclass(frozen=True)
class SseStream:
    """A finished server-sent-events response: its status, content type and `data:` payloads in order."""

    status: int
    content_type: str
    data: tuple[str, ...]
    framing_errors: tuple[str, ...]

    def chunks(self) -> list[dict]:
        """The JSON payloads, without the final `[DONE]` sentinel."""
        return [json.loads(d) for d in self.data if d != "[DONE]"]


def parse_sse(text: str) -> tuple[list[str], list[str]]:
    """(data payloads, framing errors). Events are separated by a blank line; each line is `field: value`."""
    payloads, errors = [], []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in block.split("\n") if line]
        data_lines = []
        for line in lines:
            if line.startswith(":"):
                continue  # SSE comment / keep-alive
            name, sep, value = line.partition(":")
            if not sep or name not in ("data", "event", "id", "retry"):
                errors.append(f"not an SSE field line: {line[:120]!r}")
            elif name == "data":
                data_lines.append(value[1:] if value.startswith(" ") else value)
        if data_lines:
            payloads.append("\n".join(data_lines))
    return payloads, errors


class ApiClient:
    """Sends OpenAI-API requests to one deployment. `post` takes a dict (JSON) or raw text/bytes."""

    def __init__(self, base_url: str, model: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.session = requests.Session()

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.base_url + path, timeout=REQUEST_TIMEOUT)

    def post(self, path: str, body: dict | str | bytes, timeout: float = REQUEST_TIMEOUT) -> requests.Response:
        if isinstance(body, dict):
            return self.session.post(self.base_url + path, json=body, timeout=timeout)
        return self.session.post(self.base_url + path, data=body, timeout=timeout,
                                 headers={"Content-Type": "application/json"})

    def chat_body(self, content: str = "Why is NVIDIA a great company?", **fields: Any) -> dict:
        return {"model": self.model, "messages": [{"role": "user", "content": content}], **fields}

    def completion_body(self, prompt: str = "The capital of France is", **fields: Any) -> dict:
        return {"model": self.model, "prompt": prompt, **fields}

    def stream(self, path: str, body: dict, stall_timeout: float = STALL_TIMEOUT) -> SseStream:
        """The whole stream; a silence longer than `stall_timeout` between two reads raises StreamStalled."""
        received: list[bytes] = []
        started = time.monotonic()
        try:
            with self.session.post(self.base_url + path, json={**body, "stream": True}, stream=True,
                                   timeout=(REQUEST_TIMEOUT, stall_timeout)) as response:
                for piece in response.iter_content(chunk_size=None):
                    received.append(piece)
        except (requests.ConnectionError, requests.Timeout) as error:
            if not isinstance(error, requests.ReadTimeout) and "Read timed out" not in str(error):
                raise
            raise StreamStalled(f"stream stalled: no data for {stall_timeout:g}s, after {len(received)} reads "
                                f"and {time.monotonic() - started:.1f}s") from None
        payloads, errors = parse_sse(b"".join(received).decode("utf-8", "replace"))
        return SseStream(response.status_code, response.headers.get("Content-Type", ""), tuple(payloads),
                         tuple(errors))
