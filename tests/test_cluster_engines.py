"""Golden tests: the cluster engines' command lines, flag for flag against the upstream scripts and CLIs.

Upstream script text is quoted verbatim below and, where it is shell, run by bash with the launcher replaced by
a function that prints its arguments, so the comparison is with what the script really executes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pytest_llama4.config.topology import DECODE, FRONTEND, PREFILL, WORKER, Service
from pytest_llama4.deploy.engines import control_plane, dynamo_trtllm, trtllm_serve
from pytest_llama4.deploy.engines.base import Command

GOLDEN = Path(__file__).parent / "golden"
MODEL = "nvidia/Llama-4-Maverick-17B-128E-Instruct-FP8"  # seeds/000: MODEL_PATH and SERVED_MODEL_NAME
CONFIGS = {  # seeds/000: ENGINE_CONFIG, PREFILL_ENGINE_CONFIG, DECODE_ENGINE_CONFIG
    WORKER: "/mnt/engine_configs/llama4/eagle/eagle_agg.yaml",
    PREFILL: "/mnt/engine_configs/llama4/eagle/eagle_prefill.yaml",
    DECODE: "/mnt/engine_configs/llama4/eagle/eagle_decode.yaml",
}
# ai-dynamo/dynamo srun_aggregated.sh / srun_disaggregated.sh @ 1cc36a62: DISAGGREGATION_MODE per role.
SCRIPT_MODE = {WORKER: "prefill_and_decode", PREFILL: "prefill", DECODE: "decode"}
HEAD_IP = "10.0.0.1"
CONTROL_ENV = {"ETCD_ENDPOINTS": "10.0.0.1:2379", "NATS_SERVER": "nats://10.0.0.1:4222"}


def service(role: str) -> Service:
    return Service(role, 0, node=0)


def worker(role: str, version: str, **kwargs) -> Command:
    args = {"model_path": MODEL, "served_model_name": MODEL, "engine_config": CONFIGS[role], "gpus_per_node": 4,
            "env": CONTROL_ENV, "dynamo_version": version, **kwargs}
    return dynamo_trtllm.worker_command(service(role), **args)


# ---------------------------------------------------------------------------------------------------------------
# Upstream text, verbatim.

# ai-dynamo/dynamo components/backends/trtllm/multinode/start_trtllm_worker.sh @ 38f0bf04 (the seed era), tail;
# its module is `dynamo.trtllm.worker`, which no released wheel has, so the forks' `dynamo.trtllm`
# (luckymrwang/dynamo @ b0762d29, yuekaizhang/dynamo @ 12fe3551) is quoted here: otherwise identical.
SEED_ERA_WORKER_SCRIPT = r"""
# NOTE: When this script is run directly from srun, the environment variables
# for TRTLLM KV cache are not set. So we need to set them here.
# Related issue: https://github.com/ai-dynamo/dynamo/issues/1743
if [[ -z ${TRTLLM_USE_UCX_KVCACHE} ]] && [[ -z ${TRTLLM_USE_NIXL_KVCACHE} ]]; then
    export TRTLLM_USE_UCX_KVCACHE=1
fi

EXTRA_ARGS=""
if [[ -n ${DISAGGREGATION_MODE} ]]; then
  EXTRA_ARGS+="--disaggregation-mode ${DISAGGREGATION_MODE} "
fi

if [[ -n ${DISAGGREGATION_STRATEGY} ]]; then
  EXTRA_ARGS+="--disaggregation-strategy ${DISAGGREGATION_STRATEGY} "
fi

trtllm-llmapi-launch \
  python3 -m dynamo.trtllm \
    --model-path "${MODEL_PATH}" \
    --served-model-name "${SERVED_MODEL_NAME}" \
    --extra-engine-args "${ENGINE_CONFIG}" \
    ${EXTRA_ARGS}
"""

# examples/basics/multinode/trtllm/start_trtllm_worker.sh, newer form (fork wxsms/dynamo @ 9fa8125c), tail.
NEWER_WORKER_SCRIPT = r"""
EXTRA_ARGS=""
if [[ -n ${DISAGGREGATION_MODE} ]]; then
  EXTRA_ARGS+="--disaggregation-mode ${DISAGGREGATION_MODE} "
