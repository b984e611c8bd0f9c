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
    type: str
  overrides:
    description:
      - Merged over the file like C(--override) (tables merge recursively, other values replace).
      - Passed in C(AUTO_INFER_VLLM_OVERRIDES), never on the command line.
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
  - Failures return vllm-orch's one-line error and what its exit code means in C(msg).
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
    - C(action) is one of C(create), C(recreate), C(start), C(noop), C(remove), C(orphan).
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
  description: Whether I(content) differed from the file (and, outside check mode, was written).
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
    with_connect_urls,
)

CHANGES = ("create", "recreate", "start", "remove", "reload")  # reload: the gateway took new routes in place


def describe(actions):
    text = ""
    for action in actions:
        if action["action"] in CHANGES:
            reasons = "; ".join(action.get("reasons") or [])
            text += "%s %s%s\n" % (action["action"], action["instance"], ": " + reasons if reasons else "")
    return text


def read_file(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (IOError, OSError, UnicodeDecodeError):
        return None


def write_file(module, path, content):
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    handle, temp = tempfile.mkstemp(dir=directory, prefix=".vllm-orch-")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(content)
    os.chmod(temp, 0o644)
    module.atomic_move(temp, path)


def present(module, cli):
    params = module.params
    content = params["content"]
    old = read_file(params["config"]) if content is not None else None
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
    if file_changes and not module.check_mode and not os.path.isdir(os.path.dirname(params["config"])):
        os.makedirs(os.path.dirname(params["config"]), 0o755)  # relative paths (logs) start there
    rc, doc, err = cli.run(*(args + ["--json"]), content=content if file_changes else None)
    doc = doc or {}
    actions = doc.get("actions") or []
    changed = file_changes or any(a["action"] in CHANGES for a in actions)
    result = dict(changed=changed, rc=rc, project=doc.get("project"), actions=actions,
                  instances=with_connect_urls(doc.get("instances")), config_changed=file_changes)
    if not module.check_mode:
        result["healthy_after_s"] = doc.get("healthy_after_s") or {}
        # Exit 2-4 mean nothing was changed: keep the old file with the old containers.
        if file_changes and rc in (0, 1, 5):
            write_file(module, params["config"], content)
    if module._diff and changed:
        diffs = []
        if file_changes:
            diffs.append(dict(before_header=params["config"], after_header=params["config"],
                              before=old or "", after=content))
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
    result = dict(changed=bool(actions), rc=rc, project=(doc or {}).get("project"), actions=actions)
    if module._diff and actions:
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
    cli = VllmOrch(module)
    if module.params["state"] == "absent":
        absent(module, cli)
    else:
        present(module, cli)


if __name__ == "__main__":
    main()
