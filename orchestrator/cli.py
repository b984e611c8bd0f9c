"""Command line: parse, call one function of the core, print. The only place that exits.

Heavy modules (docker, tabulate) are imported inside the commands that need them, so
`--help` and `validate` start in the time Python itself takes.
"""

from __future__ import annotations

import _thread  # a lock without importing threading on every run
import argparse
import gc
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from orchestrator import __version__
from orchestrator.errors import ConfigError, OrchestratorError, PreflightError, Problem, printable

if TYPE_CHECKING:
    from orchestrator.project import Project

EXIT_OK, EXIT_FAILED = 0, 1


# ----------------------------------------------------------------------------- parser
def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("-c", "--config", default=default, metavar="FILE",
                        help="TOML file (default: $AUTO_INFER_VLLM_CONFIG)")
    parser.add_argument("--override", action="append", default=default, metavar="JSON",
                        help="JSON deep-merged after $AUTO_INFER_VLLM_OVERRIDES (repeatable)")
    parser.add_argument("--set", dest="sets", action="append", default=default, metavar="KEY=VALUE",
                        help="set one dotted key, value read as TOML (repeatable, applied last)")
    parser.add_argument("-p", "--project", default=default, help="project name (default: [docker] project or the file's stem)")
    parser.add_argument("--stdin-config", action="store_true", default=default,
                        help="read the config's text from standard input; -c still names the file "
                             "(relative paths, project name): checks a file before it is written")
    parser.add_argument("--debug", action="store_true", default=default, help="show tracebacks")


_BACKEND_HELP = "docker (containers) or local (processes); default: docker when the file has [docker] tables"
_OFFLINE_HELP = "do not ask the image for vLLM's option table (render by the contract's rules)"


def _backend_arg(p: argparse.ArgumentParser, *, guessed: bool, help: str | None = None) -> None:
    """--backend, its choices the backends' names (targets.py: the targets that run instances; no
    backend is imported). `guessed`: the default is the config's own backend, else Docker."""
    from orchestrator.targets import BACKENDS, DOCKER

    p.add_argument("--backend", choices=BACKENDS, default=None if guessed else DOCKER, help=help)


def _validate_args(p: argparse.ArgumentParser) -> None:
    _backend_arg(p, guessed=True, help=_BACKEND_HELP)
    p.add_argument("--offline", action="store_true", help=_OFFLINE_HELP)
    p.add_argument("--json", action="store_true")


def _up_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--wait", action="store_true", help="wait until every instance answers /health")
    p.add_argument("--timeout", type=float, default=1800, help="seconds to wait for health: --wait, and instances that start in turn on a shared GPU (default 1800)")
    p.add_argument("--remove-orphans", action="store_true", help="remove instances no longer in the config")
    p.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    p.add_argument("--adopt", action="store_true",
                   help="take over this project's containers made from another config file (recreates them)")
    p.add_argument("--no-preflight", action="store_true",
                   help="start even when vLLM's option table reports problems (they become warnings)")
    p.add_argument("--json", action="store_true")


def _down_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME")
    _backend_arg(p, guessed=False)
    p.add_argument("--timeout", type=float, default=None,
                   help="local backend: seconds between SIGTERM and SIGKILL (default 60)")
    p.add_argument("--json", action="store_true")


def _ps_args(p: argparse.ArgumentParser) -> None:
    _backend_arg(p, guessed=False)
    p.add_argument("--json", action="store_true")


def _logs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    _backend_arg(p, guessed=True, help=_BACKEND_HELP)
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--tail", type=int, default=None, metavar="N", help="last N lines (default all)")
    p.add_argument("--restarts", action="store_true",
                   help="show `watch`'s restarts of the instance instead (time, reason, the log lines before each)")
    p.add_argument("--json", action="store_true", help="with --restarts: the records as JSON")


def _compose_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")
    p.add_argument("--offline", action="store_true", help=_OFFLINE_HELP)


def _k8s_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")
    p.add_argument("--namespace", metavar="NS", help="namespace of every object (default: [kubernetes] namespace)")
    p.add_argument("--offline", action="store_true", help=_OFFLINE_HELP)


