"""The engine-config linter: its library, the `pytest-llama4 lint-config` command, and the `config` suite."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_llama4.config import lint as config_lint
from pytest_llama4.config.lint import Finding, known_keys, lint_file, lint_mocker_file, lint_pair

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "engine_configs"
EAGLE = CONFIGS / "llama4" / "eagle"
ONE_MODEL = CONFIGS / "llama4" / "eagle_one_model"
SUITE = ROOT / "suites" / "test_config.py"
CLI = Path(sys.executable).parent / "pytest-llama4"
# TensorRT-LLM LLM-API YAML (engine_configs/vllm/ holds `vllm serve` arguments, which are not linted)
SHIPPED_YAML = sorted(p for p in CONFIGS.rglob("*") if p.suffix in (".yaml", ".yml") and "vllm" not in p.parts)
SHIPPED_JSON = sorted((CONFIGS / "mocker").glob("*.json"))

# A tensorrt_llm stand-in: pydantic models shaped like TensorRT-LLM's llm_args (extra="forbid", an alias, a
# discriminated union, a Literal), enough for the "tensorrt_llm is importable" paths.
STANDIN_LLM_ARGS = '''
from typing import Annotated, Literal, Optional, Union
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

class StrictBaseModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

class KvCacheConfig(StrictBaseModel):
    free_gpu_memory_fraction: float = 0.9
    enable_block_reuse: bool = True

class DecodingBaseConfig(StrictBaseModel):
    max_draft_len: Optional[int] = None
    speculative_model: Optional[str] = Field(
        default=None, validation_alias=AliasChoices("speculative_model", "speculative_model_dir"))

class EagleDecodingConfig(DecodingBaseConfig):
    decoding_type: Literal["Eagle"] = "Eagle"
    eagle3_one_model: bool = True

class MTPDecodingConfig(DecodingBaseConfig):
    decoding_type: Literal["MTP"] = "MTP"

class CacheTransceiverConfig(StrictBaseModel):
    backend: Optional[Literal["DEFAULT", "UCX", "NIXL"]] = None

SpeculativeConfig = Annotated[Union[EagleDecodingConfig, MTPDecodingConfig], Field(discriminator="decoding_type")]

class TorchLlmArgs(StrictBaseModel):
    model: str
    skip_tokenizer_init: bool = False
    backend: Literal["pytorch"] = "pytorch"
    max_num_tokens: int = 8192
    kv_cache_config: KvCacheConfig = Field(default_factory=KvCacheConfig)
    per_modality: dict[str, KvCacheConfig] | None = None
    speculative_config: Optional[SpeculativeConfig] = None
    cache_transceiver_config: Optional[CacheTransceiverConfig] = None

TORCH_LLMARGS_REMOVED_ARGS = frozenset({"sampler_type"})
'''


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def messages(findings: list[Finding], severity: str = "error") -> list[str]:
    return [f"{f.key}: {f.message}" for f in findings if f.severity == severity]


def seed_with_typo(tmp_path: Path) -> Path:
    """The seed's eagle_agg.yaml with `max_num_tokens` misspelt as `max_num_token`."""
    text = (EAGLE / "eagle_agg.yaml").read_text()
    assert "\nmax_num_tokens: 1024\n" in text
    return write(tmp_path, "eagle_agg_typo.yaml", text.replace("\nmax_num_tokens:", "\nmax_num_token:"))


# ------------------------------------------------------------------------------------------- key checks

def test_a_typo_is_an_error_that_names_the_closest_key(tmp_path):
    findings = lint_file(seed_with_typo(tmp_path))
    assert messages(findings) == ["max_num_token: unknown key 'max_num_token' (did you mean 'max_num_tokens'?)"]


def test_nested_typos_are_found_at_every_level(tmp_path):
    path = write(tmp_path, "nested.yaml", """\
        kv_cache_config:
          dtyp: fp8
          block_reuse_config: {polcy: all_reusable}
        speculative_config:
          decoding_type: Eagle
          max_draft_len: 1
          speculative_model_dir: nvidia/Llama-4-Maverick-17B-128E-Eagle3
          eagle3_one_modle: true
        cache_transceiver_config: {backend: DEFAULT, max_tokens_in_bufer: 8192}
        """)
    assert messages(lint_file(path)) == [
        "kv_cache_config.dtyp: unknown key 'dtyp' (did you mean 'dtype'?)",
        "kv_cache_config.block_reuse_config.polcy: unknown key 'polcy' (did you mean 'policy'?)",
        "speculative_config.eagle3_one_modle: unknown key 'eagle3_one_modle' (did you mean 'eagle3_one_model'?)",
        "cache_transceiver_config.max_tokens_in_bufer: unknown key 'max_tokens_in_bufer' "
        "(did you mean 'max_tokens_in_buffer'?)",
    ]


