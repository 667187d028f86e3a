"""What `pytest --launcher=slurm --engine=dynamo-trtllm` runs on a cluster, line for line (it cannot run here)."""

from dataclasses import replace
from pathlib import Path

from pytest_llama4.config.settings import Settings
from pytest_llama4.deploy.launchers.allocation import Allocation
from pytest_llama4.deploy.launchers.slurm import SlurmLauncher, srun_argv
from pytest_llama4.deploy.wiring import wire

ADDRESSES = {"gb-01": "10.0.0.1", "gb-02": "10.0.0.2"}


class KnownAddresses(Allocation):
    """An allocation whose node addresses are given instead of asked of scontrol."""

    def address(self, node: str) -> str:
        return ADDRESSES[node]


SEED = Settings(  # the seed guide's disaggregated setup
    topology="disagg", launcher="slurm", engine="dynamo-trtllm", discovery="etcd",
    model="nvidia/Llama-4-Maverick-17B-128E-Instruct-FP8", image="nvcr.io/nvidia/ai-dynamo/tensorrtllm-runtime:0.4.0",
    mounts="/home/me/dynamo/:/mnt", gpus_per_node=4, dynamo_version="1.6.1",
    prefill_engine_config=Path("/mnt/engine_configs/llama4/eagle/eagle_prefill.yaml"),
    decode_engine_config=Path("/mnt/engine_configs/llama4/eagle/eagle_decode.yaml"),
)


def srun_lines(settings: Settings, tmp_path: Path) -> dict[str, list[str]]:
    allocation = KnownAddresses("77", tuple(ADDRESSES))
    launcher = SlurmLauncher(allocation, "run", image=settings.image, mounts=settings.mounts)
    launcher.allocate_port = iter(range(30001, 30100)).__next__  # deterministic ports for the golden lines
    plan = settings.plan
    wiring = wire(plan, settings, launcher, 8000, tmp_path, tmp_path / "configs")
    return {s.name: srun_argv(s, c, allocation, step_name=s.name, image=settings.image, mounts=settings.mounts)
            for s, c in wiring.commands.items()}


def test_seed_disagg_on_two_gb200_nodes(tmp_path):
    lines = srun_lines(SEED, tmp_path)
    assert list(lines) == ["etcd-0", "nats-0", "frontend-0", "prefill-0", "decode-0"]
    head = ["--overlap", "--jobid=77"]
    container = ["--container-image=nvcr.io/nvidia/ai-dynamo/tensorrtllm-runtime:0.4.0", "--no-container-mount-home",
                 "--container-mounts=/home/me/dynamo/:/mnt"]
    assert lines["etcd-0"][:12] == ["srun", *head, "--job-name=etcd-0", "--nodes=1", "--nodelist=gb-01",
                                    "--ntasks-per-node=1", "--ntasks=1", "--kill-on-bad-exit=1", *container]
    assert "--listen-client-urls" in lines["etcd-0"] and "http://10.0.0.1:30001" in lines["etcd-0"]
    assert lines["frontend-0"] == [
        "srun", *head, "--job-name=frontend-0", "--nodes=1", "--nodelist=gb-01", "--ntasks-per-node=1",
        "--ntasks=1", "--kill-on-bad-exit=1", *container, "--container-env=ETCD_ENDPOINTS,NATS_SERVER",
        "python3", "-m", "dynamo.frontend", "--http-port", "8000"]
    prefill_env = "--container-env=DYN_SYSTEM_PORT,ETCD_ENDPOINTS,NATS_SERVER,TRTLLM_USE_UCX_KVCACHE"
    assert lines["prefill-0"] == [
        "srun", *head, "--job-name=prefill-0", "--nodes=1", "--nodelist=gb-01", "--ntasks-per-node=4", "--ntasks=4",
        "--kill-on-bad-exit=1", "--mpi=pmix", "--oversubscribe", "--gpus-per-node=4", *container, prefill_env,
        "trtllm-llmapi-launch", "python3", "-m", "dynamo.trtllm",
        "--model", "nvidia/Llama-4-Maverick-17B-128E-Instruct-FP8",
        "--served-model-name", "nvidia/Llama-4-Maverick-17B-128E-Instruct-FP8",
        "--extra-engine-args", "/mnt/engine_configs/llama4/eagle/eagle_prefill.yaml",
        "--disaggregation-mode", "prefill", "--publish-metrics"]  # Dynamo 1.6 (the default): engine metrics on
    assert lines["decode-0"][4:6] == ["--nodes=1", "--nodelist=gb-02"]
    assert lines["decode-0"][-3:] == ["--disaggregation-mode", "decode", "--publish-metrics"]
    assert all("localhost" not in " ".join(line) for line in lines.values())


def test_worker_environment_points_at_the_head_node(tmp_path):
    allocation = KnownAddresses("77", tuple(ADDRESSES))
    launcher = SlurmLauncher(allocation, "run")
    wiring = wire(SEED.plan, SEED, launcher, 8000, tmp_path, tmp_path / "configs")
    decode = next(c for s, c in wiring.commands.items() if s.name == "decode-0")
    assert decode.env["ETCD_ENDPOINTS"].startswith("10.0.0.1:")
    assert decode.env["NATS_SERVER"].startswith("nats://10.0.0.1:")
    assert decode.env["TRTLLM_USE_UCX_KVCACHE"] == "1"


def test_file_discovery_selects_itself_on_the_command_line(tmp_path):
    settings = replace(SEED, discovery="file", topology="agg", image=None,
                       engine_config=Path("/mnt/engine_configs/llama4/eagle/eagle_agg.yaml"))
    lines = srun_lines(settings, tmp_path)
    assert list(lines) == ["frontend-0", "worker-0"]
    for line in lines.values():
        assert line[-6:] == ["--discovery-backend", "file", "--request-plane", "tcp", "--event-plane", "zmq"]
    assert "--disaggregation-mode" in lines["worker-0"]
    assert lines["worker-0"][lines["worker-0"].index("--disaggregation-mode") + 1] == "agg"
