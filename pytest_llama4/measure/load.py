"""A streaming load generator for OpenAI-compatible servers that is never the bottleneck.

One measured run sends `Scenario.num_prompts` streaming requests (`/v1/chat/completions` or `/v1/completions`),
either as a closed loop (`concurrency` users, each sending its next request when the previous one ends) or as an
open loop (`request_rate` arrivals per second, Poisson or evenly spaced, however many are in flight). Every request
asks for `max_tokens = output_tokens` with `stream_options.include_usage`, and with `ignore_eos` also sends
top-level `ignore_eos: true` and `min_tokens = output_tokens` (Dynamo 1.4.2 accepts both top-level fields: it
rejects unknown fields with 400 "Unsupported parameter(s)" but type-checks `min_tokens` as u32; it rejects
`nvext.ignore_eos`; trtllm-serve takes both top-level too). `temperature: 0` as TensorRT-LLM's benchmark_serving.

Why it keeps up: a minimal HTTP/1.1 client written as an `asyncio.Protocol` (uvloop when installed) over
keep-alive connections, request bodies serialized before the clock starts, one clock read per socket read, and an
SSE scan that never JSON-parses a content chunk: it only looks for `"choices":[` (empty or not) and `"usage":{`
in the raw bytes and parses the one usage chunk at the end. When one process is not enough, the load is split
across worker processes (`python -c` children fed pickles over pipes, one event loop each, so the caller's
`__main__` is never re-imported); their records share one clock (`time.monotonic` is CLOCK_MONOTONIC,
system-wide on Linux). `benchmarks/harness_overhead.py` measures the cost per chunk (11-30 us).
Every read is acknowledged at once (TCP_QUICKACK): otherwise the client's delayed ACKs, against a server that
leaves Nagle on, add tens of milliseconds of false ITL (see `_Connection`).

What gets recorded (the fields benchmark_serving / `vllm bench serve` derive their figures from):
  - a *chunk* is an SSE event whose `choices` list is non-empty (benchmark_serving's definition: it includes the
    content-less chunk that only carries `finish_reason`); `chunk_times` are their arrival times;
  - `ttft` = first chunk - start; `end` = the last data event before `[DONE]` for chat (the usage chunk included)
    and the last chunk for completions, exactly as benchmark_serving times `latency` on each endpoint;
  - `output_tokens` / `prompt_tokens` come from the final usage chunk (the server's count).
A request that does not end in HTTP 200 + at least one chunk + a usage chunk + `[DONE]` (or that times out, or
whose connection fails) is recorded with ok=False and the reason: nothing is dropped, nothing raises.

Prompts: `input_tokens` counts the tokens of the prompt *text* alone, without special tokens, which is what
benchmark_serving's random dataset calls `prompt_len`. The server's `prompt_tokens` adds what it wraps around the
text: the chat template on `/v1/chat/completions` (8 tokens with the tiny fixture model, a handful with Llama 4's
template), a BOS token on `/v1/completions` if the tokenizer adds one. With `tokenizer_path` (a directory holding
`tokenizer.json`, or the file) prompts are token-exact: random non-special ids are decoded and re-encoded until
the text encodes to exactly `input_tokens` ids (a BPE merge across a boundary can leave a prompt a token or two
off after 8 rounds; it is kept). Without one, a prompt is `input_tokens` words drawn from short common English
words, each exactly one token for the fixture model's word-level tokenizer and, with its leading space, usually
one token in Llama-family BPE vocabularies (not checked against Llama 4's own tokenizer here: pass it for exact
counts). The same seed gives the same prompts; warm-up requests use extra prompts drawn after the measured ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import pickle
import random
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ARRIVALS = ("poisson", "constant")
ENDPOINTS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
# One process handles this many concurrent streams before another is added: see default_processes.
STREAMS_PER_PROCESS = 128
WORKER_START_TIMEOUT = 60.0

_WORD_LIST = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by word "
    "but not what all were we when your can said there use an each which she do how their if will up other about "
    "out many then them these so some her would make like him into time has look two more write go see number no "
    "way could people my than first water been call who oil its now find long down day did get come made may part "
    "over new sound take only little work know place year live me back give most very after thing our just name "
    "good sentence man think say great where help through much before line right too mean old any same tell boy "
    "follow came want show also around form three small set put end does another well large must big even such "
    "because turn here why ask went men read need land different home us move try kind hand picture again change "
    "off play spell air away animal house point page letter mother answer found study still learn should world"
)
_WORDS = tuple(_WORD_LIST.split())


@dataclass(frozen=True)
class Scenario:
    """One load shape. Exactly one of `concurrency` (closed loop) or `request_rate` (open loop, req/s)."""

    name: str
    input_tokens: int
    output_tokens: int
    num_prompts: int
    concurrency: int | None = None
    request_rate: float | None = None
    arrival: str = "poisson"  # or "constant"
    endpoint: str = "chat"  # or "completions"
    warmup: int = 1
    seed: int = 0
    ignore_eos: bool = True

    def __post_init__(self) -> None:
        if (self.concurrency is None) == (self.request_rate is None):
            raise ValueError(f"scenario {self.name!r}: give exactly one of concurrency (closed loop) "
                             "or request_rate (open loop)")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"scenario {self.name!r}: concurrency must be >= 1")
        if self.request_rate is not None and not self.request_rate > 0:
            raise ValueError(f"scenario {self.name!r}: request_rate must be > 0")
        if self.arrival not in ARRIVALS:
            raise ValueError(f"scenario {self.name!r}: arrival must be one of {ARRIVALS}")
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"scenario {self.name!r}: endpoint must be one of {tuple(ENDPOINTS)}")
        if self.input_tokens < 1 or self.output_tokens < 1 or self.num_prompts < 1 or self.warmup < 0:
            raise ValueError(f"scenario {self.name!r}: input_tokens, output_tokens, num_prompts must be >= 1 "
                             "and warmup >= 0")


@dataclass
class RequestRecord:
    """One request; times in seconds on the monotonic clock, relative to the run's start."""

    start: float
    end: float
    ttft: float | None
    chunk_times: list[float]
    prompt_tokens: int | None
    output_tokens: int | None
    ok: bool
    error: str | None