def test_speculative_keys_follow_the_decoding_type(tmp_path):
    """An MTP-only key under an Eagle config is unknown there; an unknown decoding_type names the real ones."""
    mtp_key = write(tmp_path, "mtp_key.yaml", "speculative_config: {decoding_type: Eagle, max_draft_len: 1, "
                                               "speculative_model: m, relaxed_topk: 2}\n")
    assert [f.key for f in config_lint.errors(lint_file(mtp_key))] == ["speculative_config.relaxed_topk"]
    bad_type = write(tmp_path, "bad_type.yaml", "speculative_config: {decoding_type: eagle3, max_draft_len: 1}\n")
    (finding,) = config_lint.errors(lint_file(bad_type))
    assert finding.key == "speculative_config.decoding_type"
    assert "unknown decoding_type 'eagle3' (did you mean 'Eagle3'?)" in finding.message


def test_a_top_level_key_that_belongs_one_level_down_says_where(tmp_path):
    path = write(tmp_path, "flat.yaml", "free_gpu_memory_fraction: 0.5\nenable_padding: true\n")
    assert messages(lint_file(path)) == [
        "free_gpu_memory_fraction: unknown key 'free_gpu_memory_fraction' "
        "(did you mean 'kv_cache_config.free_gpu_memory_fraction'?)",
        "enable_padding: unknown key 'enable_padding' (did you mean 'cuda_graph_config.enable_padding'?)",
    ]


def test_renamed_keys_say_which_version_spells_them_which_way(tmp_path):
    path = write(tmp_path, "old.yaml", """\
        speculative_config: {decoding_type: Eagle, max_draft_len: 1, pytorch_weights_path: m}
        cuda_graph_config: {padding_enabled: true, max_batch_size: 8}
        """)
    own = dataclasses.replace(config_lint.shipped_keys(), shipped=False)  # as if the engine's own keys
    weights, padding = config_lint.errors(lint_file(path, schema=own))
    assert weights.key == "speculative_config.pytorch_weights_path"
    assert "use 'speculative_model'" in weights.message and "1.0/1.1 call it 'speculative_model_dir'" in \
        weights.message and "PR #10099" in weights.message
    assert padding.key == "cuda_graph_config.padding_enabled"
    assert "use 'enable_padding'" in padding.message and "PR #6003" in padding.message and \
        "still spell it 'padding_enabled'" in padding.message
    # against the shipped list (one TensorRT-LLM commit) the container's older release may be the one that spells
    # it so: a warning that says so, and no error (the seed-era configs, accepted by the engine of their era)
    shipped = lint_file(path, schema=config_lint.shipped_keys())
    assert config_lint.errors(shipped) == []
    assert [f.key for f in shipped if f.severity == "warning" and "not the container's TensorRT-LLM" in f.message] \
        == ["speculative_config.pytorch_weights_path", "cuda_graph_config.padding_enabled"]


def test_literal_values_are_checked_with_the_case_history(tmp_path):
    path = write(tmp_path, "lower.yaml", "cache_transceiver_config: {backend: default}\n")
    own = dataclasses.replace(config_lint.shipped_keys(), shipped=False)
    (finding,) = config_lint.errors(lint_file(path, schema=own))
    assert finding.key == "cache_transceiver_config.backend"
    assert "(did you mean 'DEFAULT'?)" in finding.message and "lower case" in finding.message
    (warning,) = lint_file(path, schema=config_lint.shipped_keys())
    assert warning.severity == "warning" and "lower case" in warning.message
    wrong = write(tmp_path, "wrong.yaml", "cache_transceiver_config: {backend: carrier_pigeon}\n")
    assert [f.key for f in config_lint.errors(lint_file(wrong))] == ["cache_transceiver_config.backend"]


def test_removed_arguments_are_a_warning(tmp_path):
    path = write(tmp_path, "removed.yaml", "sampler_type: TorchSampler\n")
    assert messages(lint_file(path), "warning") == [
        f"sampler_type: 'sampler_type' was removed from TorchLlmArgs (TensorRT-LLM {known_keys().version} drops "
        "it on input): delete it"]


