"""Every bad setting is a usage error that names the setting and the fix; good ones resolve by precedence."""

from pathlib import Path

import pytest

from pytest_llama4.config.paths import PROJECT_ROOT
from pytest_llama4.config.settings import host_path

ONE_MODEL = PROJECT_ROOT / "engine_configs" / "llama4" / "eagle_one_model"
BAD_SETTINGS = [
    (["--topology=mesh"], {}, "invalid choice: 'mesh'"),
    (["--slurm-alloc"], {}, "--slurm-alloc requests a SLURM allocation: add --launcher=slurm"),
    ([], {"NUM_PREFILL_NODES": "0"}, "environment variable NUM_PREFILL_NODES: needs at least 1, got 0"),
    (["--discovery=consul"], {}, "invalid choice: 'consul'"),
    (["--launcher=endpoint"], {}, "add --endpoint=http://HOST:PORT"),
    (["--endpoint=localhost:8000"], {}, "is not a URL; use e.g. --endpoint=http://127.0.0.1:8000"),
    (["--endpoint=http://h:1", "--launcher=local"], {}, "drop one of the two options"),
    (["--engine=dynamo-trtllm"], {}, "cannot run as local processes; use --engine=mocker"),
    (["--engine-config=nope.yaml"], {}, "--engine-config: engine config"),
    ([], {"ENGINE_CONFIG": "/no/such/eagle_agg.yaml"}, "environment variable ENGINE_CONFIG: engine config "
                                                       "/no/such/eagle_agg.yaml does not exist"),
    (["--topology=disagg"], {"DECODE_ENGINE_CONFIG": "/no/d.yaml"}, "environment variable DECODE_ENGINE_CONFIG"),
    (["--image=img", "--mounts=/nowhere/:/mnt", "--engine-config=/mnt/eagle_agg.yaml"], {},
     "engine config /mnt/eagle_agg.yaml does not exist (mounted from /nowhere/eagle_agg.yaml on the host, via MOUNTS)"),
    (["--launcher=slurm", "--engine=dynamo-trtllm", "--topology=disagg"], {"PREFILL_ENGINE_CONFIG": ""},
     "--engine=dynamo-trtllm --topology=disagg needs PREFILL_ENGINE_CONFIG and DECODE_ENGINE_CONFIG"),
    (["--engine=trtllm-serve"], {}, "--engine=trtllm-serve needs GPU nodes and cannot run as local processes"),
    (["--launcher=slurm", "--engine=trtllm-serve", "--model=/models/maverick", "--served-model-name=llama"], {},
     "--engine=trtllm-serve serves the model under its path /models/maverick (it has no served-model-name option): "
     "drop --served-model-name, or set it to --model"),
    (["--launcher=slurm", "--image=img", "--discovery=file"], {}, "use --discovery=etcd, the seed guide's etcd + NATS"),
    (["--dynamo-version=latest"], {}, "'latest' is not a Dynamo release"),
    (["--engine-python=/no/such/python"], {}, "--engine-python: /no/such/python is not an executable Python"),
    (["--engine-python=/usr/bin/python3", "--image=img", "--launcher=slurm"], {},
     "the image brings its own engine and Python; drop --engine-python or --image"),
    (["--engine-python=/usr/bin/python3", "--engine=dynamo-trtllm", "--launcher=slurm"], {},
     "--engine=dynamo-trtllm runs the Python of the nodes' image: drop --engine-python"),
    (["--startup-timeout=soon"], {}, "--startup-timeout: expected a number, got 'soon'"),
    (["--startup-timeout=0"], {}, "--startup-timeout: must be a positive number of seconds"),
    (["--http-port=70000"], {}, "--http-port: 70000 is not a TCP port"),
    (["--decode-workers=0"], {}, "--decode-workers: needs at least 1, got 0"),
    (["--waivers=missing.yaml"], {}, "pass --waivers=none to run without waivers"),
    # the seed's one-model config is TP8 (tested on 8xH100); the default is 4 GPUs per node
    (["--launcher=slurm", "--engine=dynamo-trtllm", f"--engine-config={ONE_MODEL}/eagle_agg.yml"], {},
     f"ENGINE_CONFIG {ONE_MODEL}/eagle_agg.yml: tensor_parallel_size 8 x pipeline_parallel_size 1 x "
     "context_parallel_size 1 = 8 ranks, but each worker worker is planned on 1 node(s) x 4 GPUs = 4 "
     "(NUM_GPUS_PER_NODE x NUM_NODES), one rank per GPU: set tensor_parallel_size: 4 in the config, or "
     "NUM_GPUS_PER_NODE=8, or NUM_NODES=2"),
    (["--launcher=slurm", "--engine=trtllm-serve", "--dry-run", "--topology=disagg", "--gpus-per-node=8",
      f"--prefill-engine-config={ONE_MODEL}/eagle_prefill.yaml", "--prefill-nodes=2",
      f"--decode-engine-config={ONE_MODEL}/eagle_decode.yaml"], {},
     "= 8 ranks, but each prefill worker is planned on 2 node(s) x 8 GPUs = 16"),
]