@dataclass
class LoadResult:
    """The measured requests (warm-up excluded), in prompt order, and the run's wall time."""

    scenario: Scenario
    records: list[RequestRecord]
    duration: float
    processes: int


@dataclass
class Tally:
    """One process's requests so far, counted in its event loop; `live` holds the exchanges in flight, whose
    content chunks count as output tokens until their usage arrives."""

    done: int = 0
    errors: int = 0
    tokens: int = 0  # completion_tokens of the finished requests
    live: set = field(default_factory=set)

    def counts(self) -> tuple[int, int, int, int]:
        """(done, errors, in flight, output tokens so far): what goes over a pipe."""
        return self.done, self.errors, len(self.live), self.tokens + sum(len(e.chunk_times) for e in self.live)


@dataclass
class Progress:
    """A line every `every` seconds while a scenario runs: requests done of all, in flight, output tokens/s over
    the last interval, errors so far. The driver's own clock and event loop time it: no sampling thread."""

    report: Callable[[str], None]
    every: float
    _last: tuple[float, int] = field(default=(0.0, 0), init=False)  # (elapsed, tokens) at the previous line

    def line(self, scenario: Scenario, counts: Sequence[tuple[int, int, int, int]], elapsed: float) -> None:
        done, errors, in_flight, tokens = (sum(column) for column in zip(*counts, strict=True))
        rate = (tokens - self._last[1]) / max(1e-9, elapsed - self._last[0])
        self._last = (elapsed, tokens)
        self.report(f"pytest-llama4: measuring {scenario.name}: {done}/{scenario.num_prompts} requests done, "
                    f"{in_flight} in flight, {rate:,.0f} output tokens/s, {errors} error(s) so far, "
                    f"{elapsed:.0f}s")


# ---------------------------------------------------------------------------------------------------- prompts


def make_prompts(scenario: Scenario, tokenizer_path: Path | None = None, count: int | None = None) -> list[str]:
    """`count` prompts (default: num_prompts + warmup) of `input_tokens` tokens each, fixed by the seed."""
    count = scenario.num_prompts + scenario.warmup if count is None else count
    rng = random.Random(f"{scenario.seed}:{scenario.input_tokens}")
    if tokenizer_path is None:
        return [" ".join(rng.choices(_WORDS, k=scenario.input_tokens)) for _ in range(count)]
    return _token_exact_prompts(Path(tokenizer_path), scenario.input_tokens, count, rng)


def _token_exact_prompts(path: Path, length: int, count: int, rng: random.Random) -> list[str]:
    try:
        from tokenizers import Tokenizer  # installed with ai-dynamo (transformers); only needed here
    except ImportError as error:
        raise ImportError("token-exact prompts need the `tokenizers` package (`pip install tokenizers`, or the "
                          "`local` extra); without tokenizer_path prompts are made of words") from error

    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json" if path.is_dir() else path))
    added = set(tokenizer.get_added_tokens_decoder())
    allowed = [i for i in range(tokenizer.get_vocab_size(with_added_tokens=True)) if i not in added]
    ids = [rng.choices(allowed, k=length) for _ in range(count)]
    texts = tokenizer.decode_batch(ids, skip_special_tokens=True)
    for _ in range(8):
        encoded = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
        off = [i for i, e in enumerate(encoded) if len(e) != length]
        if not off:
            break
        for i in off:
            fixed = encoded[i][:length] + rng.choices(allowed, k=max(0, length - len(encoded[i])))
            texts[i] = tokenizer.decode(fixed, skip_special_tokens=True)
    return texts


