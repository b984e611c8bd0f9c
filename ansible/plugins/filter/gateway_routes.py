# Copyright: vllm-orch contributors
# Apache License 2.0 (see the repository's LICENSE)
"""The fleet gateway's routes: every host's served instances, from each host's registered
`vllm_orch.fleet.project_info` result, at an address another host can reach."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: gateway_routes
short_description: The routes of a gateway over a whole fleet, from every host's instances
version_added: 0.3.0
author: vllm-orch maintainers
description:
  - "Returns C(routes), a list of C({model, url}) for C([gateway] routes), sorted, one per
    configured and enabled instance of every host that answered (its health does not matter:
    the gateway health-checks each route, so a server that is down gets no traffic until it
    answers again, without a new run)."
  - A URL published on every interface (C(0.0.0.0), C([::])) gets the host's C(ansible_host).
    An instance published on a loopback address cannot be reached from another host; it is
    left out and named in C(skipped), as is a host whose result failed or is missing (it was
    unreachable), so its models drop out of the gateway until it answers a run again.
  - The gateway host's own C(gateway) row (a per-host gateway) is never a route.
options:
  _input:
    description: Host names whose instances the gateway serves.
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
routes: "{{ groups['vllm_hosts'] | vllm_orch.fleet.gateway_routes(hostvars) }}"
"""

RETURN = r"""
_value:
  description:
    - C(routes) (list of C({model, url})) and C(skipped) (list of one-line reasons).
  type: dict
  sample: {"routes": [{"model": "chat", "url": "http://10.0.0.11:8000"}],
           "skipped": ["gpu-c: unreachable (no result)"]}
"""

WILDCARDS = ("0.0.0.0", "[::]", "::")
LOOPBACK_PREFIXES = ("127.", "localhost", "[::1]", "::1")
GATEWAY_ROW = "gateway"  # vllm-orch's name for a project's gateway in `ps`


def _host_of(url):
    """`http://HOST:PORT` -> HOST (brackets kept for IPv6)."""
    rest = url.split("://", 1)[-1]
    return rest.rsplit(":", 1)[0] if ":" in rest else rest


def gateway_routes(hosts, hostvars, result="vllm_orch_ps"):
    routes, skipped, seen = [], [], set()
    for host in hosts:
        host_vars = hostvars.get(host) or {}
        registered = host_vars.get(result) or {}
        if registered.get("failed") or registered.get("unreachable") or "instances" not in registered:
            skipped.append("%s: unreachable (%s)" % (host, registered.get("msg") or "no result"))
            continue
        address = host_vars.get("ansible_host") or host
        for row in registered["instances"]:
            url = (row.get("url") or "").rstrip("/")
            model = row.get("model") or ""
            if (row.get("name") == GATEWAY_ROW or not row.get("configured") or row.get("state") == "disabled"
                    or not url or not model):
                continue
            host_part = _host_of(url)
            if host_part in WILDCARDS:
                url = url.replace("//%s:" % host_part, "//%s:" % address, 1)
            elif host_part.startswith(LOOPBACK_PREFIXES):
                skipped.append("%s/%s: published on %s, which other hosts cannot reach (publish it on "
                               "0.0.0.0 or the host's address)" % (host, row.get("name"), host_part))
                continue
            if (model, url) not in seen:
                seen.add((model, url))
                routes.append(dict(model=model, url=url))
    return dict(routes=sorted(routes, key=lambda r: (r["model"], r["url"])), skipped=skipped)


class FilterModule(object):
    def filters(self):
        return {"gateway_routes": gateway_routes}
