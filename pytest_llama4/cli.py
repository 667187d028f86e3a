"""`pytest-llama4`: commands that work without pytest. Each subcommand is one `add_*` function below."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import lint as config_lint
from .deploy.launchers import janitor
from .deploy.launchers.allocation import SlurmError

LINT_DESCRIPTION = """\
Lint engine configs before a deployment starts. YAML files are TensorRT-LLM LLM-API options
(dynamo.trtllm --extra-engine-args, trtllm-serve --extra_llm_api_options): every key, nested ones too, must be one
TensorRT-LLM knows (the installed tensorrt_llm, else the key list this package ships); prefill and decode must
agree on speculative_config, model and the cache transceiver backend. JSON files are Dynamo mocker engine args.
Prints `file: key: severity: message`; exits 1 on any error, 0 when there are only warnings."""


def add_lint_config(commands: argparse._SubParsersAction) -> None:
    lint = commands.add_parser("lint-config", help="check engine configs (keys, prefill/decode agreement)",
                               description=LINT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    lint.add_argument("--agg", type=Path, metavar="FILE", help="the aggregated worker's config")
    lint.add_argument("--prefill", type=Path, metavar="FILE", help="the prefill worker's config")
    lint.add_argument("--decode", type=Path, metavar="FILE", help="the decode worker's config")
    lint.add_argument("--exact", action="store_true",
                      help="also build TensorRT-LLM's TorchLlmArgs from each YAML (needs tensorrt_llm: run it "
                           "inside the serving container)")
    lint.add_argument("--model", default="nvidia/Llama-4-Maverick-17B-128E-Instruct-FP8",
                      help="model passed to TorchLlmArgs with --exact (default: %(default)s)")
    lint.add_argument("files", nargs="*", type=Path, metavar="FILE",
                      help="more configs, each linted alone (role: prefill/decode when it has "
                           "cache_transceiver_config, else aggregated)")
    lint.set_defaults(run=run_lint_config, parser=lint)  # its own usage line in errors


def run_lint_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    roles = {"agg": args.agg, "prefill": args.prefill, "decode": args.decode}
    given = [p for p in (*roles.values(), *args.files) if p is not None]
    if not given:
        parser.error("nothing to lint; give FILE arguments or --agg/--prefill/--decode")
    missing = [str(p) for p in given if not p.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    findings = config_lint.lint_configs(**roles)
    for path in args.files:
        findings += config_lint.lint_mocker_file(path) if path.suffix == ".json" else config_lint.lint_file(path)
    if args.exact:
        findings += [f for path in given if path.suffix != ".json"
                     for f in config_lint.validate_with_tensorrt_llm(path, args.model)]
    for finding in findings:
        print(finding)
    errors = len(config_lint.errors(findings))
    warnings = len(findings) - errors
    keys = config_lint.known_keys().source if any(p.suffix != ".json" for p in given) else None
    print(f"lint-config: {len(given)} file(s), {errors} error(s), {warnings} warning(s)"
          + (f"; keys: {keys}" if keys else ""), file=sys.stderr)
    return 1 if errors else 0


REAP_DESCRIPTION = """\
Cancel the SLURM jobs and steps that dead pytest-llama4 runs of this user left behind (a SIGKILLed pytest, a
rebooted login node): the allocation --slurm-alloc requested and any step still running. Only what is provably
ours is touched: the name carries a run id, and that run's record (in $PYTEST_LLAMA4_STATE, default
~/.local/state/pytest-llama4/runs) shows its pytest gone from this host or silent for minutes on another.
A new run on SLURM does the same before it starts."""


def add_reap(commands: argparse._SubParsersAction) -> None:
    reap = commands.add_parser("reap", help="cancel SLURM jobs and steps that dead runs left behind",
                               description=REAP_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    reap.add_argument("--dry-run", action="store_true", help="only list what would be cancelled")
    reap.add_argument("--grace", type=float, default=10.0,
                      help="seconds a step gets after SIGTERM before it is killed (default: %(default)s)")
    reap.set_defaults(run=run_reap, parser=reap)


def run_reap(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        leftovers, spared = janitor.find()
        lines = [f"would cancel {leftover.describe()}" for leftover in leftovers] if args.dry_run else \
            janitor.reap(leftovers, grace=args.grace)
    except SlurmError as error:
        print(f"reap: {error}", file=sys.stderr)
        return 2
    if not args.dry_run:
        janitor.forget_dead_runs()
    for line in [*lines, *(f"left alone: {note}" for note in spared)]:
        print(line)
    print(f"reap: {len(leftovers)} leftover(s) of dead runs {'found' if args.dry_run else 'cancelled'}",
          file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pytest-llama4",
                                     description="Llama 4 deployment qualification tools (the pytest plugin "
                                                 "itself runs as `pytest --topology=... suites/`).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_lint_config(commands)
    add_reap(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args, args.parser)


if __name__ == "__main__":
    sys.exit(main())