def _request_bytes(target: _Target, model: str, scenario: Scenario, prompt: str) -> bytes:
    body: dict[str, Any] = {"model": model}
    if scenario.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    body |= {"max_tokens": scenario.output_tokens, "temperature": 0.0, "stream": True,
             "stream_options": {"include_usage": True}}
    if scenario.ignore_eos:
        body |= {"ignore_eos": True, "min_tokens": scenario.output_tokens}
    payload = json.dumps(body, separators=(",", ":")).encode()
    auth = f"Authorization: Bearer {key}\r\n" if (key := os.environ.get("OPENAI_API_KEY")) else ""
    head = (f"POST {target.path}{ENDPOINTS[scenario.endpoint]} HTTP/1.1\r\nHost: {target.host_header}\r\n"
            f"Content-Type: application/json\r\nAccept: text/event-stream\r\n{auth}"
            f"Content-Length: {len(payload)}\r\n\r\n")
    return head.encode() + payload


def _arrivals(scenario: Scenario) -> list[float]:
    """Send offsets (s) of the open loop: the first at 0, then exponential (Poisson) or equal gaps."""
    assert scenario.request_rate is not None
    rng = random.Random(scenario.seed)
    times, t = [], 0.0
    for _ in range(scenario.num_prompts):
        times.append(t)
        t += rng.expovariate(scenario.request_rate) if scenario.arrival == "poisson" else 1 / scenario.request_rate
    return times


# ---------------------------------------------------------------------------------------------------- HTTP + SSE


@dataclass(frozen=True)
class _Target:
    host: str
    port: int
    tls: bool
    path: str  # a base path prefix, without the trailing slash

    @property
    def host_header(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, base_url: str) -> _Target:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"base_url must be http(s)://host[:port][/path], got {base_url!r}")
        tls = url.scheme == "https"
        return cls(url.hostname, url.port or (443 if tls else 80), tls, url.path.rstrip("/"))


_HEAD, _SIZE, _DATA, _CRLF, _TRAILER, _LENGTH, _UNTIL_CLOSE, _FINISHED = range(8)


