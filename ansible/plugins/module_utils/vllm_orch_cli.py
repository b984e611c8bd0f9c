# Copyright: vllm-orch contributors
# Apache License 2.0 (see the repository's LICENSE)
"""Runs the vllm-orch CLI on the managed host through its machine interface (``--json`` and
exit codes), never by reading its human output. Shared by the ``project`` and ``project_info``
modules."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

# vllm-orch's exit codes (README "Exit codes"), as the one line a failed task shows.
EXIT_MEANINGS = {
    1: "an action failed",
    2: "config error; nothing was changed",
    3: "Docker engine not reachable",
    4: "preflight failed; nothing was changed",
    5: "an instance did not become healthy in time",
}

COMMON_OPTIONS = dict(
    config=dict(type="path", required=True),
    content=dict(type="str", default=None),
    overrides=dict(type="dict", default=None),
    docker_host=dict(type="str", default=None),
    executable=dict(type="str", default="vllm-orch"),
)

WILDCARDS = ("0.0.0.0", "[::]")


class VllmOrch:
    """One host's vllm-orch: `run(args)` -> (exit code, parsed JSON or None, stderr)."""

    def __init__(self, module):
        self.module = module
        params = module.params
        executable = params["executable"]
        path = executable if "/" in executable else module.get_bin_path(executable)
        if not path:
            module.fail_json(msg="%s not found on the host: install vllm-orch there (the "
                                 "vllm_orch.fleet.vllm_orch role does) or set executable" % executable)
        self.base = [path, "-c", params["config"]]
        self.env = {}
        if params.get("docker_host"):
            self.env["DOCKER_HOST"] = params["docker_host"]
        if params.get("overrides"):
            # The environment layer, not --override: a secret in the overrides stays off argv.
            self.env["AUTO_INFER_VLLM_OVERRIDES"] = json.dumps(params["overrides"])

    def run(self, *args, **kwargs):
        """`content=TEXT`: the config as it will be, read from stdin (`--stdin-config`)."""
        content = kwargs.get("content")
        argv = self.base + (["--stdin-config"] if content is not None else []) + list(args)
        rc, out, err = self.module.run_command(argv, environ_update=self.env, data=content,
                                               binary_data=True)
        try:
            doc = json.loads(out) if out.strip() else None
        except ValueError:
            doc = None
        return rc, doc, err

    def fail(self, exit_code, stderr, **extra):
        """Fail the task with vllm-orch's own one-line error and what its exit code means."""
        extra.update(rc=exit_code, stderr=stderr)
        self.module.fail_json(msg=error_message(exit_code, stderr), **extra)


def error_message(rc, stderr):
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    line = next((l for l in reversed(lines) if l.startswith("vllm-orch: error: ")), None)
    if line is None:  # config errors: each problem on its own line, then a summary line
        line = next((l for l in lines if ": error: " in l), None)
    if line is None:
        line = lines[-1] if lines else "vllm-orch failed without a message"
    meaning = EXIT_MEANINGS.get(rc, "unexpected exit")
    return "%s (exit %d: %s)" % (line, rc, meaning)


def with_connect_urls(rows):
    """ps rows plus `connect_url`: where a client on the host itself reaches each instance
    (a server published on every interface answers on loopback)."""
    out = []
    for row in rows or []:
        row = dict(row)
        url = row.get("url") or ""
        for wildcard in WILDCARDS:
            url = url.replace("//%s:" % wildcard, "//127.0.0.1:")
        row["connect_url"] = url
        out.append(row)
    return out
