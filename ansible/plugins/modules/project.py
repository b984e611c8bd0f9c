#!/usr/bin/python
# Copyright: vllm-orch contributors
# Apache License 2.0 (see the repository's LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: project
short_description: Bring one host's vLLM servers to the state its vllm-orch TOML describes
description:
  - Runs C(vllm-orch up) (or C(down)) on the managed host through its JSON interface, so a
    second run with nothing changed reports C(changed=false).
  - "Check mode runs C(vllm-orch up --dry-run) and touches nothing; diff mode shows which
    instance changes and why (for example C(recreate chat: command: --max-model-len 4096 -> 8192))."
  - vllm-orch must be installed on the host (the M(vllm_orch.fleet.vllm_orch) role installs it).
version_added: 0.1.0
author:
  - vllm-orch maintainers
options:
  content:
    description:
      - The TOML text I(config) should hold (for example a C(template) lookup of the host's file).
      - Check mode plans with it without writing it. Otherwise it is written (atomically) only
        after C(up) accepted it, so a config error leaves the old file and every container as they were.
      - Never shown (C(no_log)); diff mode shows its changes with every secret value masked
        (C(api_key), C(hf_token), the C(env) values of C(secret_env) names).
    type: str
  overrides:
    description:
      - Merged over the file like C(--override) (tables merge recursively, other values replace).
      - Passed in C(AUTO_INFER_VLLM_OVERRIDES), never on the command line.
      - C(no_log); of its values only the secret ones (as for I(content)) are masked in the task's
        output, so a changed option still shows in C(actions) and the diff.
    type: dict
  state:
    description: C(present) runs C(up); C(absent) runs C(down) (containers removed, logs kept).
    type: str
    choices: [present, absent]
    default: present
  instances:
    description: Only these instances (default all). Orphans are only handled when this is empty.
    type: list
    elements: str
    default: []
  remove_orphans:
    description: Remove this project's containers whose instance is no longer in the config.
    type: bool
    default: false
  wait:
    description: Wait until every selected instance answers C(/health).
    type: bool
    default: false
  wait_timeout:
    description: Seconds I(wait) waits before the task fails.
    type: int
    default: 1800
extends_documentation_fragment:
  - vllm_orch.fleet.engine
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
notes:
  - Failures return vllm-orch's one-line error and what its exit code means in C(msg). A failed
    run reports C(changed=true) only when something changed before the failure (an action
    got part-way, or some instances were done); then the file is written too.
"""

EXAMPLES = r"""
- name: Serve what /etc/vllm-orch/fleet.toml describes, and wait until it answers
  vllm_orch.fleet.project:
    config: /etc/vllm-orch/fleet.toml
    wait: true

- name: One instance with a changed option
  vllm_orch.fleet.project:
    config: /etc/vllm-orch/fleet.toml
    instances: [chat]
    overrides:
      instance:
        chat:
          server:
            max_model_len: 8192

- name: Stop everything the file describes
  vllm_orch.fleet.project:
    config: /etc/vllm-orch/fleet.toml
    state: absent
"""

RETURN = r"""
project:
  description: The vllm-orch project name.
  returned: success
  type: str
  sample: fleet
actions:
  description:
    - What was done (or, in check mode, would be done) per instance.
    - C(action) is one of C(create), C(recreate), C(start), C(noop), C(remove), C(orphan), and
      for the project's gateway (instance C(gateway)) also C(reload) (new routes or settings, taken
      in place, so no server and not the gateway container restarts; a change, so C(changed)).
    - Outside check mode each carries C(ok) and C(changed) (whether the engine holds something
      else than before it, also when it failed part-way) and C(detail).
  returned: always
  type: list
  elements: dict
  sample: [{"action": "recreate", "instance": "chat", "reasons": ["command: --max-model-len 4096 -> 8192"]}]
instances:
  description:
    - The C(vllm-orch ps --json) rows after the run (name, container, owner, state, health,
      gpus, url, model, uptime, status, configured), plus C(connect_url), where a client on
      the host reaches the instance.
  returned: state=present
  type: list
  elements: dict
healthy_after_s:
  description: Seconds each instance took to answer C(/health) (with I(wait)).
  returned: state=present and not check mode
  type: dict
config_changed:
  description: Whether I(content) was written to I(config) (in check mode, whether it would be).
  returned: state=present
  type: bool
rc:
  description: vllm-orch's exit code.
  returned: always
  type: int
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vllm_orch.fleet.plugins.module_utils.vllm_orch_cli import (
    COMMON_OPTIONS,
    VllmOrch,
    keep_only_secrets_hidden,
    with_connect_urls,
)
from ansible_collections.vllm_orch.fleet.plugins.module_utils.vllm_orch_secrets import config_diff

CHANGES = ("create", "recreate", "start", "remove", "reload")  # reload: the gateway took new routes in place


def did_change(action):
    """Whether an action changed the host: vllm-orch says so per action after a run (`changed`,
    true also for a failure that got part-way); a planned one (check mode) would if it is a change."""
    if "changed" in action:
        return bool(action["changed"])
    return action["action"] in CHANGES and action.get("ok", True)