class _Exchange:
    """One request/response on a connection: HTTP/1.1 framing (chunked, Content-Length or until close) and the
    SSE scan. `fut` resolves when the response ends, however it ends."""

    __slots__ = ("body", "chunk_left", "chunk_times", "done", "error", "events", "finished", "fut", "keep_alive",
                 "last_event", "lost", "nbytes", "raw", "sse", "state", "status", "usage")

    def __init__(self, fut: asyncio.Future) -> None:
        self.fut = fut
        self.state = _HEAD
        self.raw = bytearray()
        self.sse = b""
        self.body = bytearray()  # a non-200 response's body, for the error message
        self.status = 0
        self.chunk_left = 0
        self.keep_alive = True
        self.nbytes = 0
        self.events = 0
        self.chunk_times: list[float] = []
        self.last_event: float | None = None
        self.usage: bytes | None = None
        self.done = False
        self.finished = False  # a chunk carried a finish_reason
        self.lost = False  # the server closed the connection before the response ended
        self.error: str | None = None

    def feed(self, data: bytes, now: float) -> None:
        size = len(data)
        self.nbytes += size
        state = self.state
        if state == _SIZE and not self.raw and not self.sse and self.status == 200:
            # The common case, taken without copies: one read = one HTTP chunk = one one-line `data:` event.
            # No other newline between the size line and the end means no second chunk (JSON escapes newlines).
            eol = data.find(b"\r\n", 0, 10)
            if eol > 0 and data.endswith(b"\n\n\r\n") and data.startswith(b"data:", eol + 2) \
                    and data.find(b"\n", eol + 2, size - 4) < 0:
                self._data(data[eol + 7:size - 4].lstrip(), now)
                return
        if state == _HEAD:
            self.raw += data
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                return
            data = bytes(self.raw[end + 4:])
            self._head(bytes(self.raw[:end]))
            self.raw = bytearray()
            state = self.state
        if state == _LENGTH:
            take = data[:self.chunk_left]
            self.chunk_left -= len(take)
            self._body(take, now)
            if self.chunk_left <= 0:
                self.finish(now)
        elif state == _UNTIL_CLOSE:
            self._body(data, now)
        elif state != _FINISHED:
            self._chunked(data, now)

    def _head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        if headers.get("connection") == "close" or parts[0] == "HTTP/1.0":
            self.keep_alive = False
        if "chunked" in headers.get("transfer-encoding", ""):
            self.state = _SIZE
        elif "content-length" in headers:
            self.chunk_left = int(headers["content-length"])
            self.state = _LENGTH
            if self.chunk_left == 0:
                self.state = _FINISHED
                self.fut.get_loop().call_soon(self.finish, time.monotonic())
        else:
            self.state = _UNTIL_CLOSE
            self.keep_alive = False

    def _chunked(self, data: bytes, now: float) -> None:
        raw = self.raw
        raw += data
        pos, size, parts = 0, len(raw), []
        state = self.state
        while pos < size:
            if state == _DATA:
                take = min(self.chunk_left, size - pos)
                parts.append(raw[pos:pos + take])
                pos += take
                self.chunk_left -= take
                if self.chunk_left:
                    break
                state = _CRLF
            elif state == _CRLF:
                if size - pos < 2:
                    break
                pos += 2
                state = _SIZE
            elif state == _SIZE:
                eol = raw.find(b"\r\n", pos)
                if eol < 0:
                    break
                length = int(raw[pos:eol].split(b";", 1)[0], 16)
                pos = eol + 2
                if length:
                    self.chunk_left = length
                    state = _DATA
                else:
                    state = _TRAILER
            elif state == _TRAILER:  # trailers, if any, end with an empty line
                end = raw.find(b"\r\n", pos)
                if end < 0:
                    break
                empty = end == pos
                pos = end + 2
                if empty:
                    state = _FINISHED
                    break
            else:
                break
        self.state = state
        del raw[:pos]
        if parts:
            self._body(b"".join(parts), now)
        if state == _FINISHED:
            self.finish(now)

    def _body(self, body: bytes, now: float) -> None:
        if self.status != 200:
            self.body += body[:2000 - len(self.body)] if len(self.body) < 2000 else b""
            return
        if self.sse:
            body = self.sse + body
        if b"\r" in body:
            body = body.replace(b"\r\n", b"\n")
        events = body.split(b"\n\n")
        self.sse = events.pop()
        for event in events:
            if event.startswith(b"data:") and b"\n" not in event:
                self._data(event[5:].lstrip(), now)
            else:
                self._general_event(event, now)

    def _general_event(self, event: bytes, now: float) -> None:
        data, name = [], b"message"
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                data.append(line[5:].lstrip())
            elif line.startswith(b"event:"):
                name = line[6:].strip()
        if name == b"error":
            self.error = "SSE error event: " + b"\n".join(data)[:300].decode(errors="replace")
        elif data:
            self._data(b"\n".join(data), now)

    def _data(self, payload: bytes, now: float) -> None:
        if payload[:1] != b"{" and payload.startswith(b"[DONE]"):
            self.done = True
            return
        self.events += 1
        self.last_event = now
        if not self.finished and (b'"finish_reason":"' in payload or b'"finish_reason": "' in payload):
            self.finished = True
        index = payload.find(b'"choices":[')
        if index >= 0:
            if payload[index + 11:index + 12] != b"]":
                self.chunk_times.append(now)
        elif (index := payload.find(b'"choices"')) >= 0:  # the same, with spaces around ':' and '['
            rest = payload[index + 9:index + 40].lstrip()
            if rest[:1] == b":" and rest[1:].lstrip()[:1] == b"[" and rest[1:].lstrip()[1:].lstrip()[:1] != b"]":
                self.chunk_times.append(now)
        elif self.error is None and b'"error"' in payload:
            self.error = "error in stream: " + payload[:300].decode(errors="replace")
        index = payload.rfind(b'"usage"')  # the last key on Dynamo and trtllm-serve: found from the end at once
        if index >= 0:
            rest = payload[index + 7:index + 40].lstrip()
            if rest[:1] == b":" and rest[1:].lstrip()[:1] == b"{":
                self.usage = payload

    def finish(self, now: float) -> None:
        self.state = _FINISHED
        if not self.fut.done():
            self.fut.set_result(now)

    def fail(self, reason: str) -> None:
        self.keep_alive = False
        if self.error is None:
            self.error = reason
        if not self.fut.done():
            self.fut.set_result(time.monotonic())