def _flags_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", help="image to ask (default: the config's first image)")
    p.add_argument("--json", action="store_true")


def _gpus_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", help="image for the probe container when NVML is not available here "
                                   "(default: the config's first image)")
    p.add_argument("--json", action="store_true")


def _names_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME")


def _launch_args(p: argparse.ArgumentParser) -> None:
    _names_args(p)
    p.add_argument("--dry-run", action="store_true", help="show what launch would start, and in which order; start nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
    p.add_argument("--timeout", type=float, default=1800,
                   help="seconds an instance waits for another on a shared GPU to answer /health (default 1800)")


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _top_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")
    p.add_argument("--json", action="store_true", help="one snapshot as JSON (implies --once)")
    p.add_argument("-n", "--interval", type=_positive, default=2.0, metavar="S",
                   help="seconds between refreshes of the live view (default 2)")
    p.add_argument("--window", type=_positive, default=None, metavar="S",
                   help="with --once/--json: take two samples S seconds apart, for tokens/s and the "
                        "interval's TTFT p50")
    p.add_argument("--timeout", type=_positive, default=2.0, metavar="S",
                   help="seconds each server has to answer /metrics (default 2)")


def _watch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interval", type=_positive, default=5.0, metavar="S",
                   help="seconds between looks at the containers (default 5)")
    p.add_argument("--backoff", type=_positive, default=60.0, metavar="S",
                   help="seconds before a second restart in a row; doubled each time (default 60)")
    p.add_argument("--backoff-max", type=_positive, default=1800.0, metavar="S",
                   help="the longest wait between restarts in a row (default 1800)")
    p.add_argument("--max-restarts", type=int, default=5, metavar="N",
                   help="restarts in a row before an instance is reported as crash-looping and left alone "
                        "(default 5)")
    p.add_argument("--healthy-reset", type=_positive, default=600.0, metavar="S",
                   help="seconds of health that end a series of restarts (default 600)")


def _no_args(p: argparse.ArgumentParser) -> None:
    pass


def _dashboard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")
    p.add_argument("--rules", action="store_true",
                   help="write the Prometheus rules file (recording rules and alerts) instead")


# name -> (help, its own arguments); `plan` takes validate's.
SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "validate": ("check the config (and its vLLM options against the image); exit 2 on any error", _validate_args),
    "plan": ("print the resolved plan (argv, env, container specs)", _validate_args),
    "up": ("create, recreate or start instances so they match the config", _up_args),
    "down": ("stop and remove this project's containers (logs are kept)", _down_args),
    "ps": ("list this project's instances", _ps_args),
    "logs": ("show an instance's log file (or the gateway's, monitoring's, the activator's output)", _logs_args),
    "top": ("live view of each instance's load, read from its /metrics", _top_args),
    "watch": ("supervise this project: restart instances unhealthy for too long (foreground, for systemd)",
              _watch_args),
    "compose": ("write a docker-compose.yml that runs the same containers", _compose_args),
    "k8s": ("write Kubernetes manifests (a Deployment and a Service per instance)", _k8s_args),
    "flags": ("show the options the vLLM in an image accepts", _flags_args),
    "gpus": ("list the GPU host's GPUs: memory, and the processes and containers using them", _gpus_args),
    "launch": ("in-container launcher: start the instances as processes (the boot hook)", _launch_args),
    "schema": ("print the JSON Schema of the config file", _no_args),
    "dashboard": ("write the Grafana dashboard of the servers' metrics (per model and instance)", _dashboard_args),
}
_GLOBAL_VALUE_OPTIONS = ("--config", "--override", "--set", "--project")


