"""The srun line for each kind of service, flag for flag (DESIGN.md section 8, the seed's multinode scripts)."""

import pytest

from pytest_llama4.config.topology import make_plan
from pytest_llama4.deploy.engines.base import Command
from pytest_llama4.deploy.launchers.allocation import Allocation, gres_gpus
from pytest_llama4.deploy.launchers.slurm import SlurmLauncher, srun_argv

ALLOCATION = Allocation("4242", ("gb-01", "gb-02", "gb-03"))


def test_frontend_is_one_task_on_the_head_node():
    plan = make_plan("disagg")
    argv = srun_argv(plan.frontend, Command(("python3", "-m", "dynamo.frontend")), ALLOCATION, step_name="s")
    assert argv == ["srun", "--overlap", "--jobid=4242", "--job-name=s", "--nodes=1", "--nodelist=gb-01",
                    "--ntasks-per-node=1", "--ntasks=1", "--kill-on-bad-exit=1", "python3", "-m", "dynamo.frontend"]


def test_mpi_worker_spanning_two_nodes_in_a_container():
    plan = make_plan("disagg", prefill_nodes=1, decode_nodes=2)
    decode = plan.workers[-1]
    command = Command(("trtllm-llmapi-launch", "python3", "-m", "dynamo.trtllm"),
                      env={"NATS_SERVER": "nats://10.0.0.1:4222", "ETCD_ENDPOINTS": "http://10.0.0.1:2379"},
                      tasks_per_node=4, mpi=True, gpus_per_node=4)
    argv = srun_argv(decode, command, ALLOCATION, step_name="s", image="nvcr.io/dynamo:tag", mounts="/lustre:/lustre")
    assert argv == [
        "srun", "--overlap", "--jobid=4242", "--job-name=s", "--nodes=2", "--nodelist=gb-02,gb-03",
        "--ntasks-per-node=4", "--ntasks=8", "--kill-on-bad-exit=1", "--mpi=pmix", "--oversubscribe",
        "--gpus-per-node=4", "--container-image=nvcr.io/dynamo:tag", "--no-container-mount-home",
        "--container-mounts=/lustre:/lustre",
        "--container-env=ETCD_ENDPOINTS,NATS_SERVER", "trtllm-llmapi-launch", "python3", "-m", "dynamo.trtllm"]


def test_no_container_flags_without_an_image():
    worker = make_plan("agg").workers[0]
    argv = srun_argv(worker, Command(("x",), env={"A": "1"}), ALLOCATION, step_name="s", mounts="/a:/b")
    assert not [flag for flag in argv if flag.startswith("--container")]


def test_gpu_count_is_read_from_gres():
    assert gres_gpus("NodeName=gb-01 Arch=aarch64 Gres=gpu:4(S:0-1) NodeAddr=10.0.0.1") == 4
    assert gres_gpus("NodeName=h-01 Gres=gpu:h100:8 NodeAddr=h-01") == 8
    assert gres_gpus("NodeName=h-01 Gres=gpu:a:2,gpu:b:2,shard:8") == 4
    assert gres_gpus("NodeName=node1 Gres=(null) NodeAddr=127.0.0.1") is None


def test_a_helper_step_is_one_task_per_node_and_in_the_image_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-hub-cache"))
    launcher = SlurmLauncher(ALLOCATION, "run-1", image="nvcr.io/dynamo:tag", mounts="/lustre:/lustre")
    assert launcher.helper_argv(("python3", "-V"), ("gb-01", "gb-02"), name="versions", in_image=True) == [
        "srun", "--overlap", "--jobid=4242", "--job-name=llama4-run-1-versions", "--nodes=2",
        "--nodelist=gb-01,gb-02", "--ntasks-per-node=1", "--ntasks=2", "--kill-on-bad-exit=1",
        "--container-image=nvcr.io/dynamo:tag", "--no-container-mount-home", "--container-name=llama4-run-1",
        "--container-mounts=/lustre:/lustre", "python3", "-V"]
    assert launcher.helper_argv(("nvidia-smi",), ("gb-03",), name="gpus", unbuffered=True) == [
        "srun", "--unbuffered", "--overlap", "--jobid=4242", "--job-name=llama4-run-1-gpus", "--nodes=1",
        "--nodelist=gb-03", "--ntasks-per-node=1", "--ntasks=1", "--kill-on-bad-exit=1", "nvidia-smi"]


def test_a_node_address_is_resolved_to_an_ip_and_an_unresolvable_one_names_the_node():
    from pytest_llama4.deploy.launchers.allocation import SlurmError, resolve_address

    assert resolve_address("head", "localhost") == "127.0.0.1"
    assert resolve_address("n", "10.1.2.3") == "10.1.2.3"
    with pytest.raises(SlurmError, match=r"^node gpu-z99: its address gpu-z99\.invalid \(NodeAddr\) does not resolve "
                                         r"on .*add it to DNS or /etc/hosts, or give the node an IP NodeAddr$"):
        resolve_address("gpu-z99", "gpu-z99.invalid")


def test_slurm_alloc_asks_for_the_gpus_of_a_gpu_engine_only():
    from pytest_llama4.config.settings import Settings
    from pytest_llama4.deploy.launchers import allocation_request

    gpu = allocation_request(Settings(launcher="slurm", engine="dynamo-trtllm", gpus_per_node=8, slurm_exclusive=True,
                                      slurm_segment=2, partition="batch"), "r1", 2)
    assert gpu.argv() == ["salloc", "--no-shell", "--nodes=2", "--job-name=pytest-llama4-r1", "--time=01:00:00",
                          "--gpus-per-node=8", "--exclusive", "--segment=2", "--partition=batch"]
    assert "--gpus-per-node" not in " ".join(allocation_request(Settings(launcher="slurm"), "r1", 1).argv())