_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class _Connection(asyncio.Protocol):
    """A keep-alive connection. It acknowledges every read at once (TCP_QUICKACK, re-armed after each read and
    each request, since Linux drops back to delayed ACKs): a server that leaves Nagle on (the Dynamo 1.4.2
    frontend does) holds each small SSE write until the previous one is acknowledged, so a client's 40 ms delayed
    ACK would otherwise show up as bursts of tokens and tens of milliseconds of false ITL and E2E latency."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.exchange: _Exchange | None = None
        self.closed = False
        self.sock: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if _QUICKACK is not None and transport.get_extra_info("sslcontext") is None:
                # A plain socket object on the transport's descriptor (detached, never closed, when the
                # connection goes): setsockopt through uvloop's PseudoSocket costs 4 us a call, this 1 us.
                self.sock = socket.socket(fileno=sock.fileno())
                self.quickack()

    def quickack(self) -> None:
        if self.sock is not None:
            try:
                self.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            except OSError:
                self.sock.detach()
                self.sock = None

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self.sock is not None:
            self.quickack()
        if self.exchange is not None:
            self.exchange.feed(data, now)
        elif self.transport is not None:
            self.transport.close()  # bytes nobody asked for: the connection cannot be trusted

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.sock is not None:
            self.sock.detach()  # the descriptor is the transport's: our object must not close it
            self.sock = None
        exchange = self.exchange
        if exchange is not None and exchange.state != _FINISHED:
            if exchange.state == _UNTIL_CLOSE:
                exchange.finish(time.monotonic())
            else:
                exchange.lost = True
                exchange.fail(f"connection closed by the server{f': {exc}' if exc else ''} "
                              f"after {exchange.nbytes} bytes")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.detach()
            self.sock = None
        if self.transport is not None and not self.closed:
            self.transport.close()


_TLS: ssl.SSLContext | None = None


async def _connect(target: _Target) -> _Connection:
    global _TLS
    loop = asyncio.get_running_loop()
    tls = None
    if target.tls:
        tls = _TLS = _TLS or ssl.create_default_context()
    _, protocol = await loop.create_connection(_Connection, target.host, target.port, ssl=tls)
    return protocol


async def _request(target: _Target, connection: _Connection | None, request: bytes, t0: float, timeout: float,
                   chat: bool, live: set | None = None) -> tuple[RequestRecord, _Connection | None]:
    """Send one request (on `connection` when it is still open); return its record and the connection to reuse.
    `live` holds the exchange while it runs (for progress lines)."""
    loop = asyncio.get_running_loop()
    reused = connection is not None and not connection.closed
    while True:
        start = time.monotonic()
        if connection is None or connection.closed:
            try:
                connection = await asyncio.wait_for(_connect(target), timeout)
            except (OSError, TimeoutError) as error:
                now = time.monotonic()
                reason = f"connect to {target.host}:{target.port} failed: {error!r}"
                return RequestRecord(start - t0, now - t0, None, [], None, None, False, reason), None
        exchange = _Exchange(loop.create_future())
        connection.exchange = exchange
        assert connection.transport is not None
        connection.transport.write(request)
        connection.quickack()
        timer = loop.call_later(timeout, exchange.fail, f"timed out after {timeout:g}s")
        if live is not None:
            live.add(exchange)
        end = await exchange.fut
        timer.cancel()
        if live is not None:
            live.discard(exchange)
        connection.exchange = None
        if exchange.lost and exchange.nbytes == 0 and reused:
            reused = False  # a kept-alive connection the server had closed: retry once on a fresh one
            connection = None
            continue
        break
    record = _record(exchange, start - t0, end - t0, t0, chat)
    if not exchange.keep_alive or exchange.state != _FINISHED or connection.closed:
        connection.close()
        connection = None
    return record, connection


def _record(exchange: _Exchange, start: float, failed_at: float, t0: float, chat: bool) -> RequestRecord:
    chunks = [t - t0 for t in exchange.chunk_times]
    ttft = chunks[0] - start if chunks else None
    prompt_tokens = output_tokens = None
    error = exchange.error
    if exchange.usage is not None:
        try:
            usage = json.loads(exchange.usage)["usage"]
            prompt_tokens, output_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
        except (ValueError, KeyError, TypeError, AttributeError) as problem:
            error = error or f"unreadable usage chunk ({problem!r}): {exchange.usage[:200]!r}"
    if exchange.status and exchange.status != 200:
        error = f"HTTP {exchange.status}: {bytes(exchange.body[:500]).decode(errors='replace')}"
    elif error is None and not exchange.done:
        error = f"stream ended without [DONE] after {exchange.nbytes} bytes"
    elif error is None and exchange.usage is None:
        error = "no usage chunk (stream_options.include_usage ignored?)"
    elif error is None and output_tokens is None:
        error = f"usage chunk without completion_tokens: {exchange.usage[:200]!r}"
    elif error is None and not chunks:
        error = "no chunk with choices"
    elif error is None and not exchange.finished:
        error = "stream ended without a finish_reason"
    if error is not None:
        return RequestRecord(start, failed_at, ttft, chunks, prompt_tokens, output_tokens, False, error)
    # benchmark_serving's latency: the last data event on chat (usage chunk included), the last chunk on completions
    end = exchange.last_event - t0 if chat and exchange.last_event is not None else chunks[-1]
    return RequestRecord(start, end, ttft, chunks, prompt_tokens, output_tokens, True, None)


# ---------------------------------------------------------------------------------------------------- driving


@dataclass
class _Job:
    """What one process sends: (prompt index, request bytes, send offset or None for closed loop)."""

    base_url: str
    requests: list[tuple[int, bytes, float | None]]
    concurrency: int  # closed loop users of this process; 0 for the open loop
    timeout: float
    chat: bool
    progress_every: float = 0.0  # seconds between progress reports (0: none)
    records: dict[int, RequestRecord] = field(default_factory=dict)
    tally: Tally = field(default_factory=Tally)

    async def send(self, target: _Target, connection: _Connection | None, index: int, request: bytes, t0: float
                   ) -> _Connection | None:
        """One request of this job, recorded and counted; returns the connection to reuse."""
        record, connection = await _request(target, connection, request, t0, self.timeout, self.chat, self.tally.live)
        self.records[index] = record
        self.tally.done += 1
        self.tally.errors += not record.ok
        self.tally.tokens += record.output_tokens or 0
        return connection


async def _closed_loop(target: _Target, job: _Job, t0: float) -> None:
    queue: Iterator[tuple[int, bytes, float | None]] = iter(job.requests)

    async def user() -> None:
        connection = None
        for index, request, _ in queue:
            connection = await job.send(target, connection, index, request, t0)
        if connection is not None:
            connection.close()

    await asyncio.gather(*(user() for _ in range(min(job.concurrency, len(job.requests)))))


async def _open_loop(target: _Target, job: _Job, t0: float) -> None:
    idle: list[_Connection] = []

    async def fire(index: int, request: bytes) -> None:
        connection = idle.pop() if idle else None
        connection = await job.send(target, connection, index, request, t0)
        if connection is not None:
            idle.append(connection)

    tasks = []
    for index, request, offset in job.requests:
        delay = t0 + (offset or 0.0) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(fire(index, request)))
    await asyncio.gather(*tasks)
    for connection in idle:
        connection.close()


async def _drive(job: _Job, t0: float, on_tick: Callable[[_Job], None] | None = None) -> float:
    """Run one process's share starting at monotonic time t0; return the monotonic time it finished. `on_tick`
    gets the job every `job.progress_every` seconds meanwhile."""
    target = _Target.parse(job.base_url)
    delay = t0 - time.monotonic()
    if delay > 0.002:
        await asyncio.sleep(delay - 0.002)  # uvloop's timers have millisecond resolution and can fire early
    while time.monotonic() < t0:
        pass
    ticker = asyncio.ensure_future(_ticks(job, on_tick)) if on_tick and job.progress_every > 0 else None
    try:
        if job.concurrency:
            await _closed_loop(target, job, t0)
        else:
            await _open_loop(target, job, t0)
    finally:
        if ticker is not None:
            ticker.cancel()
    return time.monotonic()


async def _ticks(job: _Job, on_tick: Callable[[_Job], None]) -> None:
    while True:
        await asyncio.sleep(job.progress_every)
        on_tick(job)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def _run(coroutine_factory: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine on a fresh (uvloop) event loop, in a helper thread if this thread already runs one."""
    def run() -> Any:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(coroutine_factory())

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run()
    box: dict[str, Any] = {}

    def in_thread() -> None:
        try:
            box["value"] = run()
        except BaseException as error:  # re-raised in the caller's thread
            box["error"] = error

    thread = threading.Thread(target=in_thread, name="pytest-llama4-load")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """No collector pauses while timestamps are taken (benchmark_serving freezes the heap likewise)."""
    enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()