def build_parser(only: str | None = None, *, arguments: bool = True) -> argparse.ArgumentParser:
    """Every command with its arguments; with `only` (the command argv names), just that one;
    without `arguments`, the commands alone (enough for the top-level help and its errors).
    Building all ten parsers and their ~90 arguments (argparse formats each argument as it is
    added and looks up translations for every parser) cost every run several ms."""
    parser = argparse.ArgumentParser(
        prog="vllm-orch",
        description="Run vLLM servers from one TOML file: one Docker container per instance.",
    )
    parser.add_argument("--version", action="version", version=f"vllm-orch {__version__}")
    _common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_arguments) in SUBCOMMANDS.items():
        if only is None or only == name:
            p = sub.add_parser(name, help=help_text, description=help_text)
            if arguments:
                _common(p, suppress=True)
                add_arguments(p)
    return parser


def command_named(argv: Sequence[str]) -> str | None:
    """The subcommand in argv, skipping the values of the global options before it; None when
    there is none or it is unknown (argparse then reports it, with every command listed)."""
    takes_value = False
    for token in argv:
        if takes_value:
            takes_value = False
        elif token in ("-c", "-p") or (token.startswith("--") and "=" not in token and len(token) > 2
                                       and any(o.startswith(token) for o in _GLOBAL_VALUE_OPTIONS)):
            takes_value = True  # argparse accepts unambiguous prefixes such as --conf
        elif token == "--":
            return None
        elif not token.startswith("-"):
            return token if token in SUBCOMMANDS else None
    return None


# ----------------------------------------------------------------------------- helpers
def _opt(args: argparse.Namespace, name: str, default: Any = None) -> Any:
    value = getattr(args, name, None)
    return default if value is None else value


_STDIN_TEXT: list[str] = []  # --stdin-config: read once, a command may open the project twice


def _inputs(args: argparse.Namespace):
    from orchestrator.app import Inputs

    text = None
    if _opt(args, "stdin_config"):
        if not _STDIN_TEXT:
            from orchestrator.config.loader import MAX_CONFIG_BYTES

            # One more than the cap, so the loader can refuse a larger text (or an endless one).
            _STDIN_TEXT.append(sys.stdin.read(MAX_CONFIG_BYTES + 1))
        text = _STDIN_TEXT[0]
    return Inputs(config=_opt(args, "config"), overrides=tuple(_opt(args, "override", [])),
                  sets=tuple(_opt(args, "sets", [])), project=_opt(args, "project"), text=text)


def _config_path(args: argparse.Namespace, required: bool = True) -> Path | None:
    return _inputs(args).config_path(required=required)


def _open(args: argparse.Namespace, **options: Any):
    """app.open_project (its options: target, strict, checks; the target defaults to Docker there)."""
    from orchestrator.app import open_project

    return open_project(_inputs(args), **options)


def _open_checked(args: argparse.Namespace, **options: Any):
    """app.open_checked (its options: target, strict, gpus, on_host), --offline and progress to stderr."""
    from orchestrator.app import open_checked

    return open_checked(_inputs(args), offline=getattr(args, "offline", False), say=_stderr, **options)


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2))


def _warn_problems(problems: list[Problem]) -> None:
    for problem in problems:
        print(problem.format(), file=sys.stderr)


_STDERR_LOCK = _thread.allocate_lock()


def _stderr(message: str) -> None:
    """One whole line per message: apply()'s worker threads report at once, and print() writes
    the text and its newline in two calls, which interleaved ("b: createda: created"). Control
    characters that came from the config or the engine are escaped (errors.printable), line by line."""
    text = "\n".join(printable(line) for line in message.split("\n"))
    with _STDERR_LOCK:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