fi

# Only publish KV events if using KV-aware routing (not needed for round-robin)
if [[ -n ${PUBLISH_KV_EVENTS} ]] && [[ ${PUBLISH_KV_EVENTS} == "true" ]]; then
  EXTRA_ARGS+="--publish-events-and-metrics "
fi

if [[ -n ${MODALITY} ]]; then
  EXTRA_ARGS+="--modality ${MODALITY} "
fi

trtllm-llmapi-launch \
  python3 -m dynamo.trtllm \
    --model-path "${MODEL_PATH}" \
    --served-model-name "${SERVED_MODEL_NAME}" \
    --extra-engine-args "${ENGINE_CONFIG}" \
    ${EXTRA_ARGS}
"""

# components/backends/trtllm/multinode/start_frontend_services.sh (fork luckymrwang/dynamo @ 17873e12), last line.
FRONTEND_LINE = "python3 -m dynamo.frontend --http-port 8000"

# seeds/002 = NVIDIA/TensorRT-LLM examples/models/core/llama4/README.md (first form), "Launch trtllm-serve".
SEED_002_SERVE = r"""trtllm-serve nvidia/Llama-4-Maverick-17B-128E-Instruct-FP8 \
    --backend pytorch \
    --max_batch_size 1024 \
    --tp_size 8 \
    --ep_size 8 \
    --trust_remote_code \
    --extra_llm_api_options ./extra-llm-api-config.yml"""

# NVIDIA/TensorRT-LLM examples/disaggregated/slurm/simple_example/launch.slurm @ 14e6b10f, the context server.
TRTLLM_SLURM_CTX = ("trtllm-llmapi-launch trtllm-serve TinyLlama/TinyLlama-1.1B-Chat-v1.0 --tp_size 8 "
                    "--host 0.0.0.0 --port ${ctx_port} --config ${work_path}/ctx_extra-llm-api-config.yaml")


def run_worker_script(script: str, **env: str) -> tuple[list[str], str]:
    """Run the upstream script's tail under bash; return the argv it launches and its TRTLLM_USE_UCX_KVCACHE."""
    prelude = 'trtllm-llmapi-launch() { printf "%s\\0" "${TRTLLM_USE_UCX_KVCACHE-}" trtllm-llmapi-launch "$@"; }\n'
    out = subprocess.run(["bash", "-c", prelude + script], env={"PATH": os.environ["PATH"], **env},
                         capture_output=True, check=True).stdout.decode()
    ucx, *argv = out.split("\0")[:-1]
    return argv, ucx


def script_env(role: str, strategy: str | None = None) -> dict[str, str]:
    env = {"MODEL_PATH": MODEL, "SERVED_MODEL_NAME": MODEL, "ENGINE_CONFIG": CONFIGS[role],
           "DISAGGREGATION_MODE": SCRIPT_MODE[role]}
    return {**env, "DISAGGREGATION_STRATEGY": strategy} if strategy else env


# ---------------------------------------------------------------------------------------------------------------
# Dynamo: versions and shapes


@pytest.mark.parametrize(("version", "shape"), [
    ("0.4.1", "0.4"), ("0.5.1", "0.4"), ("0.6.0", "0.4"),  # wheels with --disaggregation-strategy
    ("0.7.0", "0.7"), ("1.0.0", "0.7"), ("1.2.0.post1", "0.7"),  # no strategy, agg = prefill_and_decode
    ("1.3.0.post1", "1.3"), ("1.3.1", "1.3"), ("1.4", "1.3"), ("1.4.2", "1.3"), ("1.6", "1.3"), ("1.6.1", "1.3"),
    ("v1.6.1", "1.3"), ("2.0", "1.3"),
])
def test_dynamo_version_picks_the_argv_shape(version, shape):
    assert dynamo_trtllm.worker_shape(version).since == shape


