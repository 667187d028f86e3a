"""Each suite catches each contract break it claims to, for the right reason: the suites run in a pytester
subprocess against tests/fault_server.py, healthy (every test passes) and with one fault at a time (the tests
named in the catalogue fail with the message named there).

CAUGHT is the detection table as data; `detection_table()` renders it (with MISSED, the faults no suite test
notices yet: findings about the suites, kept as strict xfails so they go red the day a suite catches them):

    .venv/bin/python -c "from tests.test_detects_faults import detection_table; print(detection_table())"
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .fault_server import FAULTS, MODEL, serve
from .test_integration import check_junit, run_ids, run_pytest

pytestmark = pytest.mark.integration

SUITES = Path(__file__).resolve().parents[1] / "suites"
SCHEMA, STREAMING, ERRORS = "test_schema.py", "test_streaming.py", "test_errors.py"
ALL_SUITES = (SCHEMA, STREAMING, ERRORS)
SELECT = "schema or streaming or errors"  # the throughput suite has no profile for --engine=trtllm-serve anyway
BAD_REQUESTS = ("empty-messages", "huge-max-tokens", "malformed-json", "max-tokens-not-a-number",
                "messages-not-a-list", "negative-max-tokens", "oversize-prompt", "unknown-model")


def each(test: str, cases: tuple[str, ...], message: str) -> dict[str, str]:
    """The same expected failure for several parameters of one test."""
    return {f"{test}[{case}]": message for case in cases}


# fault -> (suite files run against it, {test that must fail ("*" matches anything): substring of its failure})
CAUGHT: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    # schema and semantics
    "seed-object": ((SCHEMA,), {
        "test_chat_completion_schema": "'chat.completion' was expected",
        "test_chat_completion_semantics": "choice is not an assistant message"}),
    "missing-id": ((SCHEMA,), {
        "test_chat_completion_schema": "'id' is a required property",
        "test_completion_schema_and_semantics": "'id' is a required property"}),
    "created-ms": ((SCHEMA,), {
        "test_chat_completion_semantics": "s away from now",
        "test_completion_schema_and_semantics": "s away from now"}),
    "created-past": ((SCHEMA,), {
        "test_chat_completion_semantics": "created=1600000000 is",
        "test_completion_schema_and_semantics": "created=1600000000 is"}),
    "wrong-model": ((SCHEMA, STREAMING), {
        "test_chat_completion_semantics": "model 'llama-4-maverick' does not echo the served name",
        "test_completion_schema_and_semantics": "model 'llama-4-maverick' does not echo the served name",
        "test_one_id_and_model_across_chunks": "models: ['llama-4-maverick']"}),
    "usage-total-off": ((SCHEMA,), {
        "test_chat_completion_semantics": "usage.total_tokens",
        "test_completion_schema_and_semantics": "usage.total_tokens"}),
    "over-budget": ((SCHEMA,), {
        "test_chat_completion_semantics": "usage.completion_tokens 17 exceeds max_tokens 16",
        "test_chat_completion_reports_length_when_budget_runs_out": "max_tokens=2 produced 3"}),
    "stop-at-budget": ((SCHEMA,), {
        "test_chat_completion_semantics": "ran out but finish_reason is 'stop', not 'length'",
        "test_chat_completion_reports_length_when_budget_runs_out": "'stop' when the 2-token budget ran out"}),
    "empty-content": ((SCHEMA,), {
        "test_chat_completion_semantics": "completion tokens reported but the text is ''",
        "test_completion_schema_and_semantics": "completion tokens reported but the text is ''"}),
    "n-ignored": ((SCHEMA,), {"test_n_returns_n_choices": "n=2 returned choices with indexes [0]"}),
    "stop-ignored": ((SCHEMA,), {"test_stop_sequence_ends_generation": "(from the greedy answer"}),
    "nondeterministic": ((SCHEMA,), {"test_greedy_decoding_is_deterministic": "temperature=0 gave different texts"}),
    "zero-tokens": ((SCHEMA, STREAMING), {
        "test_chat_completion_reports_length_when_budget_runs_out": "max_tokens=2 produced 0",
        "test_completion_stream": "streamed completion has no text"}),
    # streaming
    "stream-content-type": ((STREAMING,), {"test_sse_framing": "not text/event-stream"}),
    "no-done": ((STREAMING,), {
        "test_done_sentinel_is_last_and_only_once": "not [DONE]",
        "test_completion_stream": "HTTP 200, last event"}),
    "done-twice": ((STREAMING,), {"test_done_sentinel_is_last_and_only_once": "[DONE] sent more than once"}),
    "varying-chunk-ids": ((STREAMING,), {"test_one_id_and_model_across_chunks": "ids vary across chunks"}),
    "stream-ignores-stop": ((STREAMING,), {
        "test_stop_sequence_ends_a_stream": "(from the greedy answer"}),
    "stream-created-ms": ((STREAMING,), {
        "test_one_id_and_model_across_chunks": "s away from now"}),
    "completion-stream-no-finish": ((STREAMING,), {
        "test_completion_stream": "finish_reasons in the stream: []"}),
    "no-role": ((STREAMING,), {"test_role_comes_first": "first chunk does not open the assistant message"}),
    "two-finish-reasons": ((STREAMING,), {
        "test_exactly_one_finish_reason_per_choice": "finish_reason per choice index: {0: 2}"}),
    "chunk-object": ((STREAMING,), {
        "test_every_chunk_matches_schema": "'chat.completion.chunk' was expected",
        "test_completion_stream": "'text_completion' was expected"}),
    "usage-unasked": ((STREAMING,), {
        "test_no_usage_unless_asked": "usage sent without stream_options.include_usage"}),
    "usage-chunk-missing": ((STREAMING,), {
        "test_include_usage_gives_one_final_usage_chunk": "usage in chunks [] of"}),
    "usage-chunk-with-choices": ((STREAMING,), {
        "test_include_usage_gives_one_final_usage_chunk": "the usage chunk must have empty choices"}),
    "non-sse-lines": ((STREAMING,), {"test_sse_framing": "not an SSE field line: 'keepalive'"}),
    "stream-text-mismatch": ((STREAMING,), {
        "test_streamed_text_matches_non_streamed_at_temperature_zero": "!= non-streamed"}),
    "stream-ignores-max-tokens": ((STREAMING,), {
        "test_include_usage_gives_one_final_usage_chunk": "usage.completion_tokens 16 exceeds max_tokens 12",
        "test_streamed_text_matches_non_streamed_at_temperature_zero": "!= non-streamed"}),
    # errors
    "malformed-json-ok": ((ERRORS,), {
        "test_bad_request_gets_4xx_with_json_body[malformed-json]": "expected a 4xx, got HTTP 200",
        "test_error_body_is_openai_shaped[malformed-json]": "'error' is a required property"}),
    "invalid-requests-ok": ((ERRORS,), each("test_bad_request_gets_4xx_with_json_body",
                                            tuple(c for c in BAD_REQUESTS if c != "malformed-json"),
                                            "expected a 4xx, got HTTP 200")),
    "status-500": ((ERRORS,), {"test_bad_request_gets_4xx_with_json_body[*]": "expected a 4xx, got HTTP 500"}),
    "html-errors": ((ERRORS,), {
        "test_bad_request_gets_4xx_with_json_body[*]": "body is not JSON",
        "test_error_body_is_openai_shaped[*]": "body is not JSON"}),
    "unwrapped-error": ((ERRORS,), {"test_error_body_is_openai_shaped[*]": "'error' is a required property"}),
    "error-as-string": ((ERRORS,), {"test_error_body_is_openai_shaped[*]": "is not of type 'object'"}),
    "wedged-after-bad-input": ((ERRORS,), {
        "test_bad_request_gets_4xx_with_json_body[*]": "server unhealthy after bad input: HTTP 503"}),
}

# fault -> why no suite test notices it. Findings about the suites: never loosen the server to hide one; the
# strict xfail turns red the day a suite catches the fault, and the fault then moves to CAUGHT.
MISSED: dict[str, str] = {
    "stall": "no latency bound outside the throughput suite, which skips without a profile for the engine; "
             "the client fails a stream only after a 30 s silence (STALL_TIMEOUT), other requests after 60 s",
}


def detection_table() -> str:
    """fault -> the tests that catch it and why, or MISSED and why not."""
    lines = [f"{'fault':<28} {'caught by':<68} failure message contains"]
    for fault, (_, expected) in CAUGHT.items():
        for i, (test, message) in enumerate(expected.items()):
            lines.append(f"{fault if i == 0 else '':<28} {test:<68} {message}")
    for fault, reason in MISSED.items():
        lines.append(f"{fault:<28} {'MISSED':<68} {reason}")
    return "\n".join(lines)


def _matches(pattern: str, name: str) -> bool:
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), name) is not None


def run_suites(pytester, tmp_path: Path, fault: str | None, files: tuple[str, ...]):
    """The suite files against a fault server in a pytester subprocess: (result, junit <testsuite>)."""
    server = serve(fault)
    reports = tmp_path / "reports"
    try:
        result = run_pytest(pytester, reports, *(str(SUITES / f) for f in files), "-m", SELECT,
                            f"--endpoint={server.url}", "--waivers=none", "--engine=trtllm-serve",
                            f"--served-model-name={MODEL}", "--startup-timeout=15")
    finally:
        server.shutdown()
        server.server_close()
    (run_id,) = run_ids(reports)
    return result, check_junit(reports / run_id / "junit.xml")


def failures(suite: ET.Element) -> dict[str, str]:
    """Test name -> message and text of its <failure> or <error>."""
    out = {}
    for case in suite.findall("testcase"):
        for tag in ("failure", "error"):
            element = case.find(tag)
            if element is not None:
                out[case.get("name")] = f"{element.get('message', '')}\n{element.text or ''}"
    return out


def test_catalogue_names_every_fault_once():
    assert set(CAUGHT) | set(MISSED) == set(FAULTS), "every fault of fault_server is either CAUGHT or MISSED"
    assert not set(CAUGHT) & set(MISSED)
    assert len(CAUGHT) >= 15
    assert all(expected for _, expected in CAUGHT.values())
    table = detection_table()
    assert all(fault in table for fault in FAULTS)


def test_healthy_server_passes_every_suite(pytester, tmp_path):
    result, suite = run_suites(pytester, tmp_path, None, ALL_SUITES)
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.OK, out[-3000:]
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 30, outcomes
    assert not {"failed", "errors", "skipped", "xfailed", "xpassed"} & set(outcomes), outcomes
    assert "detected: an OpenAI-compatible server that does not name itself (/v1/models owned_by 'pytest-llama4')" \
        in out
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases if len(c)] == [], "tests failed, errored or skipped on the healthy target"
    for module in ("test_schema", "test_streaming", "test_errors"):
        assert any(c.get("classname").endswith(module) for c in cases), f"no {module} test ran"


@pytest.mark.parametrize("fault", list(CAUGHT))
def test_suites_catch_the_fault(pytester, tmp_path, fault):
    files, expected = CAUGHT[fault]
    result, suite = run_suites(pytester, tmp_path, fault, files)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, \
        f"fault {fault!r} ({FAULTS[fault]}) went unnoticed:\n{result.stdout.str()[-3000:]}"
    failed = failures(suite)
    names = [case.get("name") for case in suite.findall("testcase")]
    for pattern, reason in expected.items():
        matched = [name for name in names if _matches(pattern, name)]
        assert matched, f"the catalogue names {pattern}, but no such test ran (tests: {names})"
        for name in matched:
            assert name in failed, f"{name} passed against fault {fault!r} ({FAULTS[fault]})"
            assert reason in failed[name], f"{name} failed for another reason than {reason!r}:\n{failed[name][:800]}"


@pytest.mark.parametrize("fault", [pytest.param(fault, marks=pytest.mark.xfail(strict=True, reason=reason))
                                   for fault, reason in MISSED.items()])
def test_suites_miss_the_fault(pytester, tmp_path, fault):
    result, _ = run_suites(pytester, tmp_path, fault, (STREAMING,))  # these faults touch streamed answers only
    assert result.ret == pytest.ExitCode.TESTS_FAILED, f"no suite test notices fault {fault!r} ({FAULTS[fault]})"