# ----------------------------------------------------------------------------- commands
def cmd_validate(args: argparse.Namespace) -> int:
    try:
        # Without --offline, validate runs on the host that runs the config: its facts are errors.
        project = _open_checked(args, target=args.backend, strict=False, gpus=True, on_host=not args.offline)
        problems = project.problems
    except ConfigError as exc:  # syntax or schema: nothing further can be checked
        project, problems = None, exc.problems
    errors = [p for p in problems if p.is_error]
    if args.json:
        _print_json({
            "ok": not errors,
            "problems": [p.to_json() for p in problems],
            "instances": [i.name for i in project.resolved.instances] if project else [],
            "option_check": project.option_check if project else None,
            "gpu_check": (project.gpu_check or None) if project else None,
        })
    else:
        for problem in problems:
            print(problem.format())
        if project and not errors:
            enabled = sum(1 for i in project.resolved.instances if i.enabled)
            print(f"ok: {len(project.resolved.instances)} instance(s), {enabled} enabled")
        if project and project.gpu_check:
            print(printable(f"GPUs: {project.gpu_check}"))
        if project and project.resolved.monitoring is not None:
            from orchestrator.monitoring.checks import unchecked_line

            line = unchecked_line(project.resolved.instances)
            if line:
                print(printable(line))
        if project and project.option_check:
            print(printable(f"vLLM options: {project.option_check}"))
        elif errors:
            print(f"{len(errors)} error(s)", file=sys.stderr)
    return 2 if errors else EXIT_OK


def _plan_instances(project: Project) -> list[dict[str, Any]]:
    """Each instance as `plan --json` shows it: with its Docker rendering where containers run it."""
    if not project.runs_containers:
        return [spec.to_json() for spec in project.resolved.instances]
    from orchestrator.container import instance_json

    return [instance_json(spec, project.resolved.container_of(spec.name)) for spec in project.resolved.instances]


def cmd_plan(args: argparse.Namespace) -> int:
    project = _open_checked(args, target=args.backend)
    doc = {
        "project": project.name,
        "config_file": project.resolved.config_file,
        "layers": project.loaded.layers,
        "backend": project.backend,
        "master": project.resolved.master.to_json(),
        "instances": _plan_instances(project),
        "problems": [p.to_json() for p in project.problems],
        "option_check": project.option_check,
    }
    _warn_problems(project.problems)  # on stderr with --json too (the document has them as well)
    if project.option_check:
        _stderr(f"vLLM options: {project.option_check}")
    if args.json:
        _print_json(doc)
        return EXIT_OK
    import shlex

    for spec in project.resolved.instances:
        state = "" if spec.enabled else "  (disabled)"
        print(printable(f"{spec.name}{state}: gpus={spec.gpu.describe()} log={spec.log_file}"))
        print(printable("  " + shlex.join(spec.command)))
    return EXIT_OK


def cmd_up(args: argparse.Namespace) -> int:
    from orchestrator.app import UpRequest, raise_for_failures, up
    from orchestrator.plan import ORPHAN

    def report(result) -> None:
        if not args.json:
            _stderr(result.line())

    request = UpRequest(names=tuple(args.names), wait=args.wait, timeout=args.timeout,
                        remove_orphans=args.remove_orphans, dry_run=args.dry_run,
                        no_preflight=args.no_preflight, adopt=args.adopt, rows=args.json)
    outcome = up(_inputs(args), request, say=_stderr, report=report,
                 progress=(lambda m: None) if args.json else _stderr)
    if args.dry_run:
        if args.json:
            _print_json({"project": outcome.project, "actions": [a.to_json() for a in outcome.actions],
                         "start_order": [edge.to_json() for edge in outcome.start_order],
                         "instances": outcome.instances})
        else:
            for action in outcome.actions:
                print(printable(action.describe()))
            for edge in outcome.start_order:
                print(printable(edge.describe()))
        return EXIT_OK
    for orphan in (a for a in outcome.actions if a.kind == ORPHAN):
        _stderr(f"{orphan.instance}: orphan (no longer in the config; `up --remove-orphans` removes it)")
    if args.json:
        _print_json(outcome.to_json())
    elif not outcome.changed:
        _stderr("nothing to do: every instance is up to date")
    if outcome.wait_error:
        raise outcome.wait_error
    raise_for_failures("up", outcome.results, f"{len(outcome.failed)} instance(s) failed: "
                       + ", ".join(r.action.instance for r in outcome.failed))
    return EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    from orchestrator.app import down, raise_for_failures

    outcome = down(_inputs(args), tuple(args.names), backend=args.backend, timeout=args.timeout,
                   report=None if args.json else _stderr, say=_stderr)
    for other, names in outcome.left.items():
        _stderr(f"left {', '.join(names)}: made from {other}, not from this config "
                f"(`down` with that config, or `-p {outcome.project}` without one, removes them)")
    if args.json:
        _print_json({"project": outcome.project, outcome.json_key: [r.to_json() for r in outcome.results]})
    elif not outcome.results:
        _stderr(f"nothing to stop in project {outcome.project!r}")
    raise_for_failures("down", outcome.results, outcome.failure)
    return EXIT_OK