def describe(actions):
    text = ""
    for action in actions:
        if did_change(action):
            reasons = "; ".join(action.get("reasons") or [])
            failed = "" if action.get("ok", True) else " (failed part-way: %s)" % action.get("detail", "")
            text += "%s %s%s%s\n" % (action["action"], action["instance"], ": " + reasons if reasons else "", failed)
    return text


def file_diff(path, old, new, secrets):
    """The config's change as a unified diff with secrets masked (a `prepared` diff: Ansible
    would blank out a before/after text equal to the no_log `content`)."""
    text = config_diff(path, old, new, secrets)
    if text is None:
        text = ("%s: changed (not shown: a secret in it could not be masked with certainty, or this "
                "host's Python has no TOML parser)\n" % path)
    return dict(prepared=text)


def read_file(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (IOError, OSError, UnicodeDecodeError):
        return None


def missing_directories(path):
    """The directories above `path` that do not exist, deepest first."""
    missing = []
    directory = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    return missing


def remove_empty(directories):
    for directory in directories:
        try:
            os.rmdir(directory)
        except OSError:  # vllm-orch left something in it: keep it and those above
            return


def write_file(module, path, content):
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    handle, temp = tempfile.mkstemp(dir=directory, prefix=".vllm-orch-")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(content)
    os.chmod(temp, 0o644)
    module.atomic_move(temp, path)


def present(module, cli, old, secrets):
    params = module.params
    content = params["content"]
    file_changes = content is not None and old != content
    args = ["up"] + list(params["instances"])
    if params["remove_orphans"]:
        args.append("--remove-orphans")
    if module.check_mode:
        args.append("--dry-run")
    elif params["wait"]:
        args += ["--wait", "--timeout", str(params["wait_timeout"])]
    # With content: planned (and applied) from the new text, so the file on disk stays the old
    # one until vllm-orch has accepted the new one.
    made = missing_directories(params["config"]) if file_changes and not module.check_mode else []
    if made:
        os.makedirs(made[0], 0o755)  # relative paths (logs) start there
    rc, doc, err = cli.run(*(args + ["--json"]), content=content if file_changes else None)
    doc = doc or {}
    actions = doc.get("actions") or []
    containers_changed = any(did_change(a) for a in actions)
    if module.check_mode:
        config_changed = file_changes and rc == 0
        changed = rc == 0 and (file_changes or containers_changed)
    else:
        # The file follows the containers: written when `up` succeeded (exit 0, or 5: made but
        # not healthy in time) or changed some of them before failing; exits 2-4 and a failure
        # that changed nothing keep the old file with the old containers.
        config_changed = file_changes and (rc in (0, 5) or containers_changed)
        if config_changed:
            write_file(module, params["config"], content)
        else:
            remove_empty(made)  # nothing changed: not even the directories made for the file
        changed = config_changed or containers_changed
    result = dict(changed=changed, rc=rc, project=doc.get("project"), actions=actions,
                  instances=with_connect_urls(doc.get("instances")), config_changed=config_changed)
    if not module.check_mode:
        result["healthy_after_s"] = doc.get("healthy_after_s") or {}
    if module._diff and changed:
        diffs = []
        if config_changed:
            diffs.append(file_diff(params["config"], old, content, secrets))
        if describe(actions):
            diffs.append(dict(prepared=describe(actions)))
        result["diff"] = diffs
    if rc != 0:
        cli.fail(rc, err, **result)
    module.exit_json(**result)


def absent(module, cli):
    names = list(module.params["instances"])
    if module.check_mode:
        rc, doc, err = cli.run("ps", "--json", content=module.params["content"])
        rows = (doc or {}).get("instances") or []
        actions = [dict(action="remove", instance=r["name"], reasons=["state=absent"]) for r in rows
                   if r.get("owner") == "vllm-orch" and (not names or r["name"] in names)]
    else:
        rc, doc, err = cli.run("down", *(names + ["--json"]), content=module.params["content"])
        actions = (doc or {}).get("removed") or []
    changed = any(did_change(a) for a in actions) and (rc == 0 or not module.check_mode)
    result = dict(changed=changed, rc=rc, project=(doc or {}).get("project"), actions=actions)
    if module._diff and changed:
        result["diff"] = dict(prepared=describe(actions))
    if rc != 0:
        cli.fail(rc, err, **result)
    module.exit_json(**result)


def main():
    argument_spec = dict(COMMON_OPTIONS)
    argument_spec.update(
        state=dict(type="str", default="present", choices=["present", "absent"]),
        instances=dict(type="list", elements="str", default=[]),
        remove_orphans=dict(type="bool", default=False),
        wait=dict(type="bool", default=False),
        wait_timeout=dict(type="int", default=1800),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    # The file on the host is read first: its secrets (an old api_key) are masked in the diff too.
    old = read_file(module.params["config"]) if module.params["content"] is not None else None
    secrets = keep_only_secrets_hidden(module, old)
    cli = VllmOrch(module)
    if module.params["state"] == "absent":
        absent(module, cli)
    else:
        present(module, cli, old, secrets)


if __name__ == "__main__":
    main()
