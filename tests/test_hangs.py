"""Hangs are failures, not stalls: a silent stream fails with its stall time; a deployment that stops
answering fails the remaining tests at once, and the summary says so."""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from pytest_llama4.api.client import ApiClient, StreamStalled

from .test_integration import assert_nothing_left, run_pytest


def stalling_server() -> tuple[socket.socket, int]:
    """Answers a stream with one chunk, then says nothing for 30 s."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        event = b'data: {"choices": []}\n\n'
        conn.sendall(f"{len(event):x}\r\n".encode() + event + b"\r\n")
        time.sleep(30)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def test_a_silent_stream_fails_with_its_stall_time():
    server, port = stalling_server()
    try:
        client = ApiClient(f"http://127.0.0.1:{port}", "m")
        started = time.monotonic()
        with pytest.raises(StreamStalled, match=r"stream stalled: no data for 1s, after 1 reads"):
            client.stream("/v1/chat/completions", client.chat_body(), stall_timeout=1)
        assert time.monotonic() - started < 5
    finally:
        server.close()


@pytest.mark.integration
def test_a_deployment_that_stops_answering_fails_the_rest_fast(pytester, tmp_path):
    pytester.makepyfile("""
        import os, signal, time
        import requests

        def test_freeze(deployment):
            frontend = next(h for h in deployment.handles if h.service.role == "frontend")
            os.killpg(frontend.pid, signal.SIGSTOP)  # alive but silent: no exit code to notice
            while open(f"/proc/{frontend.pid}/stat").read().rpartition(")")[2].split()[0] != "T":
                time.sleep(0.01)  # SIGSTOP lands asynchronously: on a loaded machine it may still answer once
            requests.get(deployment.base_url + "/v1/models", timeout=2)

        def test_second(api):
            api.get("/v1/models")

        def test_third(api):
            api.get("/v1/models")
        """)
    reports = tmp_path / "reports"
    started = time.monotonic()
    result = run_pytest(pytester, reports)
    result.assert_outcomes(failed=1, errors=2)  # the two after it fail in setup, without a request
    assert time.monotonic() - started < 60, "the remaining tests should not each wait for a timeout"
    out = result.stdout.str()
    for test in ("test_second", "test_third"):  # (CI=true prints each reason twice: section and summary)
        assert re.search(rf"_ ERROR at setup of {test} _+\nnot run against the deployment: it stopped answering "
                         r"during \S+::test_freeze \(ReadTimeout\)", out), out[-3000:]
    assert "the deployment stopped answering during" in out and "failed without waiting for it" in out
    assert_nothing_left(reports)
