"""The load generator: prompts, the HTTP/SSE reader (against scripted servers and byte by byte), and runs against
the real local stack (Dynamo frontend + mocker)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from pytest_llama4.deploy.fixture_model import ensure_model_dir
from pytest_llama4.deploy.ports import free_port
from pytest_llama4.measure import load
from pytest_llama4.measure.load import LoadResult, Scenario, make_prompts, run_load

CLOSED = Scenario("closed", input_tokens=32, output_tokens=8, num_prompts=12, concurrency=4)


# ---------------------------------------------------------------------------------------------- scripted server

def event(payload: dict | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))  # as Dynamo
    return b"data: " + text.encode() + b"\n\n"


def chat_stream(tokens: int = 3, prompt: int = 11, *, done: bool = True, usage: bool = True) -> list[bytes]:
    """What Dynamo streams for chat: one chunk per token, a finish-only chunk, the usage chunk, [DONE]."""
    events = [event({"choices": [{"index": 0, "delta": {"content": f" w{i}"}}], "usage": None})
              for i in range(tokens)]
    events.append(event({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}], "usage": None}))
    if usage:
        events.append(event({"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": tokens}}))
    if done:
        events.append(event("[DONE]"))
    return events


def chunked(events: list[bytes], status: str = "200 OK") -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".encode()
    return head + b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"


class ScriptedServer:
    """Answers request number n with `script(n)`: (response, close the connection after it?). A response is bytes
    (sent in `fragment`-byte writes, so the client sees it split at arbitrary places) or a list of
    (seconds to wait, bytes) to pace it."""

    def __init__(self, script: Callable[[int], tuple[bytes | list[tuple[float, bytes]], bool]], fragment: int = 0,
                 delay: float = 0.0):
        self.script, self.fragment, self.delay = script, fragment, delay
        self.requests: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                self.requests.append(buffer[:length])
                buffer = buffer[length:]
                response, close = self.script(len(self.requests) - 1)
                time.sleep(self.delay)
                if isinstance(response, bytes):
                    step = self.fragment or len(response)
                    response = [(0.0005 if self.fragment else 0.0, response[i:i + step])
                                for i in range(0, len(response), step)]
                try:
                    for pause, part in response:
                        time.sleep(pause)
                        conn.sendall(part)
                except OSError:
                    return
                if close:
                    return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(script: Callable[[int], tuple[bytes, bool]], **kwargs) -> ScriptedServer:
        servers.append(ScriptedServer(script, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def one(url: str, scenario: Scenario | None = None, **kwargs) -> LoadResult:
    scenario = scenario or Scenario("one", input_tokens=4, output_tokens=3, num_prompts=1, concurrency=1, warmup=0)
    return run_load(url, "m", scenario, timeout=kwargs.pop("timeout", 5), **kwargs)


# ---------------------------------------------------------------------------------------------- scenario, prompts

def test_scenario_takes_exactly_one_of_concurrency_and_request_rate():
    with pytest.raises(ValueError, match="exactly one"):
        Scenario("x", 10, 10, 1)
    with pytest.raises(ValueError, match="exactly one"):
        Scenario("x", 10, 10, 1, concurrency=2, request_rate=1.0)
    with pytest.raises(ValueError, match="arrival"):
        Scenario("x", 10, 10, 1, request_rate=1.0, arrival="bursty")
    with pytest.raises(ValueError, match="endpoint"):
        Scenario("x", 10, 10, 1, concurrency=1, endpoint="responses")


def test_same_seed_same_prompts_other_seed_other_prompts():
    assert make_prompts(CLOSED) == make_prompts(CLOSED)
    assert make_prompts(CLOSED) != make_prompts(replace(CLOSED, seed=1))
    prompts = make_prompts(CLOSED)
    assert len(prompts) == CLOSED.num_prompts + CLOSED.warmup and len(set(prompts)) == len(prompts)
    assert all(len(p.split()) == CLOSED.input_tokens for p in prompts)  # without a tokenizer: one word per token


def test_prompts_are_token_exact_with_a_tokenizer():
    from tokenizers import Tokenizer

    model = ensure_model_dir()
    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    scenario = replace(CLOSED, input_tokens=300)
    prompts = make_prompts(scenario, model)
    assert prompts == make_prompts(scenario, model)
    assert [len(tokenizer.encode(p, add_special_tokens=False).ids) for p in prompts] == [300] * len(prompts)
    assert not any("<|" in p for p in prompts)  # no special tokens


def test_requests_carry_the_benchmark_fields():
    target = load._Target.parse("http://h:1/prefix/")
    request = load._request_bytes(target, "m", replace(CLOSED, endpoint="completions"), "hello")
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /prefix/v1/completions HTTP/1.1\r\nHost: h:1\r\n")
    fields = json.loads(body)
    assert fields["prompt"] == "hello" and fields["max_tokens"] == 8 and fields["min_tokens"] == 8
    assert fields["stream"] is True and fields["stream_options"] == {"include_usage": True}
    assert fields["ignore_eos"] is True and "nvext" not in fields  # Dynamo 1.4.2 rejects nvext.ignore_eos
    chat = json.loads(load._request_bytes(target, "m", replace(CLOSED, ignore_eos=False), "hi").partition(
        b"\r\n\r\n")[2])
    assert chat["messages"] == [{"role": "user", "content": "hi"}]
    assert "ignore_eos" not in chat and "min_tokens" not in chat


def test_default_processes_grow_with_concurrency_up_to_half_the_cpus():
    half = max(1, (os.cpu_count() or 2) // 2)
    assert load.default_processes(replace(CLOSED, concurrency=127)) == 1
    assert load.default_processes(replace(CLOSED, concurrency=256)) == min(2, half)
    assert load.default_processes(replace(CLOSED, concurrency=10**6)) == half
    assert load.default_processes(Scenario("o", 1, 1, 1, request_rate=1e6)) == 1


# ---------------------------------------------------------------------------------------------- the reader

def feed_in_pieces(response: bytes, cuts: list[int]) -> load._Exchange:
    loop = asyncio.new_event_loop()
    try:
        exchange = load._Exchange(loop.create_future())
        edges = [0, *sorted(cuts), len(response)]
        for n, (a, b) in enumerate(itertools.pairwise(edges)):
            exchange.feed(response[a:b], float(n))
        return exchange
    finally:
        loop.close()


def test_reader_gives_the_same_answer_however_the_bytes_are_split():
    response = chunked(chat_stream(tokens=5))
    whole = feed_in_pieces(response, [])
    assert whole.state == load._FINISHED and whole.done and len(whole.chunk_times) == 6 and whole.usage
    rng = random.Random(1)
    for cuts in [list(range(1, len(response))), *(rng.sample(range(1, len(response)), 7) for _ in range(50))]:
        split = feed_in_pieces(response, cuts)
        assert (split.state, split.done, len(split.chunk_times), split.usage, split.error) == (
            load._FINISHED, True, 6, whole.usage, None)


def test_reader_takes_crlf_events_spaced_json_comments_and_multiline_data():
    events = [b": keep-alive\r\n\r\n",
              b'data: {"choices" : [ {"delta": {"content": "a"}} ], "usage": null}\r\n\r\n',
              b'data: {"choices": [{"delta":\ndata: {"content": "b"}}]}\n\n',
              b'data: {"choices": [ ], "usage" : {"prompt_tokens": 3, "completion_tokens": 2}}\n\n',
              b"data:[DONE]\n\n"]
    exchange = feed_in_pieces(chunked(events), [])
    assert len(exchange.chunk_times) == 2 and exchange.done and exchange.error is None
    assert json.loads(exchange.usage)["usage"]["completion_tokens"] == 2


# ---------------------------------------------------------------------------------------------- scripted servers

def test_a_complete_stream_is_recorded(serve):
    server = serve(lambda n: (chunked(chat_stream(tokens=3, prompt=11)), False), fragment=7)
    (record,) = one(server.url).records
    assert record.ok and record.error is None
    assert (record.prompt_tokens, record.output_tokens) == (11, 3)
    assert len(record.chunk_times) == 4  # 3 tokens + the finish-only chunk, as benchmark_serving counts them
    assert 0 <= record.start < record.start + record.ttft == record.chunk_times[0] <= record.end
    assert record.end >= record.chunk_times[-1]


@pytest.mark.alone
def test_timings_follow_the_stream(serve):
    """First token after 80 ms, three more 40 ms apart, then finish, usage and [DONE] together."""
    events = chat_stream(tokens=4)
    head = chunked(events).split(b"\r\n\r\n", 1)[0]
    pieces = [b"%x\r\n%s\r\n" % (len(e), e) for e in events]
    paced = [(0.0, head + b"\r\n\r\n"), (0.08, pieces[0]), (0.04, pieces[1]), (0.04, pieces[2]), (0.04, pieces[3]),
             (0.0, b"".join(pieces[4:]) + b"0\r\n\r\n")]
    server = serve(lambda n: (paced, False))
    (record,) = one(server.url).records
    assert record.ok
    assert record.ttft == pytest.approx(0.08, abs=0.015)
    gaps = [b - a for a, b in itertools.pairwise(record.chunk_times)]
    assert gaps[:3] == pytest.approx([0.04] * 3, abs=0.015) and gaps[3] == pytest.approx(0, abs=0.01)
    assert record.end - record.start == pytest.approx(0.2, abs=0.03)


@pytest.mark.parametrize(("response", "expected"), [
    (chunked([event({"error": "bad"})], "400 Bad Request"), "HTTP 400"),
    (chunked(chat_stream(done=False)), "without [DONE]"),
    (chunked(chat_stream(usage=False)), "no usage"),
    (chunked([event({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 0}}), event("[DONE]")]),
     "no chunk with choices"),
    (chunked([*chat_stream()[:2], b'event: error\ndata: {"message": "engine died"}\n\n', event("[DONE]")]),
     "engine died"),
    (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}", "without [DONE]"),
])
def test_incomplete_or_failed_responses_are_recorded_as_failures(serve, response, expected):
    server = serve(lambda n: (response, False))
    (record,) = one(server.url).records
    assert not record.ok and expected in record.error


def test_a_stream_cut_off_by_the_server_is_a_failure(serve):
    stream = chunked(chat_stream(tokens=5))
    server = serve(lambda n: (stream[:len(stream) // 2], True))
    (record,) = one(server.url).records
    assert not record.ok and "closed by the server" in record.error and record.chunk_times


@pytest.mark.alone
def test_a_slow_server_times_out_into_a_failure(serve):
    server = serve(lambda n: (chunked(chat_stream()), False), delay=1.0)
    started = time.monotonic()
    (record,) = one(server.url, timeout=0.3).records
    assert not record.ok and "timed out" in record.error and time.monotonic() - started < 0.9


def test_connections_are_kept_alive_and_a_dropped_idle_one_is_replaced(serve):
    # every second response closes its connection: the next request retries once on a fresh one, unseen
    server = serve(lambda n: (chunked(chat_stream()), n % 2 == 0))
    scenario = Scenario("ka", input_tokens=4, output_tokens=3, num_prompts=6, concurrency=1, warmup=0)
    result = one(server.url, scenario)
    assert all(r.ok for r in result.records), [r.error for r in result.records]
    assert server.connections == 4 and len(server.requests) == 6  # requests 0, 2, 4 ended their connection
    kept = serve(lambda n: (chunked(chat_stream()), False))
    assert all(r.ok for r in one(kept.url, scenario).records) and kept.connections == 1


def test_warmup_requests_are_sent_first_but_not_recorded(serve):
    server = serve(lambda n: (chunked(chat_stream()), False))
    scenario = replace(CLOSED, num_prompts=3, warmup=2)
    result = run_load(server.url, "m", scenario, timeout=5)
    assert len(result.records) == 3 and len(server.requests) == 5
    sent = [json.loads(r)["messages"][0]["content"] for r in server.requests]
    prompts = make_prompts(scenario)
    assert sent[:2] == prompts[3:] and sorted(sent[2:]) == sorted(prompts[:3])


@pytest.mark.alone
def test_processes_split_the_load_and_never_outnumber_the_users(serve):
    server = serve(lambda n: (chunked(chat_stream()), False))
    single = run_load(server.url, "m", replace(CLOSED, num_prompts=3, concurrency=1, warmup=0), processes=4)
    assert single.processes == 1 and all(r.ok for r in single.records)
    scenario = Scenario("open", input_tokens=4, output_tokens=3, num_prompts=6, request_rate=25,
                        arrival="constant", warmup=0)
    split = run_load(server.url, "m", scenario, processes=2, timeout=5)
    assert split.processes == 2 and [r.ok for r in split.records] == [True] * 6
    assert [r.start for r in split.records] == pytest.approx([i / 25 for i in range(6)], abs=0.02)


PROGRESS_LINE = re.compile(r"^pytest-llama4: measuring closed: (\d+)/12 requests done, (\d+) in flight, "
                           r"([\d,]+) output tokens/s, (\d+) error\(s\) so far, \d+s$")


def paced(n: int) -> tuple[list[tuple[float, bytes]], bool]:
    """A streamed answer sent in 4 parts 0.1 s apart: a request in flight for about 0.4 s."""
    response = chunked(chat_stream())
    step = len(response) // 4 + 1
    return [(0.1, response[i:i + step]) for i in range(0, len(response), step)], False


@pytest.mark.alone
@pytest.mark.parametrize("processes", [1, 2], ids=["in-process", "worker-processes"])
def test_a_running_scenario_reports_progress_each_interval(serve, processes):
    server = serve(paced)
    lines: list[str] = []
    result = run_load(server.url, "m", CLOSED, timeout=5, processes=processes,
                      progress=load.Progress(lines.append, every=0.25))
    assert all(r.ok for r in result.records)
    parsed = [PROGRESS_LINE.match(line) for line in lines]
    assert lines and all(parsed), lines
    done = [int(m[1]) for m in parsed]
    assert done == sorted(done) and done[-1] < 12, "counts grow, and no line after the last request"
    assert all(int(m[2]) <= CLOSED.concurrency and m[4] == "0" for m in parsed)
    assert any(int(m[3].replace(",", "")) > 0 for m in parsed), "tokens flow while requests stream"
    quiet: list[str] = []
    run_load(server.url, "m", CLOSED, timeout=5, processes=processes, progress=load.Progress(quiet.append, every=0))
    assert quiet == []


# ---------------------------------------------------------------------------------------------- failures, no server

@pytest.mark.alone
def test_a_dead_port_records_every_request_as_failed_instead_of_raising():
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run_load(url, "m", CLOSED, timeout=5)
    assert time.monotonic() - started < 5
    assert len(result.records) == CLOSED.num_prompts and not any(r.ok for r in result.records)
    assert all("connect" in r.error for r in result.records)
    assert all(r.ttft is None and r.output_tokens is None for r in result.records)


# ---------------------------------------------------------------------------------------------- the real stack

@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from pytest_llama4.config.settings import Settings
    from pytest_llama4.deploy.deployment import launch
    from pytest_llama4.deploy.launchers.local import LocalLauncher

    root = tmp_path_factory.mktemp("load-stack")
    # Speed-up 10: fast, yet slow enough that a short stream does not reach the client in one read.
    deployment = launch(Settings(reports_dir=root, speedup_ratio=10), root / "run",
                        LocalLauncher(run_label=f"test-load-{root.name}"))
    yield deployment
    deployment.stop()


def max_in_flight(result: LoadResult) -> int:
    edges = sorted([(r.start, 1) for r in result.records] + [(r.end, -1) for r in result.records],
                   key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


@pytest.mark.integration
def test_closed_loop_against_the_real_stack(stack):
    result = run_load(stack.base_url, stack.served_model, CLOSED, tokenizer_path=ensure_model_dir(), timeout=30)
    assert [r.error for r in result.records] == [None] * 12
    assert [r.output_tokens for r in result.records] == [CLOSED.output_tokens] * 12
    # prompt_tokens = the prompt (exactly ISL tokens) + the fixture model's chat template (8 tokens)
    assert {r.prompt_tokens for r in result.records} == {CLOSED.input_tokens + 8}
    for r in result.records:
        assert 0 < r.ttft <= r.end - r.start and len(r.chunk_times) == CLOSED.output_tokens + 1
    assert sum(r.ttft for r in result.records) < 0.9 * sum(r.end - r.start for r in result.records)
    assert max_in_flight(result) == 4
    assert result.processes == 1 and 0 < result.duration >= max(r.end for r in result.records)


@pytest.mark.integration
def test_completions_prompts_are_exactly_isl_tokens(stack):
    scenario = replace(CLOSED, endpoint="completions", num_prompts=4, input_tokens=50)
    result = run_load(stack.base_url, stack.served_model, scenario, tokenizer_path=ensure_model_dir(), timeout=30)
    assert [(r.ok, r.prompt_tokens, r.output_tokens) for r in result.records] == [(True, 50, 8)] * 4


@pytest.mark.alone
@pytest.mark.integration
def test_open_loop_sends_on_schedule(stack):
    scenario = Scenario("open", input_tokens=16, output_tokens=4, num_prompts=8, request_rate=20,
                        arrival="constant", warmup=0)
    result = run_load(stack.base_url, stack.served_model, scenario, timeout=30)
    assert all(r.ok for r in result.records), [r.error for r in result.records]
    starts = [r.start for r in result.records]
    assert starts == pytest.approx([i / 20 for i in range(8)], abs=0.03)  # arrivals every 50 ms
    poisson = run_load(stack.base_url, stack.served_model, replace(scenario, arrival="poisson", seed=3), timeout=30)
    assert [r.start for r in poisson.records] == pytest.approx(load._arrivals(replace(scenario, arrival="poisson",
                                                                                      seed=3)), abs=0.03)


@pytest.mark.alone
@pytest.mark.integration
def test_worker_processes_share_one_clock(stack):
    scenario = replace(CLOSED, num_prompts=16, concurrency=8)
    result = run_load(stack.base_url, stack.served_model, scenario, processes=2, timeout=30)
    assert result.processes == 2
    assert [r.error for r in result.records] == [None] * 16
    # prompts 0-7 went to the first process, 8-15 to the second: both began at t0, not one after the other
    first_of_each = [result.records[0].start, result.records[8].start]
    assert all(0 <= t < 0.25 for t in first_of_each), first_of_each
    assert min(r.start for r in result.records) >= 0 and max_in_flight(result) == 8