def _worker_main() -> None:
    """A worker process (`python -c`): read its job from stdin, announce readiness, wait for the common start
    time, run, write the records back. Pickles over the pipes, so the caller's __main__ is never re-imported."""
    job: _Job = _read(0)
    _send(1, "ready")
    t0 = _read(0)
    try:
        with _no_gc():
            finished = _run(lambda: _drive(job, t0, on_tick=lambda j: _send(1, ("progress", j.tally.counts(), None))))
        _send(1, ("ok", finished, _pack(job.records)))
    except BaseException as error:
        _send(1, ("error", repr(error), None))


def _send(fd: int, value: Any) -> None:
    """A length-prefixed pickle, written with os.write until all of it is out: after uvloop ran, a large write
    to a pipe returns short now and then (a signal), and sys.stdout's buffered writer lost the rest."""
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(len(data).to_bytes(8, "little") + data)
    while view:
        view = view[os.write(fd, view):]


def _read(fd: int) -> Any:
    def exactly(n: int) -> bytes:
        parts = []
        while n:
            part = os.read(fd, min(n, 1 << 20))
            if not part:
                raise EOFError
            parts.append(part)
            n -= len(part)
        return b"".join(parts)

    return pickle.loads(exactly(int.from_bytes(exactly(8), "little")))


