"""Command line: parse, call one function of the core, print. The only place that exits.

Heavy modules (docker, tabulate) are imported inside the commands that need them, so
`--help` and `validate` start in the time Python itself takes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from orchestrator import __version__
from orchestrator.errors import ConfigError, OrchestratorError, Problem

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


def _validate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("docker", "local"), default=None, help=_BACKEND_HELP)
    p.add_argument("--offline", action="store_true", help=_OFFLINE_HELP)
    p.add_argument("--json", action="store_true")


def _up_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--wait", action="store_true", help="wait until every instance answers /health")
    p.add_argument("--timeout", type=float, default=1800, help="seconds --wait waits (default 1800)")
    p.add_argument("--remove-orphans", action="store_true", help="remove instances no longer in the config")
    p.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    p.add_argument("--no-preflight", action="store_true",
                   help="start even when vLLM's option table reports problems (they become warnings)")
    p.add_argument("--json", action="store_true")


def _down_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--backend", choices=("docker", "local"), default="docker")
    p.add_argument("--timeout", type=float, default=None,
                   help="local backend: seconds between SIGTERM and SIGKILL (default 60)")
    p.add_argument("--json", action="store_true")


def _ps_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("docker", "local"), default="docker")
    p.add_argument("--json", action="store_true")


def _logs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument("--backend", choices=("docker", "local"), default=None, help=_BACKEND_HELP)
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--tail", type=int, default=None, metavar="N", help="last N lines (default all)")


def _compose_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")
    p.add_argument("--offline", action="store_true", help=_OFFLINE_HELP)


def _flags_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", help="image to ask (default: the config's first image)")
    p.add_argument("--json", action="store_true")


def _names_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME")


def _no_args(p: argparse.ArgumentParser) -> None:
    pass


# name -> (help, its own arguments); `plan` takes validate's.
SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "validate": ("check the config (and its vLLM options against the image); exit 2 on any error", _validate_args),
    "plan": ("print the resolved plan (argv, env, container specs)", _validate_args),
    "up": ("create, recreate or start instances so they match the config", _up_args),
    "down": ("stop and remove this project's containers (logs are kept)", _down_args),
    "ps": ("list this project's instances", _ps_args),
    "logs": ("show an instance's log file", _logs_args),
    "compose": ("write a docker-compose.yml that runs the same containers", _compose_args),
    "flags": ("show the options the vLLM in an image accepts", _flags_args),
    "launch": ("in-container launcher: start the instances as processes (the boot hook)", _names_args),
    "schema": ("print the JSON Schema of the config file", _no_args),
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


def _config_path(args: argparse.Namespace, required: bool = True) -> Path | None:
    from orchestrator.config.loader import CONFIG_ENV, resolve_config_path

    path = resolve_config_path(_opt(args, "config"))
    if path is None and required:
        raise ConfigError([Problem("error", "", f"no config file: pass -c FILE or set {CONFIG_ENV}", source="vllm-orch")])
    return path


def _open(args: argparse.Namespace, *, backend: str | None = "docker", strict: bool = True, checks: bool = True):
    from orchestrator.project import open_project

    return open_project(
        _config_path(args),
        overrides=_opt(args, "override", []),
        sets=_opt(args, "sets", []),
        project_name=_opt(args, "project"),
        backend=backend,
        strict=strict,
        checks=checks,
        text=_config_text(args),
    )


_STDIN_TEXT: list[str] = []  # read once: a command may open the project twice


def _config_text(args: argparse.Namespace) -> str | None:
    if not _opt(args, "stdin_config"):
        return None
    if not _STDIN_TEXT:
        _STDIN_TEXT.append(sys.stdin.read())
    return _STDIN_TEXT[0]


def _check_with_tables(project, backend, image_ids: dict[str, str], *, strict: bool = True,
                       selected: set[str] | None = None, options_block: bool = True):
    """Ask each image (cached per image id) for its vLLM option table, then check the project
    against them: the argv follows vLLM's real options and unknown options become errors."""
    from orchestrator.option_cache import image_table
    from orchestrator.project import check_project

    master = project.resolved.master
    tables, notes = {}, []
    for image, image_id in sorted(image_ids.items()):
        users = [i for i in project.resolved.instances
                 if i.container and i.container.image == image and (selected is None or i.name in selected)]
        if not users:
            continue
        pixi = [m for m in users[0].container.mounts if master.pixi_project_dir and m.target == master.pixi_project_dir.rstrip("/")]
        answer = image_table(backend, image, image_id, pixi_project_dir=master.pixi_project_dir,
                             pixi_environment=master.pixi_environment, mounts=pixi, progress=_stderr)
        if answer.table is not None:
            tables[image] = answer.table
        notes.append(answer.note)
    return check_project(project, tables=tables, table_notes=notes, strict=strict, options_block=options_block)