@pytest.mark.parametrize("version", ["0.3.2", "latest", ""])
def test_unknown_dynamo_versions_are_refused(version):
    with pytest.raises(ValueError):
        dynamo_trtllm.worker_shape(version)


def test_shapes_are_listed_oldest_first():
    assert dynamo_trtllm.DYNAMO_SHAPES == ("0.4", "0.7", "1.3")


# ---------------------------------------------------------------------------------------------------------------
# Dynamo: the worker, golden argv per shape and role

HEAD = ["trtllm-llmapi-launch", "python3", "-m", "dynamo.trtllm"]  # start_trtllm_worker.sh's last command


@pytest.mark.parametrize(("version", "role", "expected"), [
    # Shape 0.4: seed-era script, --model-path, strategy passed to both disagg sides (srun_disaggregated.sh
    # DISAGGREGATION_STRATEGY=${DISAGGREGATION_STRATEGY:-"decode_first"}), none for agg (srun_aggregated.sh).
    ("0.4.1", WORKER, [*HEAD, "--model-path", MODEL, "--served-model-name", MODEL,
                       "--extra-engine-args", CONFIGS[WORKER], "--disaggregation-mode", "prefill_and_decode"]),
    ("0.4.1", PREFILL, [*HEAD, "--model-path", MODEL, "--served-model-name", MODEL,
                        "--extra-engine-args", CONFIGS[PREFILL], "--disaggregation-mode", "prefill",
                        "--disaggregation-strategy", "decode_first"]),
    ("0.4.1", DECODE, [*HEAD, "--model-path", MODEL, "--served-model-name", MODEL,
                       "--extra-engine-args", CONFIGS[DECODE], "--disaggregation-mode", "decode",
                       "--disaggregation-strategy", "decode_first"]),
    # Shape 0.7: the newer script; --disaggregation-strategy is gone from the parser (ai-dynamo 0.7.0 wheel).
    ("1.0.0", WORKER, [*HEAD, "--model-path", MODEL, "--served-model-name", MODEL,
                       "--extra-engine-args", CONFIGS[WORKER], "--disaggregation-mode", "prefill_and_decode"]),
    ("1.0.0", PREFILL, [*HEAD, "--model-path", MODEL, "--served-model-name", MODEL,
                        "--extra-engine-args", CONFIGS[PREFILL], "--disaggregation-mode", "prefill"]),
    ("1.0.0", DECODE, [*HEAD, "--model-path", MODEL, "--served-model-name", MODEL,
                       "--extra-engine-args", CONFIGS[DECODE], "--disaggregation-mode", "decode"]),
    # Shape 1.3: backend_args.py's names: --model (--model-path is its deprecated alias), mode `agg`
    # (`prefill_and_decode` is no longer a choice). Same argv for 1.4.2 and 1.6.1.
    ("1.6", WORKER, [*HEAD, "--model", MODEL, "--served-model-name", MODEL,
                     "--extra-engine-args", CONFIGS[WORKER], "--disaggregation-mode", "agg"]),
    ("1.6", PREFILL, [*HEAD, "--model", MODEL, "--served-model-name", MODEL,
                      "--extra-engine-args", CONFIGS[PREFILL], "--disaggregation-mode", "prefill"]),
    ("1.6", DECODE, [*HEAD, "--model", MODEL, "--served-model-name", MODEL,
                     "--extra-engine-args", CONFIGS[DECODE], "--disaggregation-mode", "decode"]),
    ("1.4.2", DECODE, [*HEAD, "--model", MODEL, "--served-model-name", MODEL,
                       "--extra-engine-args", CONFIGS[DECODE], "--disaggregation-mode", "decode"]),
])
def test_worker_argv(version, role, expected):
    assert list(worker(role, version).argv) == expected


@pytest.mark.parametrize("role", [WORKER, PREFILL, DECODE])
def test_seed_era_shape_is_exactly_what_the_seed_era_script_runs(role):
    strategy = "decode_first" if role != WORKER else None  # only srun_disaggregated.sh has it
    argv, ucx = run_worker_script(SEED_ERA_WORKER_SCRIPT, **script_env(role, strategy))
    command = worker(role, "0.4.1")
    assert list(command.argv) == argv
    assert command.env["TRTLLM_USE_UCX_KVCACHE"] == ucx == "1"


