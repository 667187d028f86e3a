from pytest_llama4.api.client import parse_sse


def test_parses_data_events_and_done():
    payloads, errors = parse_sse('data: {"a": 1}\n\ndata: {"b": 2}\n\ndata: [DONE]\n\n')
    assert payloads == ['{"a": 1}', '{"b": 2}', "[DONE]"] and errors == []


def test_crlf_comments_and_multiline_data():
    payloads, errors = parse_sse(": keep-alive\r\n\r\ndata: line1\r\ndata: line2\r\n\r\n")
    assert payloads == ["line1\nline2"] and errors == []


def test_non_sse_lines_are_framing_errors():
    payloads, errors = parse_sse('{"message": "not ready"}')
    assert payloads == [] and errors == ["not an SSE field line: '{\"message\": \"not ready\"}'"]
