# Copyright: vllm-orch contributors
# Apache License 2.0 (see the repository's LICENSE)
"""Runs the vllm-orch CLI on the managed host through its machine interface (``--json`` and
exit codes), never by reading its human output. Shared by the ``project`` and ``project_info``
modules."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.vllm_orch.fleet.plugins.module_utils.vllm_orch_secrets import (
    parse_toml,
    secret_env_names,
    secret_values,
)

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
    # Both can carry secrets (api_key, hf_token, secret_env values): never shown.
    content=dict(type="str", default=None, no_log=True),
    overrides=dict(type="dict", default=None, no_log=True),
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


def keep_only_secrets_hidden(module, *texts):
    """Narrow what Ansible masks for the no_log `overrides` to its secret values.

    For a no_log dict Ansible masks each of its values wherever it appears in the result: an
    override `max_model_len: 2048` would turn every "2048" of the task's output into "********"
    (the reason `--max-model-len 1024 -> 2048` included), and `gpu_ids: "0"` every "0". The
    secret values of `content`, `overrides` and `texts` (the file already on the host) stay
    masked, and so do the whole `content` and every other no_log option. When `content` cannot
    be read as TOML here, nothing is narrowed. Returns the secret values (for the diff)."""
    params = module.params
    content_doc = parse_toml(params.get("content"))
    if params.get("content") is not None and content_doc is None:
        return set()
    docs = [content_doc, params.get("overrides")] + [parse_toml(text) for text in texts]
    names = secret_env_names(*docs)
    secrets = set()
    for doc in docs:
        secrets |= secret_values(doc, names)
    kept = set(secrets)
    for name, spec in module.argument_spec.items():
        if spec.get("no_log") and name != "overrides":
            kept |= set(_leaves(params.get(name)))
    module.no_log_values.difference_update(set(_leaves(params.get("overrides"))) - kept)
    module.no_log_values.update(secrets)
    return secrets


def _leaves(value):
    """The strings Ansible masks for a no_log value: every string and number in it."""
    if isinstance(value, dict):
        for item in value.values():
            for leaf in _leaves(item):
                yield leaf
    elif isinstance(value, (list, tuple)):
        for item in value:
            for leaf in _leaves(item):
                yield leaf
    elif isinstance(value, bool) or value is None:
        return
    elif "%s" % (value,):
        yield "%s" % (value,)


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
