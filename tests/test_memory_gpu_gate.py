"""The memory suite's GPU gate, on the real embedded default with a stand-in GPU: no GPU is here, so a conftest gives
the suite a `gpu_monitor` over one scripted H100 (the sampler itself is proven on a real one, benchmarks/). It
passes a deployment well under the profile's share of GPU memory, fails one over it with the table, and fails
one whose GPU total is unknown instead of exempting it."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from pytest_llama4.config.paths import PROJECT_ROOT
from tests.test_integration import SUITES, assert_nothing_left, run_pytest

pytestmark = pytest.mark.integration

H100_MIB = 81559.0
ONE_SCRIPTED_GPU = textwrap.dedent("""
    import os, time
    import pytest
    from pytest_llama4.measure.telemetry import GpuMonitor, GpuSample

    class OneGpu:
        node = "node1"
        def start(self, emit):
            emit(GpuSample(time.time(), "node1", 0, "NVIDIA H100 80GB HBM3",
                           float(os.environ["SCRIPTED_GPU_USED_MIB"]),
                           float(os.environ["SCRIPTED_GPU_TOTAL_MIB"]) or None, 90.0))
        def stop(self):
            pass
        def failure(self):
            return None

    @pytest.fixture
    def gpu_monitor():
        with GpuMonitor([OneGpu()]) as monitor:
            yield monitor
""")


@pytest.mark.parametrize(("used_mib", "total_mib", "verdict"), [
    (60000.0, H100_MIB, "passed"), (78000.0, H100_MIB, "failed"), (60000.0, 0.0, "failed")],
    ids=["under", "over", "total-unknown"])
def test_gpu_memory_gate(pytester, tmp_path, monkeypatch, used_mib, total_mib, verdict):
    profile = yaml.safe_load((PROJECT_ROOT / "fixtures" / "profiles" / "cpu-mocker.yaml").read_text())
    profile["memory"]["gpu_memory_used_fraction"] = 0.9
    profile_file = tmp_path / "gpu.yaml"
    profile_file.write_text(yaml.safe_dump(profile))
    pytester.makeconftest(ONE_SCRIPTED_GPU)
    (pytester.path / "test_memory.py").write_text((SUITES / "test_memory.py").read_text())
    monkeypatch.setenv("SCRIPTED_GPU_USED_MIB", str(used_mib))
    monkeypatch.setenv("SCRIPTED_GPU_TOTAL_MIB", str(total_mib))
    reports = tmp_path / "reports"
    result = run_pytest(pytester, reports, "test_memory.py", "-k", "gpu", f"--profile-file={profile_file}")
    result.assert_outcomes(**{verdict: 1})
    if used_mib == 78000.0:
        result.stdout.fnmatch_lines(["*GPU memory above 90% of a GPU during chat-isl256-osl64-c8:*",
                                     "*node1*0*78000*81559*95.6%*"])
    if not total_mib:  # an unknown total used to exempt the GPU from the limit
        result.stdout.fnmatch_lines(["*no total memory for node1 GPU 0 (peak 60000 MiB), so the limit of 90% "
                                     "cannot be checked*"])
    assert_nothing_left(reports)