@pytest.mark.parametrize("role", [WORKER, PREFILL, DECODE])
def test_0_7_shape_is_exactly_what_the_newer_script_runs(role):
    argv, _ = run_worker_script(NEWER_WORKER_SCRIPT, **script_env(role))
    assert list(worker(role, "0.7.0").argv) == argv


@pytest.mark.parametrize("role", [WORKER, PREFILL, DECODE])
def test_1_3_shape_is_the_newer_script_with_the_new_spellings(role):
    """Two deliberate differences from the script: --model (the name since 1.0) and `agg`, because 1.3+ rejects the
    `prefill_and_decode` that srun_aggregated.sh still passes (see test_real_1_4_parser_rejects_...)."""
    argv, _ = run_worker_script(NEWER_WORKER_SCRIPT, **script_env(role))
    renamed = {"--model-path": "--model", "prefill_and_decode": "agg"}
    assert list(worker(role, "1.6").argv) == [renamed.get(a, a) for a in argv]


@pytest.mark.parametrize("version", ["0.4.1", "1.0.0", "1.6"])
@pytest.mark.parametrize("role", [WORKER, PREFILL, DECODE])
def test_worker_is_one_mpi_task_per_gpu(version, role):
    # srun_*.sh: srun --mpi pmix --oversubscribe ... --ntasks-per-node "${NUM_GPUS_PER_NODE}"
    command = worker(role, version, gpus_per_node=8)
    assert command.mpi is True
    assert command.tasks_per_node == 8


def test_worker_env_is_the_control_plane_plus_ucx_as_the_script_exports_it():
    # srun_*.sh: ETCD_ENDPOINTS="${HEAD_NODE_IP}:2379", NATS_SERVER="nats://${HEAD_NODE_IP}:4222";
    # start_trtllm_worker.sh: export TRTLLM_USE_UCX_KVCACHE=1 unless a KV-cache transport is set.
    assert worker(PREFILL, "1.6").env == {**CONTROL_ENV, "TRTLLM_USE_UCX_KVCACHE": "1"}


@pytest.mark.parametrize("chosen", [{"TRTLLM_USE_NIXL_KVCACHE": "1"}, {"TRTLLM_USE_UCX_KVCACHE": "0"}])
def test_a_user_chosen_kv_cache_transport_is_kept(chosen):
    # start_trtllm_worker.sh: if [[ -z ${TRTLLM_USE_UCX_KVCACHE} ]] && [[ -z ${TRTLLM_USE_NIXL_KVCACHE} ]]
    env = worker(DECODE, "1.6", env={**CONTROL_ENV, **chosen}).env
    assert env == {**CONTROL_ENV, **chosen}
    _, ucx = run_worker_script(SEED_ERA_WORKER_SCRIPT, **script_env(DECODE), **chosen)
    assert ucx == chosen.get("TRTLLM_USE_UCX_KVCACHE", "")


def test_system_port_sets_dyn_system_port():
    assert worker(WORKER, "1.6", system_port=9345).env["DYN_SYSTEM_PORT"] == "9345"
    assert "DYN_SYSTEM_PORT" not in worker(WORKER, "1.6").env  # the scripts do not set it


def test_worker_command_does_not_alias_the_callers_env():
    env = dict(CONTROL_ENV)
    worker(WORKER, "1.6", env=env)
    assert env == CONTROL_ENV


def test_worker_command_refuses_what_is_not_a_worker():
    with pytest.raises(ValueError, match="frontend-0"):
        dynamo_trtllm.worker_command(service(FRONTEND), model_path=MODEL, served_model_name=MODEL,
                                     engine_config=CONFIGS[WORKER], gpus_per_node=4, env=CONTROL_ENV)
    with pytest.raises(ValueError, match="gpus_per_node"):
        worker(WORKER, "1.6", gpus_per_node=0)
    with pytest.raises(ValueError, match="engine_config"):
        worker(WORKER, "1.6", engine_config="")


