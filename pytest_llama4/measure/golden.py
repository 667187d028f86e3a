"""Greedy outputs of a fixed prompt set, recorded from one run and compared on the next: a speculative-decoding
change that alters text is caught. Eagle3 output may legitimately differ from a non-speculative run
(TensorRT-LLM #8285), so a golden file is only ever compared with the configuration it was recorded from."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from pathlib import Path

PROMPTS = (
    "Explain in two sentences why the sky is blue.",
    "Write a haiku about a GPU cluster at night.",
    "What is 17 multiplied by 23? Answer with the number only.",
    "List three prime numbers greater than 100.",
    "Translate 'good morning, how are you?' into French.",
    "Summarise the plot of Romeo and Juliet in one sentence.",
    "Give a Python one-liner that reverses a string s.",
    "Name the largest planet in the solar system and one of its moons.",
)
MAX_TOKENS = 64


def record(path: Path, outputs: dict[str, str], recorded_with: dict[str, str]) -> None:
    """The file is a measurement: it says what produced it (engine, model, config), when and on which host, and
    how (each prompt alone, greedy), so a later difference can be traced to what changed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    provenance = {**recorded_with, "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
                  "host": socket.gethostname(), "method": "each prompt sent alone, temperature 0, seed 0"}
    path.write_text(json.dumps({"recorded_with": provenance, "max_tokens": MAX_TOKENS, "outputs": outputs},
                               indent=1, ensure_ascii=False) + "\n")


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def differences(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    """One line per prompt whose output changed (or is missing), showing where the texts part."""
    lines = []
    for prompt, want in expected.items():
        got = actual.get(prompt)
        if got == want:
            continue
        if got is None:
            lines.append(f"{prompt!r}: no output")
            continue
        at = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), min(len(want), len(got)))
        lines.append(f"{prompt!r}: differs from character {at}: golden {want[at:at + 60]!r}, now {got[at:at + 60]!r}")
    return lines