@pytest.mark.parametrize(("args", "env", "expected"), BAD_SETTINGS)
def test_bad_setting_is_a_usage_error_with_the_fix(pytester, monkeypatch, args, env, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pytester.makepyfile("def test_never_runs(): pass")
    result = pytester.runpytest("--llama4", *args)  # the environment alone does not switch the plugin on
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = "\n".join(result.errlines)
    assert expected in errors
    assert "Traceback" not in errors


def test_unknown_value_in_ini_names_the_ini_key(pytester):
    pytester.makeini("[pytest]\ntopology = mesh\n")
    pytester.makepyfile("def test_never_runs(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini key topology: unknown value 'mesh'; choose one of agg, disagg*"])


def test_precedence_is_option_then_environment_then_ini(pytester, monkeypatch):
    pytester.makeini("[pytest]\nserved_model_name = from-ini\nstartup_timeout = 7\ntopology = disagg\n")
    monkeypatch.setenv("SERVED_MODEL_NAME", "from-env")
    pytester.makepyfile("""
        def test_settings(llama4_settings):
            assert llama4_settings.served_model_name == "from-option"
            assert llama4_settings.startup_timeout == 7.0
            assert llama4_settings.topology == "disagg"
            assert llama4_settings.launcher == "endpoint"
        """)
    pytester.runpytest("--served-model-name=from-option", "--endpoint=http://127.0.0.1:9").assert_outcomes(passed=1)
    monkeypatch.setenv("SERVED_MODEL_NAME", "from-option")  # env beats ini
    pytester.runpytest("--endpoint=http://127.0.0.1:9").assert_outcomes(passed=1)


def test_help_works_even_with_a_bad_environment(pytester, monkeypatch):
    monkeypatch.setenv("ENGINE_CONFIG", "/no/such/file.yaml")
    result = pytester.runpytest("--help")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*Llama 4 deployment qualification*", "*--topology=TOPOLOGY*"])


def test_markers_are_registered(pytester):
    result = pytester.runpytest("--llama4", "--markers")
    for marker in ("schema", "streaming", "errors", "throughput", "memory", "speculative", "disagg", "gpu"):
        result.stdout.fnmatch_lines([f"@pytest.mark.{marker}:*"])


def test_container_paths_are_checked_through_the_mounts(pytester):
    mounts = f"{PROJECT_ROOT}/:/mnt,/lustre:/lustre:ro"
    assert host_path(Path("/mnt/engine_configs/a.yaml"), mounts) == PROJECT_ROOT / "engine_configs/a.yaml"
    assert host_path(Path("/lustre/m/x"), mounts) == Path("/lustre/m/x")
    assert host_path(Path("/opt/in-image.yaml"), mounts) is None
    pytester.makepyfile("def test_settings(llama4_settings):\n    assert str(llama4_settings.engine_config) == "
                        "'/mnt/engine_configs/llama4/eagle/eagle_agg.yaml'\n")
    pytester.runpytest("--image=img", f"--mounts={mounts}", "--endpoint=http://127.0.0.1:9",
                       "--engine-config=/mnt/engine_configs/llama4/eagle/eagle_agg.yaml").assert_outcomes(passed=1)


def test_an_image_defaults_to_etcd_discovery(pytester):
    pytester.makepyfile("def test_settings(llama4_settings):\n    assert llama4_settings.discovery == 'etcd'\n")
    pytester.runpytest("--image=img", "--endpoint=http://127.0.0.1:9").assert_outcomes(passed=1)


@pytest.mark.parametrize(("args", "budget"), [
    (["--endpoint=http://127.0.0.1:9"], 120.0),
    (["--endpoint=http://127.0.0.1:9", "--engine=dynamo-trtllm"], 1800.0),  # a model load takes many minutes
    (["--endpoint=http://127.0.0.1:9", "--engine=dynamo-trtllm", "--startup-timeout=300"], 300.0),
])
def test_the_startup_budget_defaults_to_the_engines_own(pytester, args, budget):
    pytester.makepyfile(f"def test_settings(llama4_settings):\n    assert llama4_settings.startup_timeout == {budget}\n"
                        "    assert llama4_settings.startup_budget == llama4_settings.startup_timeout + 660\n")
    pytester.runpytest(*args).assert_outcomes(passed=1)
