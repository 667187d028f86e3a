"""Tests for the OpenAI response-body JSON Schemas in ``pytest_llama4.api.schemas``.

Positive samples come from OpenAI's API reference (the response examples in openai/openai-openapi
``openapi.json``, x-oaiMeta, with their JSON typos fixed) and from bodies captured from the real Dynamo
frontend (ai-dynamo 1.4.2 with a mocker worker, 2026-11-24).
"""

from __future__ import annotations

import copy
import json
from importlib.resources import files

import pytest
from jsonschema import Draft202012Validator

from pytest_llama4.api.schemas import schema_errors, validator

# --- OpenAI API reference examples -------------------------------------------------------------------------

OPENAI_CHAT = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4.1-2025-04-14",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hello! How can I assist you today?",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 19,
        "completion_tokens": 10,
        "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
}

OPENAI_CHAT_TOOLS = {
    "id": "chatcmpl-abc123",
    "object": "chat.completion",
    "created": 1699896916,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_abc123",
                        "type": "function",
                        "function": {
                            "name": "get_current_weather",
                            "arguments": '{\n"location": "Boston, MA"\n}',
                        },
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 82,
        "completion_tokens": 17,
        "total_tokens": 99,
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
}

OPENAI_CHAT_LOGPROBS = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": 1702685778,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!"},
            "logprobs": {
                "content": [
                    {
                        "token": "Hello",
                        "logprob": -0.31725305,
                        "bytes": [72, 101, 108, 108, 111],
                        "top_logprobs": [
                            {"token": "Hello", "logprob": -0.31725305, "bytes": [72, 101, 108, 108, 111]},
                            {"token": "Hi", "logprob": -1.3190403, "bytes": [72, 105]},
                        ],
                    },
                    {
                        "token": "!",
                        "logprob": -0.02380986,
                        "bytes": [33],
                        "top_logprobs": [
                            {"token": "!", "logprob": -0.02380986, "bytes": [33]},
                            {"token": " there", "logprob": -3.787621, "bytes": [32, 116, 104, 101, 114, 101]},
                        ],
                    },
                ],
                "refusal": None,
            },
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    "system_fingerprint": None,
}

_CHUNK_HEAD = {
    "id": "chatcmpl-123",
    "object": "chat.completion.chunk",
    "created": 1694268190,
    "model": "gpt-4o-mini",
    "system_fingerprint": "fp_44709d6fcb",
}
OPENAI_CHUNKS = [
    {
        **_CHUNK_HEAD,
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
    },
    {
        **_CHUNK_HEAD,
        "choices": [{"index": 0, "delta": {"content": "Hello"}, "logprobs": None, "finish_reason": None}],
    },
    {**_CHUNK_HEAD, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]},
    # the extra chunk sent with stream_options.include_usage: no choices, only usage
    {**_CHUNK_HEAD, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}},
]

OPENAI_TOOL_CALL_CHUNKS = [
    {
        **_CHUNK_HEAD,
        "choices": [
            {
                "index": 0,
                "delta": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                            "type": "function",
                            "function": {"name": "get_current_weather", "arguments": ""},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": None,
            }
        ],
    },
    {
        **_CHUNK_HEAD,
        "choices": [
            {
                "index": 0,
                "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"location": "Boston"}'}}]},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
    },
    {**_CHUNK_HEAD, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}]},
]