# ------------------------------------------------------------------------------- files that do not load

@pytest.mark.parametrize("text, expected", [
    ("a: [1, 2\n", "not valid YAML: expected ',' or ']'"),
    ("- max_num_tokens: 1\n", "the top level must be a mapping of LLM-API keys, not a list"),
    ("max_num_tokens: 1\nmax_num_tokens: 2\n", "duplicate key on line 2"),
])
def test_unusable_yaml_is_a_finding_not_an_exception(tmp_path, text, expected):
    findings = lint_file(write(tmp_path, "broken.yaml", text))
    assert any(expected in f.message for f in config_lint.errors(findings)), findings


def test_an_empty_file_is_no_options(tmp_path):
    assert lint_file(write(tmp_path, "empty.yaml", "# nothing\n")) == []


# --------------------------------------------------------------------------------------- role checks

def test_max_num_tokens_above_the_seed_value_warns_for_aggregated_workers(tmp_path):
    path = write(tmp_path, "agg.yaml", "max_num_tokens: 8448\n")
    (warning,) = [f for f in lint_file(path, "agg") if f.severity == "warning"]
    assert warning.key == "max_num_tokens" and "8448 is above 1024" in warning.message and \
        "seed guide 000" in warning.message
    assert not lint_file(path, "decode"), "the seed's OOM note is about aggregated serving only"
    assert not lint_file(write(tmp_path, "seed.yaml", "max_num_tokens: 1024\n"), "agg")


def test_prefill_workers_without_disable_overlap_scheduler_warn(tmp_path):
    path = write(tmp_path, "prefill.yaml", "cache_transceiver_config: {backend: DEFAULT}\n")
    assert [f.key for f in lint_file(path, "prefill")] == ["disable_overlap_scheduler"]


DISAGG = """\
    disable_overlap_scheduler: true
    speculative_config:
      decoding_type: Eagle
      max_draft_len: {draft}
      {model_key}: nvidia/Llama-4-Maverick-17B-128E-Eagle3
    cache_transceiver_config:
      backend: {backend}
    """


def pair(tmp_path: Path, prefill: dict, decode: dict) -> list[Finding]:
    defaults = {"draft": 1, "model_key": "speculative_model_dir", "backend": "DEFAULT"}
    p = write(tmp_path, "prefill.yaml", DISAGG.format(**{**defaults, **prefill}))
    d = write(tmp_path, "decode.yaml", DISAGG.format(**{**defaults, **decode}))
    return lint_pair(p, d)


def test_prefill_and_decode_that_agree_pass_even_with_different_alias_spellings(tmp_path):
    assert pair(tmp_path, {"model_key": "speculative_model_dir"}, {"model_key": "speculative_model"}) == []


def test_prefill_and_decode_must_share_the_speculative_config(tmp_path):
    (finding,) = pair(tmp_path, {"draft": 1}, {"draft": 3})
    assert finding.severity == "error" and finding.key == "speculative_config"
    assert "max_draft_len: 1 (prefill) vs 3 (decode)" in finding.message
    assert finding.file == tmp_path / "decode.yaml" and "prefill.yaml" in finding.message


def test_prefill_and_decode_must_share_the_cache_transceiver_backend(tmp_path):
    (finding,) = pair(tmp_path, {"backend": "UCX"}, {"backend": "NIXL"})
    assert (finding.severity, finding.key) == ("error", "cache_transceiver_config.backend")
    assert "prefill uses 'UCX', decode 'NIXL'" in finding.message


def test_prefill_and_decode_must_load_the_same_model(tmp_path):
    p = write(tmp_path, "p.yaml", "model: a\ncache_transceiver_config: {backend: UCX}\n")
    d = write(tmp_path, "d.yaml", "model: b\ncache_transceiver_config: {backend: UCX}\n")
    assert [(f.severity, f.key) for f in lint_pair(p, d)] == [("error", "model")]
    one_sided = write(tmp_path, "d2.yaml", "cache_transceiver_config: {backend: UCX}\n")
    assert [(f.severity, f.key) for f in lint_pair(p, one_sided)] == [("warning", "model")]