def cmd_ps(args: argparse.Namespace) -> int:
    from orchestrator.app import ps

    status = ps(_inputs(args), backend=args.backend)
    rows, columns = status.rows, status.columns
    if args.json:
        _print_json({"project": status.project, "instances": rows})
        return EXIT_OK
    from tabulate import tabulate

    from orchestrator.status import short_gpus

    for row in rows:  # "exited (137)": killed, as opposed to a clean stop
        if row.get("exit_code") is not None:
            row["state"] = f"{row['state']} ({row['exit_code']})"
    if any("last_request" in r for r in rows):  # on-demand instances: when each was last asked for
        import time

        from orchestrator.backends.local_process import format_uptime

        columns = (*columns, "last_request")
        now = time.time()
        for row in rows:
            when = row.get("last_request")
            row["last_request"] = (f"{format_uptime(now - when)} ago" if isinstance(when, (int, float))
                                   else "never" if row.get("on_demand_known") else "?" if "last_request" in row
                                   else "")
    table = tabulate([[short_gpus(r[c] or "") if c == "gpus" else (r[c] or "") for c in columns] for r in rows],
                     headers=[c.upper() for c in columns])
    print("\n".join(printable(line) for line in table.splitlines()))
    for row in rows:  # why a server is down, read from its log (diagnose.py), after the table
        if row.get("cause"):
            print(printable(f"{row['name']}: {row['cause']}"))
        if row.get("last_restart"):
            print(printable(f"{row['name']}: last restart by watch: {row['last_restart']} "
                            f"(`vllm-orch logs {row['name']} --restarts`)"))
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    from orchestrator.app import log_path, side_log_reader
    from orchestrator.logs import all_lines, follow, tail_lines

    if args.restarts:
        return _print_restarts(args)
    reader = side_log_reader(_inputs(args), args.name, backend=args.backend)
    if reader is not None:
        return _print_engine_log(reader, tail=args.tail, follow=args.follow)
    path = log_path(_inputs(args), args.name, backend=args.backend, follow=args.follow)
    if args.tail is not None:
        lines = tail_lines(path, args.tail)
    else:
        lines = all_lines(path) if os.path.lexists(path) else []
    for line in lines:
        print(line)
    sys.stdout.flush()
    if args.follow:
        try:
            for line in follow(path, start_at_end=True):
                print(line, flush=True)
        except KeyboardInterrupt:
            pass
    return EXIT_OK


def _print_engine_log(reader: Callable[[int | None], list[str]], *, tail: int | None, follow: bool) -> int:
    """A side container's output as the engine keeps it; --follow polls every second for lines
    past those printed (its output is a few lines an hour)."""
    import time

    shown = reader(tail)
    for line in shown:
        print(printable(line))
    sys.stdout.flush()
    printed = len(reader(None)) if follow else 0
    try:
        while follow:
            time.sleep(1.0)
            now = reader(None)
            for line in now[printed if len(now) >= printed else 0:]:  # fewer: it was made again
                print(printable(line), flush=True)
            printed = len(now)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _print_restarts(args: argparse.Namespace) -> int:
    """`logs NAME --restarts`: watch's records, oldest first, each with the log lines before it."""
    from orchestrator import restart_log
    from orchestrator.app import log_path

    path = log_path(_inputs(args), args.name, backend=args.backend, follow=True)
    records = restart_log.read(str(path))
    if args.tail is not None:
        records = records[-args.tail:] if args.tail > 0 else []
    if args.json:
        _print_json({"name": args.name, "file": restart_log.path_for(str(path)), "restarts": records})
        return EXIT_OK
    if not records:
        _stderr(f"no restarts recorded for {args.name!r} ({restart_log.path_for(str(path))})")
    for record in records:
        print(printable(f"== {record.get('time')} {record.get('action', 'restart')} {record.get('container', '')}: "
                        f"{record.get('reason')}"))
        for line in record.get("log_tail") or []:
            print(printable(f"   {line}"))
    return EXIT_OK