# The real parser of the ai-dynamo release the project pins (1.4.2, the `local` extra), run in a subprocess with the
# GPU-only imports (tensorrt_llm, torch) stubbed: it proves the 1.3 shape parses and the older shapes do not.
PARSE_WITH_REAL_DYNAMO = r"""
import importlib.abc, importlib.machinery, json, sys, types
from unittest import mock

class Stub(types.ModuleType):
    __path__ = []
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = mock.MagicMock(name=f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value

class MissingModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):  # last on sys.meta_path: only what is not installed
        return importlib.machinery.ModuleSpec(name, self, is_package=True)
    def create_module(self, spec):
        return Stub(spec.name)
    def exec_module(self, module):
        pass

sys.meta_path.append(MissingModules())
defaults = {"max_batch_size": 2048, "max_num_tokens": 8192, "max_seq_len": None, "max_beam_width": 1}
sys.modules["tensorrt_llm.llmapi"] = Stub("tensorrt_llm.llmapi")
sys.modules["tensorrt_llm.llmapi"].BuildConfig = types.SimpleNamespace(
    **defaults, model_fields={k: types.SimpleNamespace(default=v) for k, v in defaults.items()})
from dynamo.trtllm.args import parse_args
config = parse_args(json.loads(sys.argv[1]))
print(json.dumps({k: str(getattr(config, k)) for k in
                  ("model", "served_model_name", "extra_engine_args", "disaggregation_mode")}))
"""

needs_dynamo = pytest.mark.skipif(importlib.util.find_spec("dynamo.trtllm") is None,
                                  reason="ai-dynamo is not installed (the `local` extra)")


def parse_with_real_dynamo(argv: tuple[str, ...]) -> subprocess.CompletedProcess:
    assert argv[:4] == tuple(HEAD)
    return subprocess.run([sys.executable, "-c", PARSE_WITH_REAL_DYNAMO, json.dumps(argv[4:])],
                          capture_output=True, text=True, timeout=60)


@needs_dynamo
@pytest.mark.parametrize(("role", "mode"), [(WORKER, "AGGREGATED"), (PREFILL, "PREFILL"), (DECODE, "DECODE")])
def test_real_1_4_parser_accepts_the_1_3_shape(role, mode):
    done = parse_with_real_dynamo(worker(role, "1.4.2").argv)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"model": MODEL, "served_model_name": MODEL, "extra_engine_args": CONFIGS[role],
                                       "disaggregation_mode": f"DisaggregationMode.{mode}"}


@needs_dynamo
def test_real_1_4_parser_rejects_the_seed_scripts_agg_mode():
    # srun_aggregated.sh: DISAGGREGATION_MODE="prefill_and_decode" -> argparse "invalid choice", exit 2
    done = parse_with_real_dynamo(worker(WORKER, "1.0.0").argv)
    assert done.returncode == 2 and "invalid choice: 'prefill_and_decode'" in done.stderr


@needs_dynamo
def test_real_1_4_parser_rejects_the_strategy_flag():
    done = parse_with_real_dynamo(worker(PREFILL, "0.4.1").argv)
    assert done.returncode == 1 and "Unrecognized argument: --disaggregation-strategy" in done.stderr


# ---------------------------------------------------------------------------------------------------------------
# Dynamo: control plane and frontend


def test_control_plane_env_as_the_srun_scripts_export_it():
    # export ETCD_ENDPOINTS="${HEAD_NODE_IP}:2379"; export NATS_SERVER="nats://${HEAD_NODE_IP}:4222"
    assert control_plane.control_plane_env(HEAD_IP) == CONTROL_ENV
    assert control_plane.control_plane_env("127.0.0.1", etcd_port=23790, nats_port=42220) == {
        "ETCD_ENDPOINTS": "127.0.0.1:23790", "NATS_SERVER": "nats://127.0.0.1:42220"}


