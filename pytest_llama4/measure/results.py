"""`reports/<run-id>/perf.json`, typed: what one throughput scenario measured (`ScenarioResult`) and the run's
document of them (`PerfDocument`). The one place that knows the file's shape: the throughput suite builds results,
the plugin writes the document, the summary page and --baseline read it back.

Written with the keys, in the order, perf.json has always had. Earlier runs' files stay readable as baselines: those
from before the cross-check and the validity gate lack `cross_check` and `valid`, and a hand-made baseline needs
only each scenario's `name` and `figures`; whatever is absent reads as None or empty."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .crosscheck import CrossCheck
from .load import Scenario

FILE = "perf.json"

_NONE = type(None)
_NUMBER = (int, float)
_NUMBER_OR_NONE = (int, float, _NONE)
_TEXT_OR_NONE = (str, _NONE)
_REQUIRED = object()


class PerfFileError(ValueError):
    """A perf.json that cannot be read, is not JSON or is not shaped like one. The message names the part that
    is wrong, not the file: callers know which file they read and how to say so."""


@dataclass(frozen=True)
class ScenarioParams:
    """The load shape a scenario ran (its profile entry, less what does not change the figures' meaning)."""

    input_tokens: int
    output_tokens: int
    concurrency: int | None
    request_rate: float | None
    num_prompts: int
    endpoint: str

    @classmethod
    def of(cls, scenario: Scenario) -> ScenarioParams:
        return cls(scenario.input_tokens, scenario.output_tokens, scenario.concurrency, scenario.request_rate,
                   scenario.num_prompts, scenario.endpoint)

    @classmethod
    def from_dict(cls, data: object, where: str) -> ScenarioParams:
        return cls(input_tokens=_field(data, "input_tokens", int, where),
                   output_tokens=_field(data, "output_tokens", int, where),
                   concurrency=_field(data, "concurrency", (int, _NONE), where),
                   request_rate=_field(data, "request_rate", _NUMBER_OR_NONE, where),
                   num_prompts=_field(data, "num_prompts", int, where),
                   endpoint=_field(data, "endpoint", str, where))


@dataclass(frozen=True)
class LimitResult:
    """One floor or ceiling of the profile against the measured figure (None: the figure was not measured)."""

    metric: str
    kind: str  # "floor" or "ceiling"
    limit: float
    measured: float | None
    ok: bool

    @classmethod
    def from_dict(cls, data: object, where: str) -> LimitResult:
        return cls(metric=_field(data, "metric", str, where), kind=_field(data, "kind", str, where),
                   limit=_field(data, "limit", _NUMBER, where),
                   measured=_field(data, "measured", _NUMBER_OR_NONE, where),
                   ok=_field(data, "ok", bool, where))


@dataclass(frozen=True, kw_only=True)
class ScenarioResult:
    """One scenario's entry of perf.json."""

    name: str
    scenario: ScenarioParams | None = None  # None only in a hand-made baseline
    figures: dict[str, float]  # metrics.summarize's names
    limits: tuple[LimitResult, ...] = ()
    samples: dict[str, list[float]] = field(default_factory=dict)  # metrics.samples: per request, for the plots
    warnings: tuple[str, ...] = ()
    cross_check: CrossCheck | None = None  # None: the frontend had no /metrics (or a perf.json older than it)
    valid: bool | None = None  # None: a perf.json older than the validity gate

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples serialise as arrays)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object, where: str) -> ScenarioResult:
        params = _field(data, "scenario", (dict, _NONE), where, None)
        check = _field(data, "cross_check", (dict, _NONE), where, None)
        samples = _field(data, "samples", dict, where, {})
        return cls(
            name=_field(data, "name", str, where),
            scenario=None if params is None else ScenarioParams.from_dict(params, f"{where}.scenario"),
            figures=_numbers(data, "figures", dict, where),
            limits=tuple(LimitResult.from_dict(row, f"{where}.limits[{i}]")
                         for i, row in enumerate(_field(data, "limits", list, where, []))),
            samples={name: _numbers(samples, name, list, f"{where}.samples") for name in samples},
            warnings=_texts(data, "warnings", where, ()),
            cross_check=None if check is None else _cross_check(check, f"{where}.cross_check"),
            valid=_field(data, "valid", (bool, _NONE), where, None))


