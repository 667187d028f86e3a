"""Assertions the suites share, each failing with a message that says what the server did wrong."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping

import requests

from .schemas import schema_errors

CREATED_TOLERANCE_SECONDS = 600  # allows for clock skew between the test host and the serving node


def json_body(response: requests.Response) -> object:
    try:
        return response.json()
    except ValueError:
        raise AssertionError(f"HTTP {response.status_code} body is not JSON: {response.text[:300]!r}") from None


def ok_json(response: requests.Response) -> dict:
    """The JSON body of a 200 response."""
    assert response.status_code == 200, f"expected HTTP 200, got {response.status_code}: {response.text[:300]}"
    body = json_body(response)
    assert isinstance(body, dict), f"expected a JSON object, got {type(body).__name__}"
    return body


def matches_schema(name: str, body: object) -> None:
    errors = schema_errors(name, body)
    assert not errors, f"response violates the {name} schema:\n  " + "\n  ".join(errors) + \
        f"\nbody: {json.dumps(body)[:600]}"


def usage_consistent(usage: Mapping, max_tokens: int | None = None) -> None:
    prompt, completion, total = usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]
    assert total == prompt + completion, f"usage.total_tokens {total} != prompt {prompt} + completion {completion}"
    assert prompt > 0, "usage.prompt_tokens is 0 for a non-empty prompt"
    if max_tokens is not None:
        assert completion <= max_tokens, f"usage.completion_tokens {completion} exceeds max_tokens {max_tokens}"


def finish_reason_consistent(finish_reason: str | None, completion_tokens: int, max_tokens: int) -> None:
    """`length` exactly when the token budget ran out; `stop` only before it did."""
    assert finish_reason in ("stop", "length"), f"finish_reason {finish_reason!r} for a plain text request"
    if finish_reason == "length":
        assert completion_tokens == max_tokens, \
            f"finish_reason 'length' but only {completion_tokens} of max_tokens {max_tokens} were generated"
    if completion_tokens == max_tokens:
        assert finish_reason == "length", f"the budget of {max_tokens} tokens ran out but finish_reason is " \
            f"{finish_reason!r}, not 'length'"


def identity(body: Mapping, served_model: str) -> None:
    """`model` echoes the served name, ids are non-empty, `created` is now."""
    assert body["model"] == served_model, f"model {body['model']!r} does not echo the served name {served_model!r}"
    assert isinstance(body["id"], str) and body["id"].strip(), f"empty id: {body['id']!r}"
    created_now(body["created"])


def created_now(created: int) -> None:
    """`created` is a Unix time in seconds, and it is now."""
    skew = abs(created - time.time())
    assert skew < CREATED_TOLERANCE_SECONDS, f"created={created} is {skew:.0f}s away from now"


def text_present(text: str | None, completion_tokens: int) -> None:
    """Tokens without text is an inconsistency (e.g. a tokenizer that cannot decode the model's ids)."""
    if completion_tokens > 0:
        assert text, f"{completion_tokens} completion tokens reported but the text is {text!r}"


def wait_until_serving(post_probe, timeout: float = 30.0) -> None:
    """Block until a probe request answers 200 again, so one test's damage does not fail the next ones."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and post_probe().status_code != 200:
        time.sleep(0.5)


def stop_string(text: str, deterministic: bool) -> str | None:
    """A stop string the model will produce again, taken from its own greedy answer `text`: the third word for an
    engine whose temperature-0 text repeats (generation must end right before it), else the character it produced
    most (an engine of random token ids would not repeat a word). None when the answer has nothing to take."""
    words = text.split()
    if deterministic:
        return words[min(2, len(words) - 1)] if words else None
    characters = Counter(c for c in text if c.isalnum())
    return characters.most_common(1)[0][0] if characters else None