OPENAI_COMPLETION = {
    "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
    "object": "text_completion",
    "created": 1589478378,
    "model": "gpt-3.5-turbo-instruct",
    "system_fingerprint": "fp_44709d6fcb",
    "choices": [
        {"text": "\n\nThis is indeed a test", "index": 0, "logprobs": None, "finish_reason": "length"}
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
}

OPENAI_COMPLETION_LOGPROBS = {
    **OPENAI_COMPLETION,
    "choices": [
        {
            "text": " a test",
            "index": 0,
            "logprobs": {
                "tokens": [" a", " test"],
                "token_logprobs": [-0.51, -0.02],
                "top_logprobs": [{" a": -0.51, " the": -1.2}, {" test": -0.02, " trial": -4.1}],
                "text_offset": [14, 16],
            },
            "finish_reason": "length",
        }
    ],
}

OPENAI_COMPLETION_CHUNK = {
    "id": "cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe",
    "object": "text_completion",
    "created": 1690759702,
    "choices": [{"text": "This", "index": 0, "logprobs": None, "finish_reason": None}],
    "model": "gpt-3.5-turbo-instruct",
    "system_fingerprint": "fp_44709d6fcb",
}

OPENAI_MODELS = {
    "object": "list",
    "data": [
        {"id": "model-id-0", "object": "model", "created": 1686935002, "owned_by": "organization-owner"},
        {
            "id": "model-id-2",
            "object": "model",
            "created": 1686935002,
            "owned_by": "openai",
            "shutdown_date": None,
        },
    ],
}

OPENAI_ERROR = {
    "error": {
        "message": "Incorrect API key provided: sk-abc. You can find your API key at https://platform.openai.com.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}

# --- bodies captured from the Dynamo frontend (ai-dynamo 1.4.2, mocker engine) ---------------------------

DYNAMO_CHAT = {
    "id": "chatcmpl-5d5aff1a-7911-4ea4-bebb-766c9ffd95bb",
    "choices": [
        {
            "index": 0,
            "message": {
                "content": " w1969 w1172 w1473 w1794 w1676",
                "role": "assistant",
                "reasoning_content": None,
            },
            "finish_reason": "length",
            "logprobs": None,
        }
    ],
    "created": 1795552326,
    "model": "fx",
    "service_tier": None,
    "system_fingerprint": None,
    "object": "chat.completion",
    "usage": {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9},
}

_DYNAMO_CHUNK_HEAD = {
    "id": "chatcmpl-338b72b8-a99a-4b11-ba6c-5cc9698b27fa",
    "created": 1795552326,
    "model": "fx",
    "service_tier": None,
    "system_fingerprint": None,
    "object": "chat.completion.chunk",
}
DYNAMO_CHUNKS = [
    {
        **_DYNAMO_CHUNK_HEAD,
        "choices": [
            {
                "index": 0,
                "delta": {"content": " w1290", "role": "assistant"},
                "finish_reason": None,
                "logprobs": None,
            }
        ],
        "usage": None,
    },
    {
        **_DYNAMO_CHUNK_HEAD,
        "choices": [
            {"index": 0, "delta": {"role": "assistant"}, "finish_reason": "length", "logprobs": None}
        ],
        "usage": None,
    },
    {
        **_DYNAMO_CHUNK_HEAD,
        "choices": [],
        "usage": {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7},
    },
]

DYNAMO_COMPLETION = {
    "id": "cmpl-02082ab4-f405-48f5-93ae-869a97e68dc3",
    "choices": [{"text": " w1327 w1371 w1295 w1251", "index": 0, "finish_reason": "length"}],
    "created": 1795552326,
    "model": "fx",
    "system_fingerprint": None,
    "object": "text_completion",
    "usage": {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6},
}

_DYNAMO_CMPL_HEAD = {
    "id": "cmpl-6fc41249-367d-4e92-bbdd-e5d8b481fe41",
    "created": 1795552326,
    "model": "fx",
    "system_fingerprint": None,
    "object": "text_completion",
    "usage": None,
}
DYNAMO_COMPLETION_CHUNKS = [
    {**_DYNAMO_CMPL_HEAD, "choices": [{"text": " w1881", "index": 0}]},
    {**_DYNAMO_CMPL_HEAD, "choices": [{"text": "", "index": 0, "finish_reason": "length"}]},
]

DYNAMO_MODELS = {
    "object": "list",
    "data": [
        {"id": "fx", "object": "model", "created": 1795552322, "owned_by": "nvidia", "context_window": 0}
    ],
}

# Dynamo 1.4.2 answers errors without the OpenAI `error` wrapper (HTTP 400 for an empty `messages`).
DYNAMO_ERROR = {
    "message": "Validation: The 'messages' field cannot be empty. At least one message is required.",
    "type": "Bad Request",
    "code": 400,
}

# The seed guide's sample answer to a /v1/chat/completions request (text shortened): a *text completion*.
SEED_CHAT_ANSWER = {
    "id": "cmpl-3e87ea5c-010e-4dd2-bcc4-3298ebd845a8",
    "choices": [
        {
            "text": "NVIDIA is considered a great company for several reasons: ...",
            "index": 0,
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "created": 1753329671,
    "model": "nvidia/Llama-4-Maverick-17B-128E-Instruct-FP8",
    "system_fingerprint": None,
    "object": "text_completion",
    "usage": {
        "prompt_tokens": 16,
        "completion_tokens": 562,
        "total_tokens": 578,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    },
}

# Constructed: what trtllm-serve adds on top of the OpenAI fields (extras must be accepted).
TRTLLM_STYLE_COMPLETION = {
    **OPENAI_COMPLETION,
    "choices": [
        {
            "text": " hello",
            "index": 0,
            "logprobs": None,
            "finish_reason": "stop",
            "stop_reason": None,
            "token_ids": [22172],
            "avg_decoded_tokens_per_iter": 2.9,
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6, "prompt_tokens_details": None},
    "prompt_token_ids": [1, 2, 3, 4, 5],
    "nvext": {"worker_id": {"prefill_worker_id": 1, "decode_worker_id": 2}},
}

VALID = [
    ("chat_completion", OPENAI_CHAT),
    ("chat_completion", OPENAI_CHAT_TOOLS),
    ("chat_completion", OPENAI_CHAT_LOGPROBS),
    ("chat_completion", DYNAMO_CHAT),
    *(("chat_completion_chunk", c) for c in OPENAI_CHUNKS),
    *(("chat_completion_chunk", c) for c in OPENAI_TOOL_CALL_CHUNKS),
    *(("chat_completion_chunk", c) for c in DYNAMO_CHUNKS),
    ("completion", OPENAI_COMPLETION),
    ("completion", OPENAI_COMPLETION_LOGPROBS),
    ("completion", DYNAMO_COMPLETION),
    ("completion", TRTLLM_STYLE_COMPLETION),
    ("completion_chunk", OPENAI_COMPLETION_CHUNK),
    *(("completion_chunk", c) for c in DYNAMO_COMPLETION_CHUNKS),
    ("models_list", OPENAI_MODELS),
    ("models_list", DYNAMO_MODELS),
    ("models_list", {"object": "list", "data": []}),
    ("error", OPENAI_ERROR),
    (
        "error",
        {"error": {"message": "max_tokens must be at least 1", "type": "BadRequestError", "code": 400}},
    ),
]


@pytest.mark.parametrize(("name", "body"), VALID, ids=[f"{n}-{i}" for i, (n, _) in enumerate(VALID)])
def test_valid_bodies_pass(name: str, body: dict) -> None:
    assert schema_errors(name, body) == []


def _schema_files() -> list[str]:
    return sorted(e.name for e in files("pytest_llama4.api.schemas").iterdir() if e.name.endswith(".json"))


def test_expected_schema_files_exist() -> None:
    expected = {"common", "models_list", "chat_completion", "chat_completion_chunk", "completion"}
    expected |= {"completion_chunk", "error"}
    assert expected <= {f.removesuffix(".json") for f in _schema_files()}


@pytest.mark.parametrize("filename", _schema_files())
def test_schema_file_is_valid_draft_2020_12(filename: str) -> None:
    schema = json.loads(files("pytest_llama4.api.schemas").joinpath(filename).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://pytest-llama4/schemas/{filename}"
    assert "openai/openai-openapi" in schema["description"]


def test_validator_is_cached_draft_2020_12() -> None:
    assert validator("chat_completion") is validator("chat_completion")
    assert isinstance(validator("chat_completion"), Draft202012Validator)


def test_unknown_schema_name() -> None:
    with pytest.raises(KeyError, match="unknown schema 'chat'"):
        validator("chat")


# --- negative cases ----------------------------------------------------------------------------------------


def test_seed_text_completion_answer_fails_chat_completion() -> None:
    errors = schema_errors("chat_completion", SEED_CHAT_ANSWER)
    assert "$.object: 'chat.completion' was expected (got \"text_completion\")" in errors
    assert "$.choices[0]: 'message' is a required property" in errors
    # the same body is a fine *text* completion: the deviation is the endpoint, not the JSON
    assert schema_errors("completion", SEED_CHAT_ANSWER) == []


def test_chunk_without_choices_fails() -> None:
    chunk = {k: v for k, v in OPENAI_CHUNKS[1].items() if k != "choices"}
    assert schema_errors("chat_completion_chunk", chunk) == ["$: 'choices' is a required property"]


def test_chunk_with_wrong_object_fails() -> None:
    chunk = {**OPENAI_CHUNKS[1], "object": "chat.completion"}
    assert schema_errors("chat_completion_chunk", chunk) == [
        "$.object: 'chat.completion.chunk' was expected (got \"chat.completion\")"
    ]


@pytest.mark.parametrize("name", ["chat_completion", "completion"])
def test_negative_usage_fails(name: str) -> None:
    body = copy.deepcopy(OPENAI_CHAT if name == "chat_completion" else OPENAI_COMPLETION)
    body["usage"]["completion_tokens"] = -1
    assert schema_errors(name, body) == ["$.usage.completion_tokens: -1 is less than the minimum of 0"]


def test_usage_missing_and_non_integer_tokens_fail() -> None:
    chunk = {**DYNAMO_CHUNKS[-1], "usage": {"prompt_tokens": 4.5, "completion_tokens": 3}}
    assert schema_errors("chat_completion_chunk", chunk) == [
        "$.usage: 'total_tokens' is a required property",
        "$.usage.prompt_tokens: 4.5 is not of type 'integer'",
    ]


def test_error_without_message_fails() -> None:
    assert schema_errors(
        "error", {"error": {"type": "invalid_request_error", "param": None, "code": None}}
    ) == ["$.error: 'message' is a required property"]
    assert schema_errors("error", {"error": {"message": ""}}) == ["$.error.message: '' should be non-empty"]


def test_non_openai_error_shapes_fail() -> None:
    assert schema_errors("error", DYNAMO_ERROR) == ["$: 'error' is a required property"]
    assert schema_errors("error", {"error": "Extra inputs are not permitted"}) == [
        "$.error: 'Extra inputs are not permitted' is not of type 'object'"
    ]


def test_finish_reason_banana_fails() -> None:
    body = copy.deepcopy(OPENAI_CHAT)
    body["choices"][0]["finish_reason"] = "banana"
    assert schema_errors("chat_completion", body) == [
        "$.choices[0].finish_reason: 'banana' is not one of "
        "['stop', 'length', 'tool_calls', 'content_filter', 'function_call']"
    ]
    chunk = copy.deepcopy(OPENAI_CHUNKS[2])
    chunk["choices"][0]["finish_reason"] = "banana"
    assert len(schema_errors("chat_completion_chunk", chunk)) == 1


def test_final_response_needs_finish_reason() -> None:
    body = copy.deepcopy(DYNAMO_CHAT)
    body["choices"][0]["finish_reason"] = None
    assert schema_errors("chat_completion", body) == [
        "$.choices[0].finish_reason: None is not one of "
        "['stop', 'length', 'tool_calls', 'content_filter', 'function_call']"
    ]
    del body["choices"][0]["finish_reason"]
    assert schema_errors("chat_completion", body) == ["$.choices[0]: 'finish_reason' is a required property"]


def test_completion_finish_reason_excludes_chat_values() -> None:
    body = copy.deepcopy(OPENAI_COMPLETION)
    body["choices"][0]["finish_reason"] = "tool_calls"
    assert schema_errors("completion", body) == [
        "$.choices[0].finish_reason: 'tool_calls' is not one of ['stop', 'length', 'content_filter']"
    ]


def test_non_streaming_response_needs_a_choice() -> None:
    assert schema_errors("chat_completion", {**OPENAI_CHAT, "choices": []}) == [
        "$.choices: [] should be non-empty"
    ]


def test_wrong_role_and_content_type_fail() -> None:
    body = copy.deepcopy(OPENAI_CHAT)
    body["choices"][0]["message"].update(role="user", content=["parts"])
    assert schema_errors("chat_completion", body) == [
        "$.choices[0].message.content: ['parts'] is not of type 'string', 'null'",
        "$.choices[0].message.role: 'assistant' was expected (got \"user\")",
    ]


def test_function_tool_call_needs_function() -> None:
    body = copy.deepcopy(OPENAI_CHAT_TOOLS)
    del body["choices"][0]["message"]["tool_calls"][0]["function"]
    assert schema_errors("chat_completion", body) == [
        "$.choices[0].message.tool_calls[0]: 'function' is a required property"
    ]


def test_models_list_entry_fields() -> None:
    body = {"object": "list", "data": [{"id": "fx", "object": "model"}]}
    assert schema_errors("models_list", body) == [
        "$.data[0]: 'created' is a required property",
        "$.data[0]: 'owned_by' is a required property",
    ]


def test_non_object_body() -> None:
    assert schema_errors("chat_completion", "Internal Server Error") == [
        "$: 'Internal Server Error' is not of type 'object'"
    ]