@dataclass(frozen=True)
class AcceptanceResult:
    """Speculative decoding as the engine counted it over the speculative suite's requests."""

    acceptance_length: float  # 1 + accepted drafts per drafting step
    drafted: float
    accepted: float
    steps: float | None  # drafting steps, where the engine counts them (else drafted / max_draft_len)
    max_draft_len: int
    floor: float | None  # the profile's speculative.acceptance_length_floor

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object, where: str = "speculative") -> AcceptanceResult:
        return cls(acceptance_length=_field(data, "acceptance_length", _NUMBER, where),
                   drafted=_field(data, "drafted", _NUMBER, where), accepted=_field(data, "accepted", _NUMBER, where),
                   steps=_field(data, "steps", _NUMBER_OR_NONE, where, None),
                   max_draft_len=_field(data, "max_draft_len", int, where),
                   floor=_field(data, "floor", _NUMBER_OR_NONE, where, None))


@dataclass(frozen=True, kw_only=True)
class PerfDocument:
    """perf.json: the run it came from and every scenario it measured, in the order they were recorded."""

    run_id: str | None = None  # the header is absent only from a hand-made baseline
    settings: dict[str, str] = field(default_factory=dict)  # Settings.as_properties()
    deployment: str | None = None  # Deployment.describe(); None when none was started
    profile: str | None = None
    scenarios: tuple[ScenarioResult, ...]
    speculative: AcceptanceResult | None = None  # absent from runs that measured no acceptance

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        if self.speculative is None:
            del document["speculative"]  # the file keeps the shape it had before acceptance was recorded
        return document

    @classmethod
    def from_dict(cls, data: object) -> PerfDocument:
        return cls(run_id=_field(data, "run_id", _TEXT_OR_NONE, "", None),
                   settings=_field(data, "settings", dict, "", {}),
                   deployment=_field(data, "deployment", _TEXT_OR_NONE, "", None),
                   profile=_field(data, "profile", _TEXT_OR_NONE, "", None),
                   scenarios=tuple(ScenarioResult.from_dict(entry, f"scenarios[{i}]")
                                   for i, entry in enumerate(_field(data, "scenarios", list, ""))),
                   speculative=AcceptanceResult.from_dict(data["speculative"])
                   if isinstance(data, dict) and data.get("speculative") is not None else None)

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def read(cls, path: Path) -> PerfDocument:
        """Raises PerfFileError for a file that is missing, not JSON or not a perf.json."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:  # ValueError: not JSON, or not UTF-8
            raise PerfFileError(str(error)) from None
        return cls.from_dict(data)


def _field(data: object, key: str, kind: type | tuple[type, ...], where: str, default: Any = _REQUIRED) -> Any:
    """`data[key]`, checked to be a `kind`; `default` where the key is absent, which older files allow. `where`:
    the path to `data` in the file ("" at the top), for the message."""
    if not isinstance(data, dict):
        raise PerfFileError(f"{where or 'top level'}: expected an object, found {type(data).__name__}")
    if key not in data:
        if default is _REQUIRED:
            raise PerfFileError(f"{where or 'top level'}: no {key!r}")
        return default
    if not isinstance(data[key], kind):
        raise PerfFileError(f"{_at(where, key)}: unexpected {type(data[key]).__name__} {data[key]!r:.60}")
    return data[key]


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _numbers(data: object, key: str, kind: type[dict] | type[list], where: str) -> Any:
    """`data[key]`: a `kind` (a mapping or a list) of numbers only."""
    values = _field(data, key, kind, where)
    if not all(isinstance(v, _NUMBER) for v in (values.values() if kind is dict else values)):
        raise PerfFileError(f"{_at(where, key)}: holds something that is not a number")
    return values


def _texts(data: object, key: str, where: str, default: Any = _REQUIRED) -> tuple[str, ...]:
    """`data[key]`: a list of strings only."""
    values = _field(data, key, list, where, default)
    if not all(isinstance(v, str) for v in values):
        raise PerfFileError(f"{_at(where, key)}: holds something that is not a string")
    return tuple(values)


def _cross_check(data: dict, where: str) -> CrossCheck:
    return CrossCheck(server_requests=_field(data, "server_requests", _NUMBER, where),
                      client_requests=_field(data, "client_requests", int, where),
                      server_ttft_ms_mean=_field(data, "server_ttft_ms_mean", _NUMBER_OR_NONE, where),
                      client_ttft_ms_mean=_field(data, "client_ttft_ms_mean", _NUMBER, where),
                      problems=_texts(data, "problems", where))
