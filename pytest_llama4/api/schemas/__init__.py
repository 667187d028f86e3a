"""JSON Schemas (Draft 2020-12) for OpenAI-compatible response bodies.

Each ``<name>.json`` in this package is one schema whose ``$id`` is ``https://pytest-llama4/schemas/<name>.json``;
``$ref`` between them resolves through a :class:`referencing.Registry` built from the package's files.
"""

from __future__ import annotations

import functools
import json
from importlib.resources import files

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = ["schema_errors", "validator"]

BASE_URI = "https://pytest-llama4/schemas/"
_MAX_MESSAGE = 300


@functools.cache
def _schemas() -> dict[str, dict]:
    """Every schema shipped in this package, keyed by file stem."""
    out: dict[str, dict] = {}
    for entry in files(__name__).iterdir():
        if entry.name.endswith(".json"):
            out[entry.name[: -len(".json")]] = json.loads(entry.read_text(encoding="utf-8"))
    return out


@functools.cache
def _registry() -> Registry:
    """A registry holding every packaged schema under its ``$id``."""
    resources = [
        (schema["$id"], Resource.from_contents(schema, default_specification=DRAFT202012))
        for schema in _schemas().values()
    ]
    return Registry().with_resources(resources)


@functools.cache
def validator(name: str) -> Validator:
    """Return the (cached) Draft 2020-12 validator for schema ``name``, e.g. ``"chat_completion"``."""
    schemas = _schemas()
    if name not in schemas:
        raise KeyError(f"unknown schema {name!r}; known: {', '.join(sorted(schemas))}")
    schema = schemas[name]
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=_registry())


def _describe(error: ValidationError) -> tuple[str, str]:
    """Return ``(json path, message)`` for one error, descending into anyOf/oneOf to the best sub-error."""
    while error.context:
        error = best_match(error.context)
    message = error.message
    if error.validator == "const":
        message += f" (got {json.dumps(error.instance, default=repr)[:80]})"
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 1] + "…"
    return error.json_path, message


def schema_errors(name: str, body: object) -> list[str]:
    """Validate ``body`` against schema ``name``: ``"<json path>: <message>"`` strings, empty when valid.

    Sorted by path, then message, so that errors on an object come before errors inside it.
    """
    found = sorted(_describe(error) for error in validator(name).iter_errors(body))
    return [f"{path}: {message}" for path, message in found]
