"""How much the load generator costs, and whether it ever caps what the server delivers (run by hand).

Starts the real Dynamo frontend + mocker with no simulated delay (`speedup_ratio=0`, so the server streams as fast
as it can), then at each concurrency runs the same closed-loop chat scenario (streaming, same ISL/OSL, same
request count) with three clients:
  ours   pytest_llama4.measure.load.run_load (default processes: 1 on a 2-CPU machine; at 256 also with 2 processes);
  bare   a minimal client: one thread, `selectors` over raw keep-alive sockets, no parsing beyond counting
         `data:` lines and spotting the end of each chunked response; the most a Python client can get;
  aiperf NVIDIA AIPerf (`aiperf profile`), from its own venv (--aiperf, default /tmp/aiperf-venv/bin/aiperf).
CPU time is getrusage(SELF) + getrusage(CHILDREN) around each run (worker processes and aiperf's process tree are
reaped, so they count; the server's processes are not reaped until the end, so they do not). Fixed costs
(interpreter start, imports, tokenizer loading) are removed by running each client twice, with 1 and with
`--rounds` rounds of `concurrency` requests, and dividing the CPU difference by the chunk difference (the
table's "CPU s/M chunks"; "(all-in)" divides the big run's whole CPU time, start-up included, by its chunks, and
"cores" is that CPU time over the run's duration: how busy the client kept the machine).
A chunk is an SSE event with non-empty `choices` (OSL + 1 per request on Dynamo: the last one only carries
finish_reason); the three clients read the same streams.

    .venv/bin/python benchmarks/harness_overhead.py [--concurrency 16 64 256] [--osl 200] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_llama4.config.settings import Settings
from pytest_llama4.deploy.deployment import launch
from pytest_llama4.deploy.fixture_model import ensure_model_dir
from pytest_llama4.deploy.launchers.local import LocalLauncher
from pytest_llama4.measure.load import Scenario, _request_bytes, _Target, make_prompts, run_load


@dataclass
class Run:
    requests: int
    completed: int
    chunks: int
    output_tokens: int
    duration: float
    cpu: float


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def scenario(concurrency: int, requests: int, isl: int, osl: int) -> Scenario:
    return Scenario(f"c{concurrency}", input_tokens=isl, output_tokens=osl, num_prompts=requests,
                    concurrency=concurrency, warmup=0)


def ours(url: str, model: str, sc: Scenario, tokenizer: Path, processes: int | None) -> Run:
    before = cpu_seconds()
    result = run_load(url, model, sc, tokenizer_path=tokenizer, processes=processes)
    cpu = cpu_seconds() - before
    done = [r for r in result.records if r.ok]
    return Run(sc.num_prompts, len(done), sum(len(r.chunk_times) for r in done),
               sum(r.output_tokens or 0 for r in done), result.duration, cpu)


def bare(url: str, model: str, sc: Scenario, tokenizer: Path) -> Run:
    """Closed loop over raw sockets: send, count `data:` lines, spot the chunked terminator, send the next."""
    target = _Target.parse(url)
    requests = iter([_request_bytes(target, model, sc, p) for p in make_prompts(sc, tokenizer)])
    selector = selectors.DefaultSelector()
    tails: dict[socket.socket, bytes] = {}
    events = completed = 0
    before, start = cpu_seconds(), time.monotonic()

    def send_next(sock: socket.socket) -> None:
        request = next(requests, None)
        if request is None:
            selector.unregister(sock)
            sock.close()
        else:
            sock.sendall(request)

    for _ in range(min(sc.concurrency or 1, sc.num_prompts)):
        sock = socket.create_connection((target.host, target.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tails[sock] = b""
        selector.register(sock, selectors.EVENT_READ)
        send_next(sock)
    while selector.get_map():
        for key, _ in selector.select():
            sock = key.fileobj
            data = sock.recv(1 << 18)
            if not data:
                raise RuntimeError("the server closed a connection")
            events += data.count(b"data:")
            tail = (tails[sock] + data)[-7:]
            if tail == b"\r\n0\r\n\r\n":
                completed += 1
                tails[sock] = b""
                send_next(sock)
            else:
                tails[sock] = tail
    duration, cpu = time.monotonic() - start, cpu_seconds() - before
    chunks = events - 2 * completed  # the usage chunk and [DONE] carry no choices
    return Run(sc.num_prompts, completed, chunks, completed * sc.output_tokens, duration, cpu)


def aiperf(binary: str, url: str, model: str, sc: Scenario, tokenizer: Path, workdir: Path) -> Run:
    out = workdir / f"aiperf-{sc.name}-{sc.num_prompts}"
    argv = [binary, "profile", "--model", model, "--url", url, "--endpoint-type", "chat", "--streaming",
            "--tokenizer", str(tokenizer), "--isl", str(sc.input_tokens), "--isl-stddev", "0",
            "--osl", str(sc.output_tokens), "--osl-stddev", "0", "--use-legacy-max-tokens",
            "--extra-inputs", "ignore_eos:true", "--extra-inputs", f"min_tokens:{sc.output_tokens}",
            "--concurrency", str(sc.concurrency), "--request-count", str(sc.num_prompts), "--random-seed", "0",
            "--use-server-token-count", "--ui-type", "none", "--no-server-metrics", "--no-gpu-telemetry",
            "--export-level", "summary", "--artifact-dir", str(out)]
    before = cpu_seconds()
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cpu = cpu_seconds() - before
    if done.returncode != 0:
        raise RuntimeError(f"aiperf failed ({done.returncode}):\n{done.stdout[-3000:]}")
    data = json.loads((out / "profile_export_aiperf.json").read_text())
    completed = int(data["request_count"]["avg"])
    tokens = int(data["total_output_tokens"]["avg"])
    return Run(sc.num_prompts, completed, tokens + completed, tokens, data["benchmark_duration"]["avg"], cpu)


def marginal(small: Run, big: Run) -> float:
    """CPU seconds per million chunks, fixed costs removed."""
    return (big.cpu - small.cpu) / max(1, big.chunks - small.chunks) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--isl", type=int, default=100)
    parser.add_argument("--osl", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4, help="requests = rounds x concurrency in the big run")
    parser.add_argument("--aiperf", default=os.environ.get("AIPERF", "/tmp/aiperf-venv/bin/aiperf"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    have_aiperf = shutil.which(args.aiperf) is not None
    if not have_aiperf:
        print(f"aiperf not found at {args.aiperf}: install it in its own venv "
              "(python -m venv /tmp/aiperf-venv && /tmp/aiperf-venv/bin/pip install aiperf==0.13.0)")

    workdir = Path(tempfile.mkdtemp(prefix="harness-overhead-"))
    tokenizer = ensure_model_dir()
    settings = Settings(reports_dir=workdir, speedup_ratio=0)
    deployment = launch(settings, workdir / "run", LocalLauncher(run_label=f"harness-overhead-{os.getpid()}"))
    rows = []
    try:
        url, model = deployment.base_url, deployment.served_model
        run_load(url, model, scenario(8, 16, args.isl, args.osl))  # warm the server up
        for c in args.concurrency:
            small, big = scenario(c, c, args.isl, args.osl), scenario(c, c * args.rounds, args.isl, args.osl)
            clients = {"ours": lambda s: ours(url, model, s, tokenizer, None),
                       "bare": lambda s: bare(url, model, s, tokenizer)}
            if c >= 256:
                clients["ours, 2 processes"] = lambda s: ours(url, model, s, tokenizer, 2)
            if have_aiperf:
                clients["aiperf"] = lambda s: aiperf(args.aiperf, url, model, s, tokenizer, workdir)
            for name, client in clients.items():
                one, many = client(small), client(big)
                rows.append({"concurrency": c, "client": name, "requests": many.requests,
                             "completed": many.completed, "duration_s": many.duration,
                             "output_tok_s": many.output_tokens / many.duration,
                             "chunks_s": many.chunks / many.duration, "cpu_s": many.cpu,
                             "cpu_s_per_m_chunks_total": many.cpu / max(1, many.chunks) * 1e6,
                             "cpu_s_per_m_chunks": marginal(one, many), "client_cores": many.cpu / many.duration})
                print(f"  c={c:<4} {name:<16} done", file=sys.stderr, flush=True)
    finally:
        deployment.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nmachine: {os.cpu_count()} CPUs shared by server and client; ISL {args.isl}, OSL {args.osl}, "
          f"chat, streaming, closed loop; big run = {args.rounds} x concurrency requests\n")
    print(f"{'conc':>5} {'client':<18} {'done':>5} {'dur s':>6} {'out tok/s':>9} {'chunks/s':>9} {'CPU s':>6} "
          f"{'cores':>5} {'CPU s/M chunks':>14} {'(all-in)':>9} {'vs aiperf':>9}")
    for row in rows:
        peer = next((r for r in rows if r["concurrency"] == row["concurrency"] and r["client"] == "aiperf"), None)
        ratio = f"{row['cpu_s_per_m_chunks'] / peer['cpu_s_per_m_chunks']:.2f}" if peer else "-"
        print(f"{row['concurrency']:>5} {row['client']:<18} {row['completed']:>5} {row['duration_s']:>6.2f} "
              f"{row['output_tok_s']:>9.0f} {row['chunks_s']:>9.0f} {row['cpu_s']:>6.2f} {row['client_cores']:>5.2f} "
              f"{row['cpu_s_per_m_chunks']:>14.1f} {row['cpu_s_per_m_chunks_total']:>9.1f} {ratio:>9}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