def _open_checked(args: argparse.Namespace, *, backend: str | None = "docker", strict: bool = True):
    """For validate/plan/compose: the project checked against its images' vLLM when Docker can
    be asked; otherwise (or with --offline) by the contract's rules, saying why."""
    from orchestrator.project import check_project

    first = _open(args, backend=backend, strict=strict, checks=False)

    def without_tables(reason: str):
        project = check_project(first, strict=strict)
        if reason:
            project.option_check = f"image check skipped ({reason}); " + project.option_check
        return project

    if first.backend != "docker":
        return without_tables("")
    if getattr(args, "offline", False):
        return without_tables("--offline")
    from orchestrator.backends.docker import DockerBackend
    from orchestrator.errors import DockerUnavailable, PreflightError

    images = {i.container.image for i in first.resolved.instances if i.container and i.container.image}
    try:
        engine = DockerBackend()
        image_ids = engine.image_ids(images)
    except (DockerUnavailable, PreflightError) as exc:
        return without_tables(str(exc))
    return _check_with_tables(first, engine, image_ids, strict=strict)


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2))


def _warn_problems(problems: list[Problem]) -> None:
    for problem in problems:
        print(problem.format(), file=sys.stderr)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- commands
def cmd_validate(args: argparse.Namespace) -> int:
    try:
        project = _open_checked(args, backend=args.backend, strict=False)
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
        })
    else:
        for problem in problems:
            print(problem.format())
        if project and not errors:
            enabled = sum(1 for i in project.resolved.instances if i.enabled)
            print(f"ok: {len(project.resolved.instances)} instance(s), {enabled} enabled")
        if project and project.option_check:
            print(f"vLLM options: {project.option_check}")
        elif errors:
            print(f"{len(errors)} error(s)", file=sys.stderr)
    return 2 if errors else EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    project = _open_checked(args, backend=args.backend)
    doc = {
        "project": project.name,
        "config_file": project.resolved.config_file,
        "layers": project.loaded.layers,
        "backend": project.backend,
        "master": project.resolved.master.to_json(),
        "instances": [i.to_json(project.backend) for i in project.resolved.instances],
        "problems": [p.to_json() for p in project.problems],
        "option_check": project.option_check,
    }
    if args.json:
        _print_json(doc)
        return EXIT_OK
    _warn_problems(project.problems)
    import shlex

    for spec in project.resolved.instances:
        state = "" if spec.enabled else "  (disabled)"
        print(f"{spec.name}{state}: gpus={spec.gpu.describe()} log={spec.log_file}")
        print("  " + shlex.join(spec.command))
    return EXIT_OK


