"""Bad input gets a 4xx with an OpenAI-shaped JSON error body, and leaves the server healthy."""

from __future__ import annotations

import pytest

from pytest_llama4.api import checks

pytestmark = pytest.mark.errors

# Words beyond the deployment's context window: one token or more each in any tokenizer ("word" is common).
OVERSIZE_MARGIN_WORDS = 1024
GOOD_MESSAGES = [{"role": "user", "content": "hi"}]

# name -> request body (a dict is sent as JSON, a str as raw bytes); {model} is filled in.
BAD_REQUESTS = {
    "malformed-json": '{"model": "{model}", "messages": [',
    "empty-messages": {"messages": []},
    "unknown-model": {"model": "no-such-model", "messages": GOOD_MESSAGES},
    "negative-max-tokens": {"messages": GOOD_MESSAGES, "max_tokens": -1},
    "huge-max-tokens": {"messages": GOOD_MESSAGES, "max_tokens": 10**9},
    "messages-not-a-list": {"messages": "hi"},
    "max-tokens-not-a-number": {"messages": GOOD_MESSAGES, "max_tokens": "ten"},
    "oversize-prompt": {"messages": [{"role": "user", "content": "{oversize}"}], "max_tokens": 4},
}


def _body(case: str, model: str, context_window: int | str) -> dict | str:
    body = BAD_REQUESTS[case]
    if isinstance(body, str):
        return body.replace("{model}", model)
    if case == "oversize-prompt":
        if isinstance(context_window, str):
            pytest.skip(f"{context_window}: an oversize prompt cannot be sized")
        words = "word " * (context_window + OVERSIZE_MARGIN_WORDS)
        body = {**body, "messages": [{"role": "user", "content": words}]}
    return {"model": model, **body}


@pytest.fixture(params=sorted(BAD_REQUESTS))
def bad_response(request, api, context_window):
    return api.post("/v1/chat/completions", _body(request.param, api.model, context_window))


def test_bad_request_gets_4xx_with_json_body(bad_response, api):
    assert 400 <= bad_response.status_code < 500, \
        f"expected a 4xx, got HTTP {bad_response.status_code}: {bad_response.text[:300]}"
    body = checks.json_body(bad_response)
    assert isinstance(body, dict) and body, f"error body is not a JSON object: {bad_response.text[:300]}"
    healthy = api.post("/v1/chat/completions", api.chat_body(max_tokens=2))
    assert healthy.status_code == 200, f"server unhealthy after bad input: HTTP {healthy.status_code}"


def test_error_body_is_openai_shaped(bad_response):
    checks.matches_schema("error", checks.json_body(bad_response))