def test_speculative_config_on_one_side_only_is_an_error(tmp_path):
    p = write(tmp_path, "p.yaml", "speculative_config: {decoding_type: Eagle, max_draft_len: 1}\n"
                                  "cache_transceiver_config: {backend: UCX}\n")
    d = write(tmp_path, "d.yaml", "cache_transceiver_config: {backend: UCX}\n")
    (finding,) = lint_pair(p, d)
    assert (finding.key, finding.severity) == ("speculative_config", "error") and "prefill only" in finding.message


# ------------------------------------------------------------------------------------ shipped configs

@pytest.mark.parametrize("path", SHIPPED_YAML, ids=[str(p.relative_to(CONFIGS)) for p in SHIPPED_YAML])
def test_shipped_llm_api_configs_have_no_errors(path):
    assert config_lint.errors(lint_file(path)) == []


@pytest.mark.parametrize("directory", [EAGLE, ONE_MODEL], ids=["eagle", "eagle_one_model"])
def test_shipped_prefill_and_decode_configs_agree(directory):
    assert lint_pair(directory / "eagle_prefill.yaml", directory / "eagle_decode.yaml") == []


def test_mixing_two_model_prefill_with_one_model_decode_is_caught():
    (finding,) = lint_pair(EAGLE / "eagle_prefill.yaml", ONE_MODEL / "eagle_decode.yaml")
    assert finding.key == "speculative_config" and "max_draft_len: 1 (prefill) vs 3 (decode)" in finding.message


def test_the_shipped_key_list_names_its_tensorrt_llm_source():
    doc = json.loads(config_lint.SHIPPED_KEYS.read_text())
    assert re.fullmatch(r"[0-9a-f]{40}", doc["tensorrt_llm"]["commit"])
    assert doc["tensorrt_llm"]["path"] == "tensorrt_llm/llmapi/llm_args.py" and doc["root"] == "TorchLlmArgs"
    schema = config_lint.shipped_keys()
    assert schema.source.startswith(f"shipped list from TensorRT-LLM {doc['tensorrt_llm']['version']} (commit ")
    assert schema.key_count() > 400
    assert {"max_num_tokens", "speculative_config", "cache_transceiver_config"} <= schema.root_keys.fields
    if importlib.util.find_spec("tensorrt_llm") is None:
        assert known_keys().source == schema.source


# ------------------------------------------------------------------------------------------- mocker

@pytest.mark.parametrize("path", SHIPPED_JSON, ids=[p.name for p in SHIPPED_JSON])
def test_shipped_mocker_configs_pass(path):
    assert lint_mocker_file(path) == []


def test_mocker_typos_and_the_nested_form_are_errors(tmp_path):
    if config_lint.mocker_keys() is None:
        pytest.skip("dynamo.mocker is not installed")
    typo = write(tmp_path, "typo.json", '{"max_num_seq": 8}')
    assert messages(lint_mocker_file(typo)) == ["max_num_seq: unknown key 'max_num_seq' (did you mean "
                                                "'max_num_seqs'?)"]
    nested = write(tmp_path, "nested.json", '{"engine": {"speedup_ratio": 2}}')
    assert "Dynamo 1.6's" in lint_mocker_file(nested)[0].message
    wrong_type = write(tmp_path, "type.json", '{"max_num_seqs": "many"}')
    assert "dynamo.mocker rejects it" in lint_mocker_file(wrong_type)[0].message
    assert "not valid JSON" in lint_mocker_file(write(tmp_path, "bad.json", "{"))[0].message


def test_the_mocker_engine_given_llm_api_yaml_says_so(tmp_path):
    findings = config_lint.lint_engine_config(seed_with_typo(tmp_path), "agg", "mocker-json")
    assert "--engine=mocker reads --extra-engine-args as Dynamo mocker JSON" in findings[0].message
    assert any("did you mean 'max_num_tokens'" in f.message for f in findings)


# ----------------------------------------------------------------------------- tensorrt_llm importable

@pytest.fixture
def standin(tmp_path) -> Path:
    """A directory holding a tiny `tensorrt_llm` package (put it on PYTHONPATH)."""
    root = tmp_path / "standin"
    (root / "tensorrt_llm" / "llmapi").mkdir(parents=True)
    (root / "tensorrt_llm" / "__init__.py").write_text('__version__ = "0.0.0+standin"\n')
    (root / "tensorrt_llm" / "llmapi" / "__init__.py").write_text("")
    (root / "tensorrt_llm" / "llmapi" / "llm_args.py").write_text(STANDIN_LLM_ARGS)
    return root