def cmd_up(args: argparse.Namespace) -> int:
    from orchestrator.backends.docker import DockerBackend
    from orchestrator.plan import CHANGES, ORPHAN, plan_up

    project = _open(args, checks=False)  # which images? (the full checks follow, with their tables)
    selected = project.select(args.names)
    if not project.resolved.master.enable:
        _stderr("master.enable = false: nothing to start")
        return EXIT_OK
    backend = DockerBackend()
    wanted = [i for i in project.resolved.instances if i.enabled and (selected is None or i.name in selected)]
    image_ids = backend.image_ids(i.container.image for i in wanted)
    # The argv always follows the image's option table (so --no-preflight cannot change it and
    # recreate a loaded model); --no-preflight only stops option problems from blocking.
    project = _check_with_tables(project, backend, image_ids, selected=selected,
                                 options_block=not args.no_preflight)
    wanted = [i for i in project.resolved.instances if i.enabled and (selected is None or i.name in selected)]
    _warn_problems(project.problems)
    def plan() -> list:
        return plan_up(project.resolved.instances, backend.observe(project.name), image_ids=image_ids,
                       selected=selected, remove_orphans=args.remove_orphans)

    def rows() -> list[dict]:
        """`ps --json`'s rows, for provisioning tools (one list call instead of one more process)."""
        from orchestrator.status import ps_rows

        return ps_rows(backend.observe(project.name, owner=None), project.resolved.instances)

    if args.dry_run:
        actions = plan()
        if args.json:
            _print_json({"project": project.name, "actions": [a.to_json() for a in actions], "instances": rows()})
        else:
            for action in actions:
                print(action.describe())
        return EXIT_OK

    def report(result) -> None:
        if not args.json:
            if result.ok:
                _stderr(f"{result.action.instance}: {result.detail}")
            else:
                _stderr(f"{result.action.instance}: FAILED: {result.detail}")

    from orchestrator.run_lock import run_lock

    # Observe, plan and change under the lock, so a concurrent up/down plans against what this one did.
    with run_lock(project.name, backend.engine.address, waiting=_stderr):
        actions = plan()
        backend.preflight(actions)
        results = backend.apply(actions, on_done=report)
    orphans = [a for a in actions if a.kind == ORPHAN]
    for orphan in orphans:
        _stderr(f"{orphan.instance}: orphan (no longer in the config; `up --remove-orphans` removes it)")
    failed = [r for r in results if not r.ok]
    waited: dict[str, float] = {}
    wait_error = None
    if args.wait and not failed:
        from orchestrator.waiter import wait_healthy

        def observe() -> dict:
            return {o.instance: o for o in backend.observe(project.name)}

        try:
            from orchestrator.backends.engine import is_local_address

            waited = wait_healthy(wanted, observe, timeout=args.timeout,
                                  progress=(lambda m: None) if args.json else _stderr,
                                  log_tail=lambda spec: _log_tail_for(spec, backend, 20),
                                  probe_http=is_local_address(backend.engine.address))
        except OrchestratorError as exc:
            wait_error = exc
    if args.json:
        changed = {r.action.instance: r for r in results}
        doc = {
            "project": project.name,
            "actions": [changed[a.instance].to_json() if a.instance in changed else {**a.to_json(), "ok": True}
                        for a in actions],
            "healthy_after_s": waited,
            "instances": rows(),
        }
        if wait_error:
            doc["error"] = str(wait_error)
        _print_json(doc)
    elif not [r for r in results if r.action.kind in CHANGES]:
        _stderr("nothing to do: every instance is up to date")
    if wait_error:
        raise wait_error
    if failed:
        raise OrchestratorError(f"{len(failed)} instance(s) failed: " + ", ".join(r.action.instance for r in failed))
    return EXIT_OK


def _log_tail_for(spec, backend, lines: int) -> str:
    from orchestrator.logs import tail_lines

    text = "\n".join(tail_lines(spec.container.host_log_file, lines))
    engine = backend.engine_log_tail(spec.container.name, lines)
    return text + ("\n" + engine if engine.strip() else "")


def _project_name(args: argparse.Namespace) -> tuple[str, Any]:
    """Project name for ps/down: from the config when there is one, else -p alone will do."""
    path = _config_path(args, required=not _opt(args, "project"))
    if path is None:
        return _opt(args, "project"), None
    project = _open(args, strict=False, checks=False)  # names and specs only: no validation needed
    return project.name, project


def cmd_down(args: argparse.Namespace) -> int:
    from orchestrator.backends.docker import DockerBackend

    if args.backend == "local":
        return _down_local(args)
    name, project = _project_name(args)
    # Not checked against the config: `down NAME` must also reach an instance removed from it.
    selected = set(args.names) or None

    def report(result) -> None:
        if not args.json:
            code = f" (exit code {result.exit_code})" if result.exit_code is not None else ""
            _stderr(f"{result.action.instance}: {result.detail}{code}" if result.ok
                    else f"{result.action.instance}: FAILED: {result.detail}")

    from orchestrator.run_lock import run_lock

    backend = DockerBackend()
    with run_lock(name, backend.engine.address, waiting=_stderr):
        results = backend.down(name, selected, on_done=report)
    if args.json:
        _print_json({"project": name, "removed": [r.to_json() for r in results]})
    elif not results:
        _stderr(f"nothing to stop in project {name!r}")
    failed = [r for r in results if not r.ok]
    if failed:
        raise OrchestratorError(f"{len(failed)} container(s) could not be removed")
    return EXIT_OK


def _down_local(args: argparse.Namespace) -> int:
    from orchestrator.backends.local import LocalBackend

    project = _open(args, backend="local", strict=False)
    results = LocalBackend().down(project, set(args.names) or None, timeout=args.timeout or 60.0,
                                  out=(lambda m: None) if args.json else _stderr)
    if args.json:
        _print_json({"project": project.name, "stopped": results})
    failed = [r for r in results if not r.get("ok", True)]
    if failed:
        raise OrchestratorError(f"{len(failed)} instance(s) could not be stopped: "
                                + ", ".join(str(r.get("instance") or r.get("name")) for r in failed))
    return EXIT_OK


