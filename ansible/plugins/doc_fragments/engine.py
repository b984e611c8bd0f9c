# Copyright: vllm-orch contributors
# Apache License 2.0 (see the repository's LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """The options every module of the collection takes to find the config, vllm-orch and the
    engine on the host (module_utils/vllm_orch_cli.py COMMON_OPTIONS), documented once."""

    DOCUMENTATION = r"""
options:
  config:
    description: Path of the TOML file on the managed host.
    type: path
    required: true
  docker_host:
    description: Engine address (C(DOCKER_HOST)) on the host; default the host's own engine.
    type: str
  executable:
    description: The vllm-orch executable on the host (a name on C(PATH) or a path).
    type: str
    default: vllm-orch
"""