@pytest.mark.parametrize("bad", ["", "0.0.0.0"])
def test_control_plane_env_needs_a_real_address(bad):
    with pytest.raises(ValueError):
        control_plane.control_plane_env(bad)


def test_frontend_argv_is_the_start_frontend_services_line():
    command = dynamo_trtllm.frontend_command(8000, CONTROL_ENV)
    assert list(command.argv) == shlex.split(FRONTEND_LINE)
    assert command.env == CONTROL_ENV


@pytest.mark.parametrize("port", [8000, 18000])
def test_frontend_is_never_an_mpi_job(port):
    # The seed guide: "start_frontend_services.sh may got ran NUM_GPUS_PER_NODE times ... the frontend service only
    # needs to be ran once."
    command = dynamo_trtllm.frontend_command(port, CONTROL_ENV)
    assert command.tasks_per_node == 1
    assert command.mpi is False
    assert command.argv[-1] == str(port)


# ---------------------------------------------------------------------------------------------------------------
# trtllm-serve


def seed_server(**kwargs) -> Command:
    args = {"host": "0.0.0.0", "port": 8000, "extra_llm_api_options": "./extra-llm-api-config.yml", **kwargs}
    return trtllm_serve.server_command(MODEL, **args)


def test_trtllm_serve_is_the_seed_command_flag_for_flag_plus_host_and_port():
    # seeds/002 "Launch trtllm-serve OpenAI-compatible API server"; serve.py: --host (default localhost), --port
    seed = shlex.split(SEED_002_SERVE.replace("\\\n", " "))
    command = seed_server()
    assert list(command.argv) == [*seed, "--host", "0.0.0.0", "--port", "8000"]
    assert command.env == {}
    assert (command.tasks_per_node, command.mpi) == (1, False)


def test_trtllm_serve_on_slurm_is_one_mpi_task_per_gpu():
    # launch.slurm: srun --mpi=pmix --ntasks-per-node=4 ... trtllm-llmapi-launch trtllm-serve <model> --tp_size 8
    #               --host 0.0.0.0 --port ${ctx_port} --config <yaml>
    upstream = shlex.split(TRTLLM_SLURM_CTX)
    command = seed_server(tasks_per_node=8, port=8001, extra_llm_api_options="/cfg/ctx.yaml")
    assert command.argv[:2] == tuple(upstream[:2]) == ("trtllm-llmapi-launch", "trtllm-serve")
    for flag in ("--tp_size", "--host"):  # same spelling and value as launch.slurm
        assert command.argv[command.argv.index(flag) + 1] == upstream[upstream.index(flag) + 1]
    # the rest is the seed's line (--extra_llm_api_options: launch.slurm's --config is its newer alias)
    seed = shlex.split(SEED_002_SERVE.replace("\\\n", " "))
    assert list(command.argv[1:]) == [*seed[:-1], "/cfg/ctx.yaml", "--host", "0.0.0.0", "--port", "8001"]
    assert (command.tasks_per_node, command.mpi) == (8, True)


def test_trtllm_serve_optional_flags():
    command = seed_server(tp_size=4, ep_size=4, max_batch_size=256, kv_cache_free_gpu_memory_fraction=0.5,
                          env={"TRTLLM_USE_UCX_KVCACHE": "1"})
    assert command.argv[command.argv.index("--tp_size") + 1] == "4"
    assert command.argv[command.argv.index("--ep_size") + 1] == "4"
    assert command.argv[command.argv.index("--max_batch_size") + 1] == "256"
    assert list(command.argv[-2:]) == ["--kv_cache_free_gpu_memory_fraction", "0.5"]
    assert command.env == {"TRTLLM_USE_UCX_KVCACHE": "1"}


@pytest.mark.parametrize("host", ["localhost", ""])
def test_trtllm_serve_refuses_to_bind_localhost(host):
    with pytest.raises(ValueError, match="node's address"):
        seed_server(host=host)