def test_keys_are_derived_from_pydantic_models(standin):
    spec = importlib.util.spec_from_file_location("standin_llm_args", standin / "tensorrt_llm/llmapi/llm_args.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    schema = config_lint.schema_from_pydantic(module.TorchLlmArgs, "9.9", module.TORCH_LLMARGS_REMOVED_ARGS)
    root = schema.root_keys
    assert schema.source == "tensorrt_llm 9.9 (installed)" and schema.removed == {"sampler_type"}
    assert root.nested["speculative_config"] == config_lint.Nested(
        ("EagleDecodingConfig", "MTPDecodingConfig"), "decoding_type")
    assert root.nested["per_modality"] == config_lint.Nested(("KvCacheConfig",), None, "dict")
    assert root.choices["backend"] == ("pytorch",)
    assert schema.models["EagleDecodingConfig"].aliases == {"speculative_model_dir": "speculative_model"}
    assert schema.models["CacheTransceiverConfig"].choices == {"backend": ("DEFAULT", "UCX", "NIXL")}


STANDIN_PROBE = """\
import json, sys
from pathlib import Path
from pytest_llama4.config import lint as config_lint
path = Path(sys.argv[1])
print(json.dumps({
    "source": config_lint.known_keys().source,
    "lint": [[f.key, f.message] for f in config_lint.errors(config_lint.lint_file(path))],
    "exact": [[f.key, f.message] for f in config_lint.validate_with_tensorrt_llm(path)],
    "exact_valid": [str(f) for f in config_lint.validate_with_tensorrt_llm(Path(sys.argv[2]))],
}))
"""


def test_an_importable_tensorrt_llm_supplies_the_keys_and_the_exact_check(tmp_path, standin):
    typo = write(tmp_path, "typo.yaml", """\
        max_num_token: 1024
        speculative_config: {decoding_type: Eagle, max_draft_lenn: 1, speculative_model_dir: m}
        """)
    valid = write(tmp_path, "valid.yaml", "max_num_tokens: 1024\nspeculative_config: {decoding_type: Eagle, "
                                          "max_draft_len: 1, speculative_model_dir: m}\n")
    env = {**os.environ, "PYTHONPATH": str(standin)}
    done = subprocess.run([sys.executable, "-c", STANDIN_PROBE, str(typo), str(valid)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["source"] == "tensorrt_llm 0.0.0+standin (installed)"
    assert result["lint"] == [
        ["max_num_token", "unknown key 'max_num_token' (did you mean 'max_num_tokens'?)"],
        ["speculative_config.max_draft_lenn", "unknown key 'max_draft_lenn' (did you mean 'max_draft_len'?)"]]
    exact = dict(result["exact"])
    assert set(exact) == {"max_num_token", "speculative_config.max_draft_lenn"}
    assert "did you mean 'max_num_tokens'?" in exact["max_num_token"]
    assert "Extra inputs are not permitted" in exact["max_num_token"]
    assert result["exact_valid"] == []


def test_exact_check_without_tensorrt_llm_says_so(tmp_path):
    if importlib.util.find_spec("tensorrt_llm") is not None:
        pytest.skip("tensorrt_llm is installed here")
    (finding,) = config_lint.validate_with_tensorrt_llm(write(tmp_path, "a.yaml", "max_num_tokens: 1\n"))
    assert "needs tensorrt_llm" in finding.message


# ------------------------------------------------------------------------------------ console script

def lint_config(*args: str | Path, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), "lint-config", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_passes_the_shipped_configs_with_warnings_only(tmp_path):
    done = lint_config(*SHIPPED_YAML, *SHIPPED_JSON, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "eagle_one_model/eagle_agg.yml: max_num_tokens: warning: 4096 is above 1024" in done.stdout
    assert f"{len(SHIPPED_YAML) + len(SHIPPED_JSON)} file(s), 0 error(s)" in done.stderr
    assert known_keys().source in done.stderr


def test_cli_fails_on_a_typo_and_names_the_key(tmp_path):
    done = lint_config("--agg", seed_with_typo(tmp_path), cwd=tmp_path)
    assert done.returncode == 1
    assert "eagle_agg_typo.yaml: max_num_token: error: unknown key 'max_num_token' (did you mean " \
           "'max_num_tokens'?)" in done.stdout


def test_cli_checks_prefill_against_decode(tmp_path):
    done = lint_config("--prefill", EAGLE / "eagle_prefill.yaml", "--decode", ONE_MODEL / "eagle_decode.yaml",
                       cwd=tmp_path)
    assert done.returncode == 1 and "speculative_config: error: prefill and decode differ" in done.stdout


@pytest.mark.parametrize("args, code, expected", [
    (["missing.yaml"], 2, "no such file: missing.yaml"),
    ([], 2, "nothing to lint"),
    (["broken.yaml"], 1, "broken.yaml: error: not valid YAML"),
])
def test_cli_reports_bad_input_without_a_traceback(tmp_path, args, code, expected):
    write(tmp_path, "broken.yaml", "speculative_config: {decoding_type: Eagle\n")
    done = lint_config(*args, cwd=tmp_path)
    assert done.returncode == code
    assert expected in done.stdout + done.stderr and "Traceback" not in done.stderr


def test_cli_exact_check_uses_an_importable_tensorrt_llm(tmp_path, standin):
    env = {**os.environ, "PYTHONPATH": str(standin)}
    done = lint_config("--exact", seed_with_typo(tmp_path), cwd=tmp_path, env=env)
    assert done.returncode == 1
    assert "TorchLlmArgs: Extra inputs are not permitted" in done.stdout
    assert "keys: tensorrt_llm 0.0.0+standin (installed)" in done.stderr


# ------------------------------------------------------------------------------------- config suite

def run_suite(pytester, tmp_path: Path, *args: str):
    return pytester.runpytest_subprocess(str(SUITE), f"--reports-dir={tmp_path / 'reports'}", "-p",
                                         "no:cacheprovider", "-rs", *args, timeout=120)


def assert_nothing_launched(tmp_path: Path) -> None:
    runs = list((tmp_path / "reports").iterdir())
    assert runs, "no run directory"
    assert not [p for run in runs for p in run.glob("logs/*")], "a deployment was started"


@pytest.mark.parametrize("topology", ["agg", "disagg"])
def test_config_suite_passes_on_the_embedded_default(pytester, tmp_path, topology):
    result = run_suite(pytester, tmp_path, f"--topology={topology}")
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=1 if topology == "agg" else 2, skipped=1)
    assert_nothing_launched(tmp_path)


@pytest.mark.parametrize("engine_args", [
    ["--engine=dynamo-trtllm", "--endpoint=http://127.0.0.1:9"],  # the configs of a deployment already up
    [],  # the embedded default, handed a TensorRT-LLM YAML
], ids=["dynamo-trtllm", "mocker"])
def test_config_suite_fails_on_a_typo_naming_the_real_key(pytester, tmp_path, engine_args):
    result = run_suite(pytester, tmp_path, f"--engine-config={seed_with_typo(tmp_path)}", *engine_args)
    assert result.ret == 1
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*test_engine_config*agg*",
                                 "*eagle_agg_typo.yaml: max_num_token: error: unknown key 'max_num_token' "
                                 "(did you mean 'max_num_tokens'?)"])
    assert_nothing_launched(tmp_path)


def test_config_suite_fails_when_prefill_and_decode_disagree(pytester, tmp_path):
    result = run_suite(pytester, tmp_path, "--topology=disagg", "--engine=dynamo-trtllm",
                       "--endpoint=http://127.0.0.1:9", f"--prefill-engine-config={EAGLE / 'eagle_prefill.yaml'}",
                       f"--decode-engine-config={ONE_MODEL / 'eagle_decode.yaml'}")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*speculative_config: error: prefill and decode differ*max_draft_len*"])


def test_config_suite_reports_warnings_without_failing(pytester, tmp_path):
    result = run_suite(pytester, tmp_path, "--engine=dynamo-trtllm", "--endpoint=http://127.0.0.1:9",
                       f"--engine-config={ONE_MODEL / 'eagle_agg.yml'}")
    result.assert_outcomes(passed=1, skipped=1, warnings=2)
    result.stdout.fnmatch_lines(["*EngineConfigWarning*max_num_tokens: warning: 4096 is above 1024*"])
    result.stdout.fnmatch_lines(["*EngineConfigWarning*enable_iter_perf_stats: warning: speculative decoding is "
                                 "configured, but without enable_iter_perf_stats: true and return_perf_metrics: true*"])
    (junit,) = (tmp_path / "reports").glob("*/junit.xml")
    assert 'name="agg_engine_config_warnings"' in junit.read_text()


# ---------------------------------------------------------------------------------------- generator

GENERATOR_INPUT = '''
class StrictBaseModel(BaseModel): ...

class KvCacheConfig(StrictBaseModel):
    dtype: str = Field(default="auto")
    mode: Literal["a", "b"] = "a"

class DecodingBaseConfig(StrictBaseModel):
    speculative_model: Optional[str] = Field(default=None,
        validation_alias=AliasChoices("speculative_model", "speculative_model_dir"))
    _private: int = PrivateAttr(0)

class EagleDecodingConfig(DecodingBaseConfig):
    decoding_type: Literal["Eagle"] = Field(default="Eagle")

class MTPDecodingConfig(DecodingBaseConfig):
    decoding_type: Literal["MTP"] = Field(default="MTP")

SpeculativeConfig: TypeAlias = Annotated[Union[EagleDecodingConfig, MTPDecodingConfig],
                                         Field(discriminator="decoding_type")]

_TORCH_LLMARGS_REMOVED_ARG_CHECKS: Dict[str, Callable] = {"sampler_type": _check}

class BaseLlmArgs(StrictBaseModel):
    model_config = ConfigDict(extra="forbid")
    kv_cache_config: KvCacheConfig = Field(default_factory=KvCacheConfig)
    lora_config: Optional[LoraConfig] = None
    speculative_config: Optional[SpeculativeConfig] = None
    unused: ClassVar[int] = 0

class TorchLlmArgs(BaseLlmArgs):
    per_modality: dict[str, KvCacheConfig] | None = None
'''


def test_the_generator_reads_llm_args_without_importing_it(tmp_path):
    source = write(tmp_path, "llm_args.py", GENERATOR_INPUT)
    out = tmp_path / "keys.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-trtllm-keys"), "--source", str(source),
                           "--version", "9.9", "--commit", "a" * 40, "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert doc["tensorrt_llm"]["version"] == "9.9" and doc["removed"] == ["sampler_type"]
    root = doc["models"]["TorchLlmArgs"]
    assert root["fields"] == ["kv_cache_config", "lora_config", "per_modality", "speculative_config"]
    assert root["nested"]["speculative_config"] == {
        "models": ["EagleDecodingConfig", "MTPDecodingConfig"], "discriminator": "decoding_type"}
    assert root["nested"]["per_modality"] == {"models": ["KvCacheConfig"], "container": "dict"}
    assert root["external"] == {"lora_config": "LoraConfig"}
    assert doc["models"]["EagleDecodingConfig"]["aliases"] == {"speculative_model_dir": "speculative_model"}
    assert doc["models"]["KvCacheConfig"]["choices"] == {"mode": ["a", "b"]}
    schema = config_lint.schema_from_json(out)
    typo = write(tmp_path, "t.yaml", "kv_cache_config: {dtyp: fp8}\n")
    assert messages(lint_file(typo, schema=schema)) == ["kv_cache_config.dtyp: unknown key 'dtyp' (did you mean "
                                                        "'dtype'?)"]


