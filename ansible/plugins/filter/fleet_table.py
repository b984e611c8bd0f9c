# Copyright: vllm-orch contributors
# Apache License 2.0 (see the repository's LICENSE)
"""The fleet view's table: every instance on every host, from each host's registered
`vllm_orch.fleet.project_info` result."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: fleet_table
short_description: One text table of every vLLM instance on every host
version_added: 0.1.0
author: vllm-orch maintainers
description:
  - Columns HOST, INSTANCE, STATE, HEALTH, GPUS, URL, MODEL; a host whose result failed gets
    one row with its error. A URL published on every interface shows the host's address.
options:
  _input:
    description: Host names, in the order to show.
    type: list
    elements: str
    required: true
  hostvars:
    description: C(hostvars), holding each host's registered result.
    type: raw
    required: true
  result:
    description: Name of the registered variable.
    type: str
    default: vllm_orch_ps
"""

EXAMPLES = r"""
table: "{{ ansible_play_hosts_all | vllm_orch.fleet.fleet_table(hostvars) }}"
"""

RETURN = r"""
_value:
  description: The table, one line per instance, with a header line.
  type: str
"""

COLUMNS = ("HOST", "INSTANCE", "STATE", "HEALTH", "GPUS", "URL", "MODEL")
WILDCARDS = ("0.0.0.0", "[::]")


def _rows_of(host, host_vars, result):
    registered = host_vars.get(result) or {}
    if registered.get("failed") or "instances" not in registered:
        return [(host, "-", "unreachable", "", "", "", registered.get("msg", "no result"))]
    address = host_vars.get("ansible_host") or host
    rows = []
    for row in registered["instances"]:
        url = row.get("url") or ""
        for wildcard in WILDCARDS:
            url = url.replace("//%s:" % wildcard, "//%s:" % address)
        rows.append((host, row.get("name", ""), row.get("state", ""), row.get("health", ""),
                     row.get("gpus", ""), url, row.get("model", "")))
    return rows


def fleet_table(hosts, hostvars, result="vllm_orch_ps"):
    rows = [COLUMNS]
    for host in hosts:
        rows.extend(_rows_of(host, hostvars[host], result))
    widths = [max(len(str(r[i] or "")) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(str(c or "").ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


class FilterModule:
    def filters(self):
        return {"fleet_table": fleet_table}
