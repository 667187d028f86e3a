"""OpenAI API responses: JSON Schemas we ship, the official SDK's parser, and what a schema cannot express."""

from __future__ import annotations

import pytest

from pytest_llama4.api import checks

pytestmark = pytest.mark.schema

MAX_TOKENS = 16
LONG_ANSWER = "Write a detailed, twenty-paragraph essay on the history of GPUs."


def test_models_list(api, served_model):
    body = checks.ok_json(api.get("/v1/models"))
    checks.matches_schema("models_list", body)
    ids = [m["id"] for m in body["data"]]
    assert served_model in ids, f"/v1/models lists {ids}, not the served model {served_model!r}"


def test_chat_completion_schema(api):
    checks.matches_schema("chat_completion", checks.ok_json(api.post("/v1/chat/completions",
                                                                     api.chat_body(max_tokens=MAX_TOKENS))))


def test_chat_completion_semantics(api, served_model):
    body = checks.ok_json(api.post("/v1/chat/completions", api.chat_body(max_tokens=MAX_TOKENS)))
    checks.identity(body, served_model)
    usage = body["usage"]
    checks.usage_consistent(usage, MAX_TOKENS)
    assert len(body["choices"]) == 1, f"expected 1 choice, got {len(body['choices'])}"
    choice = body["choices"][0]
    assert choice["index"] == 0 and choice.get("message", {}).get("role") == "assistant", \
        f"choice is not an assistant message: {choice}"
    checks.finish_reason_consistent(choice["finish_reason"], usage["completion_tokens"], MAX_TOKENS)
    checks.text_present(choice["message"]["content"], usage["completion_tokens"])


def test_chat_completion_reports_length_when_budget_runs_out(api):
    body = checks.ok_json(api.post("/v1/chat/completions", api.chat_body(LONG_ANSWER, max_tokens=2)))
    assert body["usage"]["completion_tokens"] == 2, f"max_tokens=2 produced {body['usage']['completion_tokens']}"
    assert body["choices"][0]["finish_reason"] == "length", \
        f"finish_reason {body['choices'][0]['finish_reason']!r} when the 2-token budget ran out"


def test_completion_schema_and_semantics(api, served_model):
    body = checks.ok_json(api.post("/v1/completions", api.completion_body(max_tokens=MAX_TOKENS)))
    checks.matches_schema("completion", body)
    checks.identity(body, served_model)
    choice, usage = body["choices"][0], body["usage"]
    checks.usage_consistent(usage, MAX_TOKENS)
    checks.finish_reason_consistent(choice["finish_reason"], usage["completion_tokens"], MAX_TOKENS)
    checks.text_present(choice["text"], usage["completion_tokens"])


def test_n_returns_n_choices(api):
    body = checks.ok_json(api.post("/v1/chat/completions", api.chat_body(max_tokens=4, n=2)))
    indexes = sorted(c["index"] for c in body["choices"])
    assert indexes == [0, 1], f"n=2 returned choices with indexes {indexes}"


@pytest.mark.exclusive  # Dynamo 1.4.2 answers 503 for seconds after it (see waivers.yaml)
def test_stop_sequence_ends_generation(api, llama4_engine):
    """Generation ends before a stop string the model itself produces (taken from its greedy answer)."""
    greedy = checks.ok_json(api.post("/v1/chat/completions", api.chat_body(LONG_ANSWER, max_tokens=64, temperature=0)))
    said = greedy["choices"][0]["message"]["content"] or ""
    stop = checks.stop_string(said, llama4_engine.deterministic_text)
    assert stop, f"the greedy answer has nothing to stop at: {said!r}"
    try:
        response = api.post("/v1/chat/completions",
                            api.chat_body(LONG_ANSWER, max_tokens=64, temperature=0, stop=[stop]))
    finally:
        checks.wait_until_serving(lambda: api.post("/v1/chat/completions", api.chat_body(max_tokens=1)))
    choice = checks.ok_json(response)["choices"][0]
    content = choice["message"]["content"] or ""
    assert stop not in content, f"stop sequence {stop!r} (from the greedy answer {said[:120]!r}) in output: {content!r}"
    assert choice["finish_reason"] == "stop", (f"finish_reason {choice['finish_reason']!r} with stop={[stop]} (a "
                                               f"word of the greedy answer {said[:120]!r}); output {content[:120]!r}")


@pytest.mark.exclusive  # alone: a GPU engine's temperature-0 text can change with what is batched beside it
def test_greedy_decoding_is_deterministic(api, llama4_engine):
    if not llama4_engine.deterministic_text:
        pytest.skip(f"--engine={llama4_engine.name} emits random token ids, so temperature=0 output is not "
                    "deterministic there")
    body = api.chat_body(max_tokens=MAX_TOKENS, temperature=0)
    first, second = (checks.ok_json(api.post("/v1/chat/completions", body)) for _ in range(2))
    texts = [b["choices"][0]["message"]["content"] for b in (first, second)]
    assert texts[0] == texts[1], f"temperature=0 gave different texts: {texts}"


def test_openai_sdk_parses_responses(openai_client, served_model):
    assert served_model in [m.id for m in openai_client.models.list()]
    chat = openai_client.chat.completions.create(
        model=served_model, messages=[{"role": "user", "content": "Hello"}], max_tokens=MAX_TOKENS)
    assert chat.object == "chat.completion" and chat.choices[0].message.content, chat
    completion = openai_client.completions.create(model=served_model, prompt="Hello", max_tokens=MAX_TOKENS)
    assert completion.object == "text_completion" and completion.choices[0].text, completion
