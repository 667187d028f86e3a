"""Server-sent-event streaming: framing, chunk schemas, ids, roles, finish reasons, [DONE], usage."""

from __future__ import annotations

from collections import Counter

import pytest

from pytest_llama4.api import checks

pytestmark = pytest.mark.streaming

MAX_TOKENS = 12


@pytest.fixture(scope="module")
def chat_stream(api):
    return api.stream("/v1/chat/completions", api.chat_body(max_tokens=MAX_TOKENS))


@pytest.fixture(scope="module")
def chat_stream_with_usage(api):
    return api.stream("/v1/chat/completions",
                      api.chat_body(max_tokens=MAX_TOKENS, stream_options={"include_usage": True}))


def test_sse_framing(chat_stream):
    assert chat_stream.status == 200, f"HTTP {chat_stream.status}"
    assert chat_stream.content_type.split(";")[0].strip() == "text/event-stream", \
        f"Content-Type is {chat_stream.content_type!r}, not text/event-stream"
    assert not chat_stream.framing_errors, "SSE framing errors:\n" + "\n".join(chat_stream.framing_errors)


def test_done_sentinel_is_last_and_only_once(chat_stream):
    assert chat_stream.data, "the stream carried no data events"
    assert chat_stream.data[-1] == "[DONE]", f"last event is {chat_stream.data[-1][:200]!r}, not [DONE]"
    assert chat_stream.data.count("[DONE]") == 1, "[DONE] sent more than once"


def test_every_chunk_matches_schema(chat_stream):
    for chunk in chat_stream.chunks():
        checks.matches_schema("chat_completion_chunk", chunk)


def test_one_id_and_model_across_chunks(chat_stream, served_model):
    chunks = chat_stream.chunks()
    assert len({c["id"] for c in chunks}) == 1, f"ids vary across chunks: {sorted({c['id'] for c in chunks})}"
    assert {c["model"] for c in chunks} == {served_model}, f"models: {sorted({c['model'] for c in chunks})}"
    for created in {c["created"] for c in chunks}:
        checks.created_now(created)


def test_role_comes_first(chat_stream):
    first = chat_stream.chunks()[0]
    assert first["choices"] and first["choices"][0]["delta"].get("role") == "assistant", \
        f"first chunk does not open the assistant message: {first}"


def test_exactly_one_finish_reason_per_choice(chat_stream):
    reasons = [(choice["index"], choice["finish_reason"])
               for chunk in chat_stream.chunks() for choice in chunk["choices"] if choice.get("finish_reason")]
    per_choice = Counter(index for index, _ in reasons)
    assert per_choice == Counter({0: 1}), f"finish_reason per choice index: {dict(per_choice)} ({reasons})"
    assert reasons[0][1] in ("stop", "length"), f"finish_reason {reasons[0][1]!r}"


def test_no_usage_unless_asked(chat_stream):
    with_usage = [c for c in chat_stream.chunks() if c.get("usage")]
    assert not with_usage, f"usage sent without stream_options.include_usage: {with_usage[0]}"


def test_include_usage_gives_one_final_usage_chunk(chat_stream_with_usage):
    chunks = chat_stream_with_usage.chunks()
    with_usage = [i for i, c in enumerate(chunks) if c.get("usage")]
    assert with_usage == [len(chunks) - 1], \
        f"usage in chunks {with_usage} of {len(chunks)}; expected exactly one, the last"
    final = chunks[-1]
    assert final["choices"] == [], f"the usage chunk must have empty choices, has {final['choices']}"
    checks.usage_consistent(final["usage"], MAX_TOKENS)


@pytest.mark.exclusive  # alone: a GPU engine's temperature-0 text can change with what is batched beside it
def test_streamed_text_matches_non_streamed_at_temperature_zero(api, llama4_engine):
    if not llama4_engine.deterministic_text:
        pytest.skip(f"--engine={llama4_engine.name} emits random token ids, so streamed and non-streamed texts "
                    "cannot match")
    body = api.chat_body(max_tokens=MAX_TOKENS, temperature=0)
    whole = checks.ok_json(api.post("/v1/chat/completions", body))["choices"][0]["message"]["content"]
    streamed = "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in api.stream("/v1/chat/completions", body).chunks() if c["choices"])
    assert streamed == whole, f"streamed {streamed!r} != non-streamed {whole!r}"


@pytest.mark.exclusive  # Dynamo 1.4.2 answers 503 for seconds after it (see waivers.yaml)
def test_stop_sequence_ends_a_stream(api, llama4_engine):
    """A stream ends before a stop string the model itself produces (taken from its greedy answer)."""
    prompt = "Write a detailed essay on the history of GPUs."
    greedy = checks.ok_json(api.post("/v1/chat/completions", api.chat_body(prompt, max_tokens=64, temperature=0)))
    said = greedy["choices"][0]["message"]["content"] or ""
    stop = checks.stop_string(said, llama4_engine.deterministic_text)
    assert stop, f"the greedy answer has nothing to stop at: {said!r}"
    body = api.chat_body(prompt, max_tokens=64, temperature=0, stop=[stop])
    try:
        stream = api.stream("/v1/chat/completions", body)
    finally:
        checks.wait_until_serving(lambda: api.post("/v1/chat/completions", api.chat_body(max_tokens=1)))
    assert stream.status == 200, f"HTTP {stream.status}"
    chunks = stream.chunks()
    errors = [c for c in chunks if "error" in c]
    assert not errors, f"the stream carried an error event: {errors[0]}"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert stop not in text, f"stop sequence {stop!r} (from the greedy answer {said[:120]!r}) in output: {text[:200]!r}"
    reasons = [choice["finish_reason"] for c in chunks for choice in c["choices"] if choice.get("finish_reason")]
    assert reasons == ["stop"], f"finish_reasons with stop={[stop]} (a word of the greedy answer): {reasons}"


def test_completion_stream(api):
    stream = api.stream("/v1/completions", api.completion_body(max_tokens=MAX_TOKENS))
    assert stream.status == 200 and stream.data and stream.data[-1] == "[DONE]", \
        f"HTTP {stream.status}, last event {stream.data[-1:]!r}"
    chunks = stream.chunks()
    for chunk in chunks:
        checks.matches_schema("completion_chunk", chunk)
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]), "streamed completion has no text"
    reasons = [choice["finish_reason"] for c in chunks for choice in c["choices"] if choice.get("finish_reason")]
    assert len(reasons) == 1 and reasons[0] in ("stop", "length"), f"finish_reasons in the stream: {reasons}"


def test_openai_sdk_consumes_stream(openai_client, served_model):
    stream = openai_client.chat.completions.create(
        model=served_model, messages=[{"role": "user", "content": "Hello"}], max_tokens=MAX_TOKENS, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text, "the SDK saw no streamed text"
    reasons = [choice.finish_reason for c in chunks for choice in c.choices if choice.finish_reason]
    assert reasons in (["stop"], ["length"]), f"finish_reasons the SDK saw: {reasons}"