def cmd_top(args: argparse.Namespace) -> int:
    import time

    from orchestrator.app import top
    from orchestrator.top import table_lines

    view = top(_inputs(args), timeout=args.timeout)
    if args.once or args.json:
        rows = view.snapshot()
        if args.window:
            time.sleep(args.window)
            rows = view.snapshot()
        if args.json:
            _print_json({"project": view.project, "instances": rows})
        else:
            print("\n".join(printable(line) for line in table_lines(rows)))
            for row in rows:
                if row.get("error"):
                    print(printable(f"{row['name']}: {row['error']}"))
        return EXIT_OK
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise OrchestratorError("top's live view needs a terminal: use --once or --json in scripts")
    from orchestrator.top_screen import run

    def draw() -> list[str]:
        rows = view.snapshot()
        stamp = time.strftime("%H:%M:%S")
        lines = [f"vllm-orch top: project {view.project}  {stamp}  every {args.interval:g}s  (q quits)", ""]
        lines += table_lines(rows)
        lines += [f"{r['name']}: {r['error']}" for r in rows if r.get("error")]
        return [printable(line) for line in lines]

    run(draw, args.interval)
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    import signal

    from orchestrator.supervise import Policy
    from orchestrator.watch import watch

    if args.max_restarts < 0:
        raise OrchestratorError("--max-restarts must be 0 or more")
    received: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)  # only a flag: the round in progress finishes, then watch exits

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    policy = Policy(backoff_s=args.backoff, backoff_max_s=args.backoff_max, max_restarts=args.max_restarts,
                    healthy_reset_s=args.healthy_reset)
    watch(_inputs(args), policy=policy, interval=args.interval, say=_stderr, stopping=lambda: bool(received))
    return EXIT_OK


def cmd_compose(args: argparse.Namespace) -> int:
    from orchestrator.compose import render_compose
    from orchestrator.targets import COMPOSE

    project = _open_checked(args, target=COMPOSE)
    _warn_problems(project.problems)
    if project.option_check:
        _stderr(f"vLLM options: {project.option_check}")
    text = render_compose(project)
    if args.output:
        Path(args.output).write_text(text)
        _stderr(f"wrote {args.output} ({len(project.resolved.instances)} service(s))")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_k8s(args: argparse.Namespace) -> int:
    from orchestrator.exporters.kubernetes import render_kubernetes
    from orchestrator.targets import KUBERNETES

    project = _open_checked(args, target=KUBERNETES)
    rendering = render_kubernetes(project, namespace=args.namespace)
    _warn_problems(project.problems + rendering.warnings)
    if project.option_check:
        _stderr(f"vLLM options: {project.option_check}")
    if args.output:
        Path(args.output).write_text(rendering.text)
        _stderr(f"wrote {args.output} ({rendering.instances} Deployment(s) and Service(s))")
    else:
        sys.stdout.write(rendering.text)
    return EXIT_OK