def _receive(process: subprocess.Popen, wait: float, what: str) -> Any:
    assert process.stdout is not None
    if not select.select([process.stdout], [], [], wait)[0]:
        raise RuntimeError(f"load worker process {process.pid} did not {what} within {wait:g}s")
    try:
        return _read(process.stdout.fileno())
    except EOFError:
        raise RuntimeError(f"load worker process {process.pid} exited ({process.wait()}) before it could "
                           f"{what}; its stderr is above") from None


def _pack(records: dict[int, RequestRecord]) -> list[tuple]:
    return [(i, r.start, r.end, r.ttft, r.chunk_times, r.prompt_tokens, r.output_tokens, r.ok, r.error)
            for i, r in records.items()]


def default_processes(scenario: Scenario) -> int:
    """Worker processes for a scenario: one per STREAMS_PER_PROCESS concurrent streams, using at most half the
    CPUs (the other half is left to whatever shares the machine, a co-located server included). The open loop's
    in-flight count is not known in advance: it runs in one process unless told otherwise.

    Why 128 (benchmarks/README.md): one process spends 11-16 us of CPU per chunk at high concurrency (about
    30 us at 16 streams, where every chunk is its own event-loop wake-up), so it would saturate a core near
    65k chunks/s; kept under half a core (beyond that, queueing in the loop delays the timestamps) it reads
    about 30k chunks/s, i.e. 128 streams decoding 235 tokens/s each at one token per chunk."""
    if scenario.concurrency is None:
        return 1
    return max(1, min((os.cpu_count() or 2) // 2, scenario.concurrency // STREAMS_PER_PROCESS))


def _split(scenario: Scenario, indexed: list[tuple[int, bytes, float | None]], processes: int,
           base_url: str, timeout: float) -> list[_Job]:
    chat = scenario.endpoint == "chat"
    if scenario.concurrency is None:
        return [_Job(base_url, indexed[w::processes], 0, timeout, chat) for w in range(processes)]
    # Closed loop: users split as evenly as possible, prompts in proportion to each process's users.
    users = [scenario.concurrency // processes + (w < scenario.concurrency % processes) for w in range(processes)]
    jobs, start = [], 0
    for w, n in enumerate(users):
        stop = len(indexed) if w == processes - 1 else start + round(len(indexed) * n / scenario.concurrency)
        jobs.append(_Job(base_url, indexed[start:stop], n, timeout, chat))
        start = stop
    return [j for j in jobs if j.concurrency and j.requests]


def _run_processes(jobs: list[_Job], timeout: float, on_tick: Callable[[list[tuple], float], None] | None = None,
                   every: float = 0.0) -> tuple[float, float, dict[int, RequestRecord]]:
    """Run each job in a worker process of its own, all starting at one instant; `on_tick` gets every worker's
    latest counts and the seconds since the start, each `every` seconds, from the workers' reports (sent
    several times an interval, so a line never shows counts an interval old)."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    argv = [sys.executable, "-c", f"from {__name__} import _worker_main; _worker_main()"]
    workers: list[subprocess.Popen] = []
    try:
        for job in jobs:
            worker = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0)
            workers.append(worker)
            assert worker.stdin is not None
            _send(worker.stdin.fileno(), job)
        for worker in workers:
            _receive(worker, WORKER_START_TIMEOUT, "start")
        t0 = time.monotonic() + 0.05
        for worker in workers:
            assert worker.stdin is not None
            _send(worker.stdin.fileno(), t0)
        budget = timeout * max(len(j.requests) for j in jobs) + WORKER_START_TIMEOUT
        finished, records = _collect(workers, t0, budget, on_tick if every > 0 else None, every)
        return t0, finished, records
    finally:
        for worker in workers:
            for stream in (worker.stdin, worker.stdout):
                if stream is not None:
                    stream.close()
            try:
                worker.wait(5)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def _collect(workers: list[subprocess.Popen], t0: float, budget: float,
             on_tick: Callable[[list[tuple], float], None] | None, every: float
             ) -> tuple[float, dict[int, RequestRecord]]:
    """Read the workers' progress reports and final records as they come; `on_tick` each `every` seconds."""
    counts = {w.pid: (0, 0, 0, 0) for w in workers}
    waiting = {w.pid: w for w in workers}
    records: dict[int, RequestRecord] = {}
    finished = t0
    next_tick = t0 + every
    deadline = time.monotonic() + budget
    while waiting:
        wait = (min(deadline, next_tick) if on_tick else deadline) - time.monotonic()
        ready = {w.pid for w in _readable(list(waiting.values()), max(0.0, wait))}
        for pid in ready:
            status, value, packed = _receive(waiting[pid], 0, "report back")
            if status == "progress":
                counts[pid] = value
                continue
            if status != "ok":
                raise RuntimeError(f"load worker process {pid} failed: {value}")
            del waiting[pid]
            finished = max(finished, value)
            records |= {row[0]: RequestRecord(*row[1:]) for row in packed}
            job_records = [records[row[0]] for row in packed]
            counts[pid] = (len(job_records), sum(not r.ok for r in job_records), 0,
                           sum(r.output_tokens or 0 for r in job_records))
        now = time.monotonic()
        if on_tick and now >= next_tick and waiting:
            on_tick(list(counts.values()), now - t0)
            next_tick += every * (1 + (now - next_tick) // every)
        if waiting and now >= deadline:
            raise RuntimeError(f"load worker process(es) {', '.join(map(str, waiting))} did not report back "
                               f"within {budget:g}s")
    return finished, records


def _readable(workers: list[subprocess.Popen], wait: float) -> list[subprocess.Popen]:
    streams = {w.stdout: w for w in workers if w.stdout is not None}
    return [streams[s] for s in select.select(list(streams), [], [], wait)[0]]


def _warm_up(base_url: str, requests: list[bytes], timeout: float) -> None:
    """Warm-up requests, one after another; their outcome is not recorded (a dead server shows in the run)."""
    if not requests:
        return
    target = _Target.parse(base_url)

    async def go() -> None:
        connection = None
        for request in requests:
            _, connection = await _request(target, connection, request, time.monotonic(), timeout, True)
        if connection is not None:
            connection.close()

    _run(go)


def run_load(base_url: str, model: str, scenario: Scenario, *, tokenizer_path: Path | None = None,
             processes: int | None = None, timeout: float = 600, progress: Progress | None = None) -> LoadResult:
    """Run `scenario` against `base_url` serving `model`; every request ends up in the result, failed or not.

    `timeout` bounds each request (connect to last byte). `processes` defaults to `default_processes(scenario)`.
    `progress` gets a line each of its intervals while the measured requests run.
    """
    target = _Target.parse(base_url)
    prompts = make_prompts(scenario, tokenizer_path)
    requests = [_request_bytes(target, model, scenario, p) for p in prompts]
    measured, warmup = requests[:scenario.num_prompts], requests[scenario.num_prompts:]
    offsets: list[float | None] = (
        _arrivals(scenario) if scenario.request_rate is not None else [None] * scenario.num_prompts)
    indexed = [(i, r, o) for i, (r, o) in enumerate(zip(measured, offsets, strict=True))]
    processes = max(1, min(processes or default_processes(scenario), scenario.concurrency or scenario.num_prompts))
    jobs = _split(scenario, indexed, processes, base_url, timeout)
    for job in jobs:  # worker processes report 4 times a line (at most each second), so lines are never stale
        job.progress_every = (progress.every if len(jobs) == 1 else min(1.0, progress.every / 4)) if progress else 0.0
    _warm_up(base_url, warmup, timeout)
    if len(jobs) == 1:
        job = jobs[0]
        with _no_gc():
            t0 = time.monotonic()
            finished = _run(lambda: _drive(job, t0, on_tick=progress and (
                lambda j: progress.line(scenario, [j.tally.counts()], time.monotonic() - t0))))
        records = job.records
    else:
        t0, finished, records = _run_processes(jobs, timeout, progress and (
            lambda counts, elapsed: progress.line(scenario, counts, elapsed)), progress.every if progress else 0.0)
    ordered = [records[i] for i in range(scenario.num_prompts)]
    return LoadResult(scenario, ordered, finished - t0, len(jobs))