def test_disaggregated_config_matches_the_upstream_layout():
    # examples/disaggregated/README.md: hostname, port, backend, context_servers{num_instances, urls}, ...
    config = trtllm_serve.disaggregated_config(hostname="0.0.0.0", port=8000,
                                               context_urls=["10.0.0.1:8001", "10.0.0.2:8001"],
                                               generation_urls=["10.0.0.3:8002"])
    assert config == yaml.safe_load((GOLDEN / "trtllm_disaggregated.yaml").read_text())
    assert list(config) == ["hostname", "port", "backend", "context_servers", "generation_servers"]
    assert yaml.safe_load(yaml.safe_dump(config)) == config


@pytest.mark.parametrize("url", ["http://10.0.0.1:8001", "10.0.0.1", "10.0.0.1:port", "localhost:8001", ":8001"])
def test_disaggregated_config_refuses_urls_trtllm_serve_cannot_split(url):
    # disagg_utils.extract_ctx_gen_cfgs: hostname, port_str = url.split(':')
    with pytest.raises(ValueError, match="url"):
        trtllm_serve.disaggregated_config(hostname="0.0.0.0", port=8000, context_urls=[url],
                                          generation_urls=["10.0.0.3:8002"])


def test_disaggregated_config_needs_both_sides_and_a_reachable_proxy():
    with pytest.raises(ValueError, match="at least one"):
        trtllm_serve.disaggregated_config(hostname="0.0.0.0", port=8000, context_urls=[],
                                          generation_urls=["10.0.0.3:8002"])
    with pytest.raises(ValueError, match="hostname"):
        trtllm_serve.disaggregated_config(hostname="localhost", port=8000, context_urls=["10.0.0.1:8001"],
                                          generation_urls=["10.0.0.3:8002"])


def test_disaggregated_command():
    # examples/disaggregated/README.md: trtllm-serve disaggregated -c disagg_config.yaml
    command = trtllm_serve.disaggregated_command("disagg_config.yaml")
    assert list(command.argv) == shlex.split("trtllm-serve disaggregated -c disagg_config.yaml")
    assert (command.tasks_per_node, command.mpi, command.env) == (1, False, {})
    # serve.py `disaggregated`: -t/--server_start_timeout, -r/--request_timeout (180 s each by default)
    timed = trtllm_serve.disaggregated_command("/cfg/d.yaml", server_start_timeout=3600, request_timeout=600)
    assert list(timed.argv) == ["trtllm-serve", "disaggregated", "-c", "/cfg/d.yaml", "-t", "3600", "-r", "600"]


# ---------------------------------------------------------------------------------------------------------------
# Every engine command


def every_cluster_command() -> list[Command]:
    commands = [dynamo_trtllm.frontend_command(8000, CONTROL_ENV)]
    commands += [worker(role, version) for role in (WORKER, PREFILL, DECODE) for version in ("0.4", "0.7", "1.6")]
    commands += [seed_server(), seed_server(tasks_per_node=8), trtllm_serve.disaggregated_command("/cfg/d.yaml")]
    return commands


def test_no_engine_argv_says_localhost():
    for command in every_cluster_command():
        assert not any("localhost" in arg for arg in command.argv), command.shell()
        assert not any("localhost" in value for value in command.env.values()), command.shell()


def test_cluster_commands_run_python3_from_the_container_not_this_interpreter():
    for command in every_cluster_command():
        assert sys.executable not in command.argv, command.shell()


def test_trtllm_serve_metrics_are_read_from_prometheus_metrics_never_its_draining_json():
    command = trtllm_serve.server_command("m", host="0.0.0.0", port=8123, extra_llm_api_options="/c.yaml", tp_size=8,
                                          ep_size=8, tasks_per_node=8)
    assert (command.metrics_at, command.metrics_path) == (8123, "/prometheus/metrics")
    from pytest_llama4.config.topology import make_plan
    assert trtllm_serve.ENGINE.lists_models(make_plan("agg")) and trtllm_serve.ENGINE.lists_models(None)
    assert not trtllm_serve.ENGINE.lists_models(make_plan("disagg")), "the disaggregated proxy has no /v1/models"
