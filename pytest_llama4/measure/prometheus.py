"""Read a Prometheus text exposition (Dynamo's /metrics) into sums per metric name, for before/after deltas."""

from __future__ import annotations

import re
from collections import defaultdict

import requests

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


# The label naming the served model: Dynamo's frontend says `model`, vLLM `model_name`.
MODEL_LABELS = ("model", "model_name")


def parse(text: str, **match_labels: str) -> dict[str, float]:
    """Sum of every sample per metric name, over the samples whose labels include `match_labels` (`model=` matches
    either label that names the model)."""
    totals: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        sample = _SAMPLE.match(line)
        if not sample or line.startswith("#"):
            continue
        labels = dict(_LABEL.findall(sample.group(2) or ""))
        if "model_name" in labels and "model" not in labels:
            labels["model"] = labels["model_name"]
        if all(labels.get(k) == v for k, v in match_labels.items()):
            try:
                totals[sample.group(1)] += float(sample.group(3))
            except ValueError:
                continue
    return dict(totals)


def scrape(base_url: str, **match_labels: str) -> dict[str, float] | None:
    """The frontend's metrics, or None when /metrics is not Prometheus text (trtllm-serve answers JSON)."""
    return read(f"{base_url}/metrics", **match_labels)


def read(url: str, **match_labels: str) -> dict[str, float] | None:
    """A metrics page (a service record's metrics_url), or None when it is not Prometheus text."""
    try:
        response = requests.get(url, timeout=10)
    except requests.RequestException:
        return None
    if response.status_code != 200 or response.text.lstrip().startswith(("[", "{")):
        return None
    return parse(response.text, **match_labels)