def test_the_containers_verdict_decides_the_keys_where_preflight_asked_it(tmp_path):
    """A key our list does not know but the container's TensorRT-LLM accepts is a warning naming that release; a
    key it rejects is an error in its words; file-level findings are untouched."""
    path = write(tmp_path, "prefill.yaml", "tensor_parallel_size: 4\nnew_knob: 1\nmax_batch_sise: 8\n")
    findings = lint_file(path)
    assert {f.key for f in findings if f.severity == "error"} == {"new_knob", "max_batch_sise"}
    verdict = {"validator": "tensorrt_llm 1.0.0rc4",
               "errors": [{"key": "max_batch_sise", "message": "Extra inputs are not permitted"}]}
    judged = config_lint.judged_by_container(findings, path, verdict)
    assert messages(judged) == ["max_batch_sise: unknown key 'max_batch_sise' (did you mean 'max_batch_size'?)"]
    assert [f.key for f in judged if f.severity == "warning"] == ["new_knob"]
    assert "tensorrt_llm 1.0.0rc4 in the container accepts it" in str(next(f for f in judged if f.key == "new_knob"))
    only_container = config_lint.judged_by_container([], path, verdict)
    assert messages(only_container) == ["max_batch_sise: Extra inputs are not permitted (tensorrt_llm 1.0.0rc4 in "
                                        "the container)"]
