"""A deliberately broken OpenAI-ish server: the target that proves each suite can fail, and for the right reason.

Its defects, one per suite:
- schema: /v1/chat/completions answers like the seed guide's sample, `"object": "text_completion"` with
  `choices[].text`, and its usage does not add up;
- streaming: chunks are sent as `text/plain`, and the `data: [DONE]` sentinel never comes;
- errors: malformed or invalid requests are answered 200 with a normal-looking completion.
/v1/models is correct, so a suite that fails everything would be caught too.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "nvidia/Llama-4-Maverick-17B-128E-Instruct-FP8"


def _seed_style_chat() -> dict:
    return {"id": "cmpl-broken", "object": "text_completion", "created": int(time.time()), "model": MODEL,
            "choices": [{"index": 0, "text": "NVIDIA is great.", "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 16, "completion_tokens": 4, "total_tokens": 99}}


def _completion() -> dict:
    return {"id": "cmpl-broken", "object": "text_completion", "created": int(time.time()), "model": MODEL,
            "choices": [{"index": 0, "text": "Paris", "logprobs": None, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}


def _chunk(delta: dict, finish_reason: str | None) -> dict:
    return {"id": "chatcmpl-broken", "object": "chat.completion.chunk", "created": int(time.time()), "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}


class BrokenHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            models = {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "x"}]}
            self._send(200, json.dumps(models).encode())
        else:
            self._send(200, b'{"status": "healthy"}')

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            request = json.loads(raw)
        except ValueError:
            request = {}  # defect: malformed JSON is not rejected
        if request.get("stream"):
            chunks = [_chunk({"role": "assistant", "content": "Hi"}, None), _chunk({}, "stop")]
            body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)  # defect: no [DONE]
            self._send(200, body.encode(), content_type="text/plain")  # defect: not text/event-stream
        elif self.path == "/v1/chat/completions":
            self._send(200, json.dumps(_seed_style_chat()).encode())
        else:
            self._send(200, json.dumps(_completion()).encode())


def serve() -> ThreadingHTTPServer:
    """Start on a free loopback port in a daemon thread; the caller shuts it down."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BrokenHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
