#!/usr/bin/python
# Copyright: vllm-orch contributors
# Apache License 2.0 (see the repository's LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: project_info
short_description: Read one host's vLLM servers (vllm-orch ps) and check its config (vllm-orch validate)
description:
  - Never changes anything. Feeds the fleet view (C(playbooks/fleet_view.yml)) and the
    fleet-wide check before a change (C(playbooks/fleet_check.yml)).
  - With I(validate), C(vllm-orch validate --json) checks the file on the host itself, where
    the paths and the engine are; port and GPU conflicts between instances, host paths and
    model directories present, every vLLM option against the vLLM inside the image.
version_added: 0.1.0
author:
  - vllm-orch maintainers
options:
  content:
    description:
      - The TOML text I(config) is about to hold; checked (and listed) as if it were there,
        without writing it. The fleet-wide check validates every host's new file this way.
      - Never shown (C(no_log)).
    type: str
  overrides:
    description:
      - Merged over the file like C(--override); passed in C(AUTO_INFER_VLLM_OVERRIDES).
      - C(no_log); of its values only the secret ones are masked in the task's output
        (see M(vllm_orch.fleet.project)).
    type: dict
  ps:
    description: List the project's instances (C(vllm-orch ps --json)).
    type: bool
    default: true
  validate:
    description: Also run C(vllm-orch validate --json).
    type: bool
    default: false
  probe:
    description:
      - Ask every served instance (configured, enabled, and in I(instances) when given) for
        C(/health) and C(/v1/models) from the host, up to I(probe_retries) tries a second apart.
        Implies I(ps).
      - The project's gateway (C([gateway]) in the TOML, row C(gateway)) is probed the same way,
        its C(/health) and its C(/v1/models) (the routed models), with I(api_key); give the
        instances the gateway's key, which the gateway passes on to them as it is.
      - An instance that does not answer 200 with a model is reported in C(probes) (C(ok=false)
        and the C(error)) and C(probes_failed); the task itself does not fail (it only reads),
        so the caller decides (the role's health check fails the host on it).
    type: bool
    default: false
  instances:
    description: With I(probe), only these instances.
    type: list
    elements: str
    default: []
  api_key:
    description: Bearer token for C(/v1/models) when the servers have an C(api_key).
    type: str
  probe_retries:
    description: Tries per instance with I(probe).
    type: int
    default: 10
extends_documentation_fragment:
  - vllm_orch.fleet.engine
attributes:
  check_mode:
    support: full
notes:
  - A config with errors does not fail this module; C(validation.ok) says so (so one report can
    cover every host). Neither does an instance that fails its probe (C(probes)). An engine that
    cannot be reached does fail it.
"""

EXAMPLES = r"""
- name: What runs here
  vllm_orch.fleet.project_info:
    config: /etc/vllm-orch/fleet.toml
  register: here

- name: Check the config before any change
  vllm_orch.fleet.project_info:
    config: /etc/vllm-orch/fleet.toml
    ps: false
    validate: true
  register: check
"""

RETURN = r"""
project:
  description: The vllm-orch project name.
  returned: when ps is true
  type: str
instances:
  description: C(vllm-orch ps --json) rows plus C(connect_url) (see M(vllm_orch.fleet.project)).
  returned: when ps is true
  type: list
  elements: dict
probes:
  description:
    - With I(probe), by instance name C(url), C(ok), C(error) (null when C(ok)) and
      C(attempts) (the tries it took, or made before giving up).
  returned: when probe is true
  type: dict
  sample: {"chat": {"url": "http://127.0.0.1:8000", "ok": false, "attempts": 10,
           "error": "<urlopen error [Errno 111] Connection refused>"}}
probes_failed:
  description: With I(probe), the names of the instances whose probe failed (empty when all answered).
  returned: when probe is true
  type: list
  elements: str
validation:
  description: C(vllm-orch validate --json) (C(ok), C(problems), C(instances), C(option_check)).
  returned: when validate is true
  type: dict
  sample: {"ok": false, "problems": [{"severity": "error", "path": "instance.a.server.model",
           "message": "/llm-models/x is not on this host: /srv/models/x does not exist"}]}
"""

import json
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url
from ansible_collections.vllm_orch.fleet.plugins.module_utils.vllm_orch_cli import (
    COMMON_OPTIONS,
    VllmOrch,
    keep_only_secrets_hidden,
    with_connect_urls,
)


def probe_once(url, api_key):
    """None when /health and /v1/models answer as a served model should, else why not."""
    try:
        health = open_url(url + "/health", timeout=5)
        if health.getcode() != 200:
            return "/health answered %d" % health.getcode()
        headers = {"Authorization": "Bearer " + api_key} if api_key else {}
        models = json.loads(open_url(url + "/v1/models", headers=headers, timeout=5).read() or b"{}")
        if not models.get("data"):
            return "/v1/models lists no model"
    except Exception as exc:  # urllib's errors, sockets, JSON: the reason is what matters
        return "%s" % exc
    return None


def probe(rows, names, api_key, retries):
    """{instance: {url, ok, error, attempts}} of every served instance (in `names` when given)."""
    served = [r for r in rows if r.get("configured") and r.get("connect_url") and r.get("state") != "disabled"
              and (not names or r["name"] in names)]
    results = {}
    for row in served:
        error, attempts = None, 0
        while attempts < max(retries, 1):
            attempts += 1
            error = probe_once(row["connect_url"], api_key)
            if error is None:
                break
            if attempts < retries:
                time.sleep(1)
        results[row["name"]] = dict(url=row["connect_url"], ok=error is None, error=error, attempts=attempts)
    return results


def main():
    argument_spec = dict(COMMON_OPTIONS)
    argument_spec.update(
        ps=dict(type="bool", default=True),
        validate=dict(type="bool", default=False),
        probe=dict(type="bool", default=False),
        instances=dict(type="list", elements="str", default=[]),
        api_key=dict(type="str", no_log=True),
        probe_retries=dict(type="int", default=10),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    keep_only_secrets_hidden(module)
    cli = VllmOrch(module)
    result = dict(changed=False)
    if module.params["validate"]:
        rc, doc, err = cli.run("validate", "--json", content=module.params["content"])
        if doc is None or rc not in (0, 2):
            cli.fail(rc, err)
        result["validation"] = doc
    if module.params["ps"] or module.params["probe"]:
        rc, doc, err = cli.run("ps", "--json")
        if rc != 0 or doc is None:
            cli.fail(rc, err, **result)
        result.update(project=doc.get("project"), instances=with_connect_urls(doc.get("instances")))
    if module.params["probe"]:
        result["probes"] = probe(result["instances"], module.params["instances"], module.params["api_key"],
                                 module.params["probe_retries"])
        result["probes_failed"] = sorted(name for name, p in result["probes"].items() if not p["ok"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
