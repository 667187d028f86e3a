from pytest_llama4.measure.prometheus import parse

TEXT = """# HELP dynamo_frontend_requests_total Total requests
# TYPE dynamo_frontend_requests_total counter
dynamo_frontend_requests_total{endpoint="chat_completions",model="m",request_type="stream",status="success"} 3
dynamo_frontend_requests_total{endpoint="completions",model="m",request_type="stream",status="success"} 2
dynamo_frontend_requests_total{endpoint="chat_completions",model="other",request_type="unary",status="error"} 7
dynamo_frontend_time_to_first_token_seconds_sum{model="m"} 0.25
dynamo_frontend_time_to_first_token_seconds_count{model="m"} 5
process_cpu_seconds_total 1.5e+01
"""


def test_sums_samples_per_name_filtered_by_labels():
    assert parse(TEXT, model="m") == {
        "dynamo_frontend_requests_total": 5.0,
        "dynamo_frontend_time_to_first_token_seconds_sum": 0.25,
        "dynamo_frontend_time_to_first_token_seconds_count": 5.0,
    }
    everything = parse(TEXT)
    assert everything["dynamo_frontend_requests_total"] == 12.0
    assert everything["process_cpu_seconds_total"] == 15.0


def test_the_model_filter_matches_vllms_model_name_label_too():
    text = 'vllm:x_total{engine="0",model_name="m"} 3\nvllm:x_total{engine="0",model_name="other"} 5\n'
    assert parse(text, model="m") == {"vllm:x_total": 3.0}
