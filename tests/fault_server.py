"""A fault-injecting OpenAI-ish server: healthy by default, or broken in exactly one way (`serve(fault)`).

The healthy target (`fault=None`) follows the OpenAI API as the suites check it:
- GET /v1/models, /health, /metrics (vLLM's time-to-first-token histogram sum and count, as the server timed
  each answer: request read to first byte sent);
- POST /v1/chat/completions and /v1/completions, non-streaming and streaming (SSE over chunked HTTP/1.1: the
  role first, one id per stream, exactly one finish_reason per choice, a final usage chunk with empty choices
  when `stream_options.include_usage`, then `data: [DONE]`);
- one word per token from a fixed vocabulary, seeded by the prompt: the same request always gets the same text,
  streamed or not; `max_tokens` is the word budget (`finish_reason: length` when it runs out), a natural answer
  is ANSWER_WORDS words (`stop` when it ends first), `n` gives n choices, `stop` cuts the text before the first
  stop string (`finish_reason: stop`);
- bad input (malformed JSON, missing/unknown model, messages not a non-empty list, max_tokens not a positive int,
  prompt + max_tokens beyond CONTEXT_TOKENS words) gets a 4xx with `{"error": {"message", "type", "param",
  "code"}}`.

Each FAULTS entry breaks that contract in one way; tests/test_detects_faults.py proves which suite test notices.
METRIC_FAULTS break what the server says about itself; the throughput suite's tests catch them.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "fault-injector/Llama-4-Maverick"
CONTEXT_TOKENS = 8192
ANSWER_WORDS = 48
STALL_SECONDS = 3.0
TTFT_LIE_SECONDS = 1.0
TTFT_SERIES = "vllm:time_to_first_token_seconds"  # the server's own TTFT, as vLLM names it (its model_name label)
MODELS_CREATED = 1_700_000_000

# fault -> what the server does wrong. One flag, one broken promise.
FAULTS: dict[str, str] = {
    # schema and semantics of non-streamed answers
    "seed-object": "chat answers `object: text_completion` with choices[].text (the seed guide's sample)",
    "missing-id": "responses carry no `id`",
    "created-ms": "`created` is in milliseconds",
    "created-past": "`created` is 2020-09-13, years in the past",
    "wrong-model": "`model` echoes another name than the served one (chunks too)",
    "usage-total-off": "usage.total_tokens != prompt_tokens + completion_tokens",
    "over-budget": "one token more than max_tokens is generated and reported",
    "stop-at-budget": "finish_reason `stop` when the max_tokens budget ran out",
    "empty-content": "non-streamed text is empty while completion_tokens > 0",
    "n-ignored": "n > 1 returns one choice",
    "stop-ignored": "stop sequences are ignored",
    "nondeterministic": "temperature=0 output is random",
    "zero-tokens": "every answer is empty: no text, completion_tokens 0, finish_reason stop",
    # streaming
    "stream-content-type": "streams are sent as text/plain",
    "no-done": "the `data: [DONE]` sentinel never comes",
    "done-twice": "`data: [DONE]` is sent twice",
    "varying-chunk-ids": "every chunk of a stream has a new id",
    "no-role": "the first chunk does not carry `role: assistant` (no chunk does)",
    "two-finish-reasons": "the last content chunk and the final chunk both carry a finish_reason",
    "chunk-object": "chunks say `object: chat.completion`",
    "usage-unasked": "the usage chunk is sent without stream_options.include_usage",
    "usage-chunk-missing": "stream_options.include_usage is ignored",
    "usage-chunk-with-choices": "usage rides on the finish_reason chunk instead of a chunk with empty choices",
    "non-sse-lines": "a bare `keepalive` line (not an SSE field, not a comment) between events",
    "stream-text-mismatch": "streamed text differs from the non-streamed text of the same request",
    "stream-ignores-max-tokens": "streams run 4 tokens past max_tokens (and count them in usage)",
    "stream-created-ms": "chunks carry `created` in milliseconds (non-streamed answers are right)",
    "stream-ignores-stop": "streams ignore stop sequences (non-streamed answers honour them)",
    "completion-stream-no-finish": "/v1/completions streams never send a finish_reason",
    # errors
    "malformed-json-ok": "malformed JSON is answered 200 with a completion",
    "invalid-requests-ok": "requests that parse but are invalid are answered 200 with a completion",
    "status-500": "bad input is answered 500 (with an OpenAI error body)",
    "html-errors": "error bodies are HTML",
    "unwrapped-error": "error bodies are {message, type, code} without the `error` wrapper (Dynamo 1.4.2 style)",
    "error-as-string": "error bodies are {\"error\": \"<message>\"} (trtllm-serve validation style)",
    "wedged-after-bad-input": "after a rejected request the next request is answered 503",
    # latency
    "stall": f"the first streamed request stalls {STALL_SECONDS:g} s before answering",
}
METRIC_FAULTS: dict[str, str] = {
    "ttft-metrics-lie": f"/metrics reports each time to first token {TTFT_LIE_SECONDS:g} s longer than it was",
}

_ANSWER_TEXT = (
    "NVIDIA builds accelerated computing platforms that power modern artificial intelligence research and "
    "deployment across data centers clouds workstations and embedded devices while its software stack lets "
    "developers train large language models quickly and serve them at scale with low latency"
)
VOCABULARY = tuple(_ANSWER_TEXT.split())


class BadRequest(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


@dataclass(frozen=True)
class Call:
    """A validated generation request."""

    chat: bool
    prompt: str
    prompt_tokens: int
    max_tokens: int | None
    n: int
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool


@dataclass(frozen=True)
class Generation:
    text: str
    tokens: int
    finish_reason: str


def _words(text: str) -> int:
    return len(text.split())


def _positive_int(request: dict, name: str, upper: int | None = None) -> int | None:
    value = request.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(400, f"'{name}' must be an integer, got {json.dumps(value)[:40]}", name, "invalid_type")
    if value < 1 or (upper is not None and value > upper):
        bound = f" and at most {upper}" if upper is not None else ""
        raise BadRequest(400, f"'{name}' must be at least 1{bound}, got {value}", name, "invalid_value")
    return value


def _chat_prompt(request: dict) -> tuple[str, int]:
    messages = request.get("messages")
    if not isinstance(messages, list):
        raise BadRequest(400, "'messages' must be a list of messages", "messages", "invalid_type")
    if not messages:
        raise BadRequest(400, "'messages' must not be empty", "messages", "invalid_value")
    texts = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in (
                "system", "developer", "user", "assistant", "tool"):
            raise BadRequest(400, f"messages[{i}] is not a message with a valid role", f"messages[{i}]",
                             "invalid_value")
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
        if content is not None and not isinstance(content, str):
            raise BadRequest(400, f"messages[{i}].content must be a string", f"messages[{i}].content",
                             "invalid_type")
        texts.append(content or "")
    text = "\n".join(texts)
    return text, _words(text) + 4 * len(messages)


def _completion_prompt(request: dict) -> tuple[str, int]:
    prompt = request.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompt = "\n".join(prompt)
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest(400, "'prompt' must be a non-empty string", "prompt", "invalid_value")
    return prompt, _words(prompt) + 1


def validate(path: str, request: Any) -> Call:
    if not isinstance(request, dict):
        raise BadRequest(400, "the request body must be a JSON object", None, "invalid_type")
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest(400, "'model' is required", "model", "missing_required_parameter")
    if model != MODEL:
        raise BadRequest(404, f"The model `{model}` does not exist.", "model", "model_not_found", "NotFoundError")
    chat = path == "/v1/chat/completions"
    prompt, prompt_tokens = _chat_prompt(request) if chat else _completion_prompt(request)
    max_tokens = _positive_int(request, "max_completion_tokens") if chat else None
    max_tokens = _positive_int(request, "max_tokens") or max_tokens
    if prompt_tokens + (max_tokens or 0) > CONTEXT_TOKENS:
        raise BadRequest(400, f"This model's maximum context length is {CONTEXT_TOKENS} tokens; the request has "
                              f"{prompt_tokens} prompt tokens and max_tokens {max_tokens}", "messages",
                         "context_length_exceeded")
    n = _positive_int(request, "n", upper=8) or 1
    stop = request.get("stop")
    stop = [stop] if isinstance(stop, str) else stop
    if stop is not None and not (isinstance(stop, list) and len(stop) <= 4 and all(
            isinstance(s, str) and s for s in stop)):
        raise BadRequest(400, "'stop' must be a string or a list of at most 4 strings", "stop", "invalid_value")
    stream = request.get("stream", False)
    options = request.get("stream_options") or {}
    if not isinstance(stream, bool) or not isinstance(options, dict):
        raise BadRequest(400, "'stream' must be a boolean, 'stream_options' an object", "stream", "invalid_type")
    return Call(chat, prompt, prompt_tokens, max_tokens, n, tuple(stop or ()), stream,
                bool(options.get("include_usage")))


def generate(call: Call, index: int, fault: str | None, *, streamed: bool = False) -> Generation:
    """Deterministic text: ANSWER_WORDS words of VOCABULARY from an offset the prompt (and choice index) pick."""
    offset = int(hashlib.sha256(call.prompt.encode()).hexdigest()[:8], 16) + 7 * index
    if streamed and fault == "stream-text-mismatch":
        offset += 1
    if fault == "zero-tokens":
        return Generation("", 0, "stop")
    if fault == "nondeterministic":
        rng = random.Random()
        words = [rng.choice(VOCABULARY) for _ in range(ANSWER_WORDS)]
    else:
        words = [VOCABULARY[(offset + i) % len(VOCABULARY)] for i in range(ANSWER_WORDS)]
    budget = call.max_tokens
    if budget is not None and (fault == "over-budget" or (streamed and fault == "stream-ignores-max-tokens")):
        budget += 1 if fault == "over-budget" else 4
    produced = words if budget is None else words[:budget]
    finish = "length" if budget is not None and len(produced) == budget else "stop"
    text = " ".join(produced)
    honour_stop = fault != "stop-ignored" and not (streamed and fault == "stream-ignores-stop")
    cuts = [text.find(s) for s in call.stop if s in text] if honour_stop else []
    if cuts:
        cut = min(cuts)
        return Generation(text[:cut], text[:cut].count(" ") + 1, "stop")
    return Generation(text, len(produced), finish)


def _pieces(text: str) -> list[str]:
    """One piece per word (a word with its leading space), which join back to `text`."""
    return [piece for piece in re.split(r"(?= )", text) if piece]


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fault: str | None) -> None:
        if fault is not None and fault not in FAULTS and fault not in METRIC_FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join([*FAULTS, *METRIC_FAULTS])}")
        super().__init__(("127.0.0.1", 0), FaultHandler)
        self.fault = fault
        self.lock = threading.Lock()
        self.wedged = 0  # requests still to refuse (wedged-after-bad-input)
        self.stalled = False  # the one stall of `stall` is done
        self.ttft_seconds = [0.0, 0]  # sum, count of the answers' times to first token

    def first_token_sent(self, started: float) -> None:
        seconds = time.monotonic() - started
        with self.lock:
            self.ttft_seconds[0] += seconds + (TTFT_LIE_SECONDS if self.fault == "ttft-metrics-lie" else 0.0)
            self.ttft_seconds[1] += 1

    def metrics_text(self) -> str:
        with self.lock:
            total, count = self.ttft_seconds
        return (f'{TTFT_SERIES}_sum{{model_name="{MODEL}"}} {total}\n'
                f'{TTFT_SERIES}_count{{model_name="{MODEL}"}} {count}\n')

    def handle_error(self, request, client_address) -> None:
        """A client that hangs up on a kept-alive connection is not an error worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def take(self, flag: str) -> bool:
        """Atomically consume one unit of a counter (wedged) or a one-shot flag (stalled)."""
        with self.lock:
            if flag == "wedged" and self.wedged:
                self.wedged -= 1
                return True
            if flag == "stall" and not self.stalled:
                self.stalled = True
                return True
            return False


class FaultHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultServer

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    @property
    def fault(self) -> str | None:
        return self.server.fault

    # --- transport

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, body: object) -> None:
        self._send(status, json.dumps(body).encode())

    def _error(self, error: BadRequest, status: int | None = None) -> None:
        status = status or error.status
        if self.fault == "html-errors":
            page = f"<html><body><h1>{status} Bad Request</h1><p>{error.message}</p></body></html>"
            return self._send(status, page.encode(), "text/html; charset=utf-8")
        if self.fault == "unwrapped-error":
            return self._json(status, {"message": error.message, "type": error.kind, "code": status})
        if self.fault == "error-as-string":
            return self._json(status, {"error": error.message})
        return self._json(status, {"error": {"message": error.message, "type": error.kind, "param": error.param,
                                             "code": error.code}})

    # --- routes

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [
                {"id": MODEL, "object": "model", "created": MODELS_CREATED, "owned_by": "pytest-llama4",
                 "max_model_len": CONTEXT_TOKENS}]})  # as vLLM says it: the oversize prompt is sized from it
        elif self.path == "/health":
            self._json(200, {"status": "healthy"})
        elif self.path == "/metrics":
            self._send(200, self.server.metrics_text().encode(), "text/plain; version=0.0.4")
        else:
            self._error(BadRequest(404, f"no route GET {self.path}", None, "not_found", "NotFoundError"))

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        started = time.monotonic()
        if self.path not in ("/v1/chat/completions", "/v1/completions"):
            return self._error(BadRequest(404, f"no route POST {self.path}", None, "not_found", "NotFoundError"))
        if self.server.take("wedged"):
            return self._error(BadRequest(503, "the engine is restarting", None, "unavailable", "ServiceUnavailable"))
        try:
            call = self._call(raw)
        except BadRequest as error:
            if self.fault == "wedged-after-bad-input":
                with self.server.lock:
                    self.server.wedged = 1
            return self._error(error, 500 if self.fault == "status-500" else None)
        if call.stream:
            if self.fault == "stall" and self.server.take("stall"):
                time.sleep(STALL_SECONDS)
            self._stream(call, started)
        else:
            self._json(200, self._answer(call))
            self.server.first_token_sent(started)

    def _call(self, raw: bytes) -> Call:
        fallback = {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}],
                    "prompt": "hi"}
        try:
            request = json.loads(raw)
        except ValueError:
            if self.fault != "malformed-json-ok":
                raise BadRequest(400, "the request body is not valid JSON", None, "invalid_json") from None
            request = fallback
        try:
            return validate(self.path, request)
        except BadRequest:
            if self.fault != "invalid-requests-ok":
                raise
            return validate(self.path, fallback)

    # --- bodies

    def _envelope(self, call: Call, chunk: bool) -> dict:
        kind = ("chat.completion" if call.chat else "text_completion") + (".chunk" if chunk and call.chat else "")
        if chunk and self.fault == "chunk-object":
            kind = "chat.completion"
        created = int(time.time())
        if (self.fault == "created-ms" and not chunk) or (self.fault == "stream-created-ms" and chunk):
            created = int(time.time() * 1000)
        elif self.fault == "created-past" and not chunk:
            created = 1_600_000_000
        body = {"id": f"{'chatcmpl' if call.chat else 'cmpl'}-{uuid.uuid4().hex}", "object": kind,
                "created": created, "model": "llama-4-maverick" if self.fault == "wrong-model" else MODEL}
        if self.fault == "missing-id" and not chunk:
            del body["id"]
        return body

    def _usage(self, call: Call, completion_tokens: int) -> dict:
        total = call.prompt_tokens + completion_tokens + (1 if self.fault == "usage-total-off" else 0)
        return {"prompt_tokens": call.prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": total}

    def _answer(self, call: Call) -> dict:
        generations = [generate(call, i, self.fault) for i in range(1 if self.fault == "n-ignored" else call.n)]
        choices = []
        for i, gen in enumerate(generations):
            text = "" if self.fault == "empty-content" else gen.text
            finish = "stop" if self.fault == "stop-at-budget" else gen.finish_reason
            if call.chat and self.fault != "seed-object":
                choices.append({"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
                                "logprobs": None, "finish_reason": finish})
            else:
                choices.append({"index": i, "text": text, "logprobs": None, "finish_reason": finish})
        body = self._envelope(call, chunk=False)
        if call.chat and self.fault == "seed-object":
            body["object"] = "text_completion"
        return {**body, "choices": choices, "usage": self._usage(call, sum(g.tokens for g in generations))}

    def _chunks(self, call: Call) -> list[dict]:
        envelope = self._envelope(call, chunk=True)

        def chunk(choices: list[dict], **extra: Any) -> dict:
            fresh = {"id": f"chatcmpl-{uuid.uuid4().hex}"} if self.fault == "varying-chunk-ids" else {}
            return {**envelope, **fresh, "choices": choices, **extra}

        def choice(index: int, text: str, finish: str | None, role: bool = False) -> dict:
            if not call.chat:
                return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
            delta = {"role": "assistant", "content": text} if role else ({"content": text} if text else {})
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}

        chunks, tokens = [], 0
        for i in range(call.n):
            gen = generate(call, i, self.fault, streamed=True)
            tokens += gen.tokens
            if call.chat and self.fault != "no-role":
                chunks.append(chunk([choice(i, "", None, role=True)]))
            pieces = _pieces(gen.text)
            for j, piece in enumerate(pieces):
                early = gen.finish_reason if self.fault == "two-finish-reasons" and j == len(pieces) - 1 else None
                chunks.append(chunk([choice(i, piece, early)]))
            finish = None if self.fault == "completion-stream-no-finish" and not call.chat else gen.finish_reason
            chunks.append(chunk([choice(i, "", finish)]))
        usage = self._usage(call, tokens)
        wants_usage = (call.include_usage or self.fault == "usage-unasked") and self.fault != "usage-chunk-missing"
        if wants_usage and self.fault == "usage-chunk-with-choices":
            chunks[-1]["usage"] = usage
        elif wants_usage:
            chunks.append(chunk([], usage=usage))
        return chunks

    def _stream(self, call: Call, started: float) -> None:
        events = [f"data: {json.dumps(c)}\n\n" for c in self._chunks(call)]
        if self.fault == "non-sse-lines":
            events.insert(1, "keepalive\n\n")
        if self.fault != "no-done":
            events += ["data: [DONE]\n\n"] * (2 if self.fault == "done-twice" else 1)
        self.send_response(200)
        content_type = "text/plain; charset=utf-8" if self.fault == "stream-content-type" else "text/event-stream"
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for index, event in enumerate(events):
                data = event.encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
                if index == 0:
                    self.server.first_token_sent(started)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def serve(fault: str | None = None) -> FaultServer:
    """Start on a free loopback port in a daemon thread, healthy or with one of FAULTS or METRIC_FAULTS; the caller
    shuts it down."""
    server = FaultServer(fault)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