def cmd_flags(args: argparse.Namespace) -> int:
    from orchestrator.backends.base import DOCKER, backend_for
    from orchestrator.option_cache import image_table

    master = None
    image = args.image
    if not image:
        project = _open(args, strict=False)
        master = project.resolved.master
        image = next((c.image for c in project.resolved.containers.values() if c.image), "")
        if not image:
            raise OrchestratorError("no image: pass --image or set [docker] image in the config")
    backend = backend_for(DOCKER)
    image_id = backend.image_ids([image])[image]
    answer = image_table(backend, image, image_id,
                         pixi_project_dir=master.pixi_project_dir if master else None,
                         pixi_environment=master.pixi_environment if master else "default")
    if answer.table is None:
        raise OrchestratorError(answer.note)
    options = [o.to_json() for o in answer.table.options]
    if args.json:
        _print_json({"image": image, "image_id": image_id, "vllm_version": answer.table.vllm_version, "options": options})
        return EXIT_OK
    from tabulate import tabulate

    def cell(text: str, width: int = 40) -> str:
        return text if len(text) <= width else text[: width - 3] + "..."

    rows = [[o["flag"], "yes" if o["takes_value"] else "flag", o["nargs"] or "", o["negative_flag"] or "",
             o["value_type"], cell(", ".join(map(str, o["choices"])) if o["choices"] else ""),
             cell(json.dumps(o["default"]), 30)]
            for o in options]
    print(f"{answer.note} ({len(rows)} options)")
    print(tabulate(rows, headers=["FLAG", "VALUE", "NARGS", "NEGATION", "TYPE", "CHOICES", "DEFAULT"]))
    return EXIT_OK


def cmd_gpus(args: argparse.Namespace) -> int:
    from orchestrator.gpu_check import host_gpus

    def config_image() -> str | None:
        if _config_path(args, required=False) is None:
            return None
        project = _open(args, strict=False, checks=False)
        return next((c.image for c in project.resolved.containers.values() if c.image), None)

    inventory, containers = host_gpus(args.image, config_image)
    if args.json:
        doc = inventory.to_json()
        for process in doc["processes"]:
            process["container"] = containers.get(process["container_id"] or "")
        _print_json(doc)
        return EXIT_OK
    from tabulate import tabulate

    def holders(uuid: str) -> str:
        parts = []
        for p in inventory.processes:
            if p.gpu_uuid != uuid:
                continue
            who = containers.get(p.container_id, {}).get("name") or (p.container_id[:12] if p.container_id else "") or p.project
            parts.append(f"{p.pid}" + (f" {who}" if who else "") + (f" {p.used_mib} MiB" if p.used_mib is not None else ""))
        return "; ".join(parts)

    def memory(device) -> str:
        if device.memory_total_mib is None:
            return "n/a"
        return f"{device.memory_used_mib} / {device.memory_total_mib} MiB"

    rows = []
    for gpu in inventory.gpus:
        rows.append([gpu.index, gpu.uuid, gpu.name, memory(gpu), holders(gpu.uuid)])
        for mig in (m for m in inventory.migs if m.parent_uuid == gpu.uuid):
            rows.append([f"  {gpu.index}/{mig.index}", mig.uuid, mig.name, memory(mig), holders(mig.uuid)])
    print(f"{len(inventory.gpus)} GPU(s) from {inventory.source}"
          + (f", driver {inventory.driver_version}" if inventory.driver_version else ""))
    print(tabulate(rows, headers=["INDEX", "UUID", "NAME", "MEMORY USED / TOTAL", "PROCESSES (PID CONTAINER MEMORY)"]))
    return EXIT_OK


def cmd_launch(args: argparse.Namespace) -> int:
    """The boot hook (app.launch): exit 0 when there is nothing to launch; else, with --dry-run,
    the plan; else the launcher's exit code."""
    from orchestrator.app import launch

    outcome = launch(_inputs(args), tuple(args.names), dry_run=args.dry_run, timeout=args.timeout, say=_stderr)
    if args.dry_run and outcome.project is not None:
        if args.json:
            _print_json({"project": outcome.project, "actions": [step.to_json() for step in outcome.steps]})
        else:
            for step in outcome.steps:
                print(printable(step.describe()))
    return outcome.exit_code


def cmd_schema(args: argparse.Namespace) -> int:
    from orchestrator.config.schema import SCHEMA

    _print_json(SCHEMA)
    return EXIT_OK