def cmd_ps(args: argparse.Namespace) -> int:
    if args.backend == "local":
        from orchestrator.backends.local import LocalBackend

        project = _open(args, backend="local", strict=False)
        name, rows = project.name, LocalBackend().ps(project)
        columns = ["name", "state", "pid", "health", "gpus", "url", "model", "uptime"]
    else:
        from orchestrator.backends.docker import DockerBackend
        from orchestrator.status import ps_rows

        name, project = _project_name(args)
        observed = DockerBackend().observe(name, owner=None)
        rows = ps_rows(observed, project.resolved.instances if project else [])
        columns = ["name", "owner", "state", "health", "gpus", "url", "model", "uptime"]
    if args.json:
        _print_json({"project": name, "instances": rows})
        return EXIT_OK
    from tabulate import tabulate

    print(tabulate([[r[c] or "" for c in columns] for r in rows], headers=[c.upper() for c in columns]))
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    from orchestrator.logs import follow, tail_lines

    project = _open(args, backend=args.backend, strict=False)
    project.select([args.name])
    spec = project.resolved.instance(args.name)
    path = Path(spec.log_file if project.backend == "local" else spec.container.host_log_file)
    if not path.exists() and not args.follow:
        if project.backend == "docker":
            from orchestrator.backends.engine import engine_address, is_local_address

            address = engine_address()
            if not is_local_address(address):
                raise OrchestratorError(
                    f"no log file {path} on this machine: the engine at {address} writes it on its own "
                    "machine (run vllm-orch there, or share log_host_dir between the two)")
        raise OrchestratorError(f"no log yet for {args.name!r} ({path}): it has not been started")
    if args.tail is not None:
        lines = tail_lines(path, args.tail)
    else:
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
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


def cmd_compose(args: argparse.Namespace) -> int:
    from orchestrator.compose import render_compose

    project = _open_checked(args)
    _warn_problems(project.problems)
    text = render_compose(project)
    if args.output:
        Path(args.output).write_text(text)
        _stderr(f"wrote {args.output} ({len(project.resolved.instances)} service(s))")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_flags(args: argparse.Namespace) -> int:
    from orchestrator.backends.docker import DockerBackend
    from orchestrator.option_cache import image_table

    master = None
    image = args.image
    if not image:
        project = _open(args, strict=False)
        master = project.resolved.master
        image = next((i.container.image for i in project.resolved.instances if i.container and i.container.image), "")
        if not image:
            raise OrchestratorError("no image: pass --image or set [docker] image in the config")
    backend = DockerBackend()
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


def cmd_launch(args: argparse.Namespace) -> int:
    """The boot hook's contract: no config -> silently nothing; a missing file -> a warning;
    both exit 0 so a container without vLLM settings still boots."""
    from orchestrator.config.loader import resolve_config_path

    path = resolve_config_path(_opt(args, "config"))
    if path is None:
        return EXIT_OK
    if not path.exists() and _opt(args, "config") is None:  # an explicit -c must exist
        _stderr(f"vllm-orch launch: warning: config {path} not found; nothing launched")
        return EXIT_OK
    project = _open(args, backend="local")
    _warn_problems(project.problems)
    if not project.resolved.master.enable:
        _stderr("vllm-orch launch: master.enable = false; nothing launched")
        return EXIT_OK
    from orchestrator.backends.local import LocalBackend

    return LocalBackend().launch(project, project.select(args.names), out=_stderr)


def cmd_schema(args: argparse.Namespace) -> int:
    from orchestrator.config.schema import SCHEMA

    _print_json(SCHEMA)
    return EXIT_OK


COMMANDS = {
    "validate": cmd_validate,
    "plan": cmd_plan,
    "up": cmd_up,
    "down": cmd_down,
    "ps": cmd_ps,
    "logs": cmd_logs,
    "compose": cmd_compose,
    "flags": cmd_flags,
    "launch": cmd_launch,
    "schema": cmd_schema,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
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
    except OrchestratorError as exc:
        if _opt(args, "debug"):
            raise
        if exc.details:
            _stderr(exc.details)
        _stderr(f"vllm-orch: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `vllm-orch flags | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return EXIT_OK


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