def cmd_dashboard(args: argparse.Namespace) -> int:
    from orchestrator.monitoring import dashboard, rules

    text = rules.text() if args.rules else dashboard.text()
    for line in _dashboard_notes(args):  # what the config's images export, where known
        _stderr(line)
    if args.output:
        Path(args.output).write_text(text)
        _stderr(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _dashboard_notes(args: argparse.Namespace) -> list[str]:
    """The dashboard is the same for every config; with one at hand, say which of its quantities
    the config's images do not export (validate's warnings) and which images are not checked."""
    from orchestrator.app import open_project
    from orchestrator.monitoring.checks import metric_problems, unchecked_line

    try:
        project = open_project(_inputs(args), target=None, strict=False, on_host=False)
    except OrchestratorError:  # no config here, or a broken one: the dashboard needs none
        return []
    enabled = [i for i in project.resolved.instances if i.enabled]
    notes = [p.format() for p in metric_problems(enabled, str(project.loaded.path))]
    line = unchecked_line(enabled)
    return notes + ([line] if line else [])


COMMANDS = {
    "validate": cmd_validate,
    "plan": cmd_plan,
    "up": cmd_up,
    "down": cmd_down,
    "ps": cmd_ps,
    "logs": cmd_logs,
    "top": cmd_top,
    "watch": cmd_watch,
    "compose": cmd_compose,
    "k8s": cmd_k8s,
    "flags": cmd_flags,
    "gpus": cmd_gpus,
    "launch": cmd_launch,
    "schema": cmd_schema,
    "dashboard": cmd_dashboard,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # A run builds many objects that live to its end (specs, YAML nodes) and frees few: with the
    # default thresholds (a collection every 700 allocations) the collector re-scanned them over
    # and over, a third of `compose` of 2,000 instances and growing faster than the fleet
    # (bench/validate_scale.py). Collections still happen, less often.
    gc.set_threshold(20_000, 20, 20)
    _STDIN_TEXT.clear()
    command = command_named(argv)
    args = build_parser(only=command, arguments=command is not None).parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        if _opt(args, "debug"):
            raise
        for problem in exc.problems:
            _stderr(problem.format())
        errors = sum(1 for p in exc.problems if p.is_error)
        _stderr(f"vllm-orch: {errors} config error(s); nothing was changed")
        return exc.exit_code
    except PreflightError as exc:
        if _opt(args, "debug"):
            raise
        if exc.details:
            _stderr(exc.details)
        for line in exc.problems:  # every problem, one line each, as `validate` lists them
            _stderr(f"vllm-orch: error: {line}")
        if len(exc.problems) > 1:
            _stderr(f"vllm-orch: {len(exc.problems)} preflight problems; nothing was changed")
        return exc.exit_code
    except OrchestratorError as exc:
        if _opt(args, "debug"):
            raise
        if exc.details:
            _stderr(exc.details)
        _stderr(f"vllm-orch: error: {printable(str(exc))}")  # one line, whatever a value in it held
        return exc.exit_code
    except KeyboardInterrupt:  # engine calls in flight were let finish: nothing is half-made
        _stderr("vllm-orch: interrupted; what was done is kept (run the command again to finish it)")
        return 130
    except BrokenPipeError:  # `vllm-orch flags | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return EXIT_OK
    except RecursionError:
        if _opt(args, "debug"):
            raise
        _stderr("vllm-orch: error: the input is nested too deeply to process; nothing was changed")
        return 2
    except OSError as exc:  # a file or socket the commands did not expect to fail
        if _opt(args, "debug"):
            raise
        where = f" {exc.filename}" if exc.filename else ""
        _stderr(printable(f"vllm-orch: error:{where}: {exc.strerror or exc}"))
        return EXIT_FAILED
    except Exception as exc:  # a bug: still one line, the traceback behind --debug
        if _opt(args, "debug"):
            raise
        _stderr(f"vllm-orch: internal error: {type(exc).__name__}: {printable(str(exc)[:300])} "
                "(rerun with --debug for the traceback, and please report it)")
        return 70


def console_main() -> None:
    """The `vllm-orch` executable: main(), then exit without the interpreter's module teardown,
    which costs 60-130 ms once docker-py (requests, urllib3) is loaded. Output is flushed first;
    worker threads have all been joined by then."""
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass
    os._exit(code)
