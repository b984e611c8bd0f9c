"""The labels by which vllm-orch knows its containers (and the config they came from).

Every release reads and writes these names; renaming one would orphan every running fleet.
"""

LABEL_PREFIX = "io.vllm-orch"
LABEL_OWNER = f"{LABEL_PREFIX}.owner"
LABEL_PROJECT = f"{LABEL_PREFIX}.project"
LABEL_INSTANCE = f"{LABEL_PREFIX}.instance"
LABEL_HASH = f"{LABEL_PREFIX}.config-hash"
LABEL_SPEC = f"{LABEL_PREFIX}.spec"
LABEL_CONFIG = f"{LABEL_PREFIX}.config-file"
LABEL_GPUS = f"{LABEL_PREFIX}.gpus"
LABEL_URL = f"{LABEL_PREFIX}.url"
LABEL_MODEL = f"{LABEL_PREFIX}.model"
LABEL_LOG = f"{LABEL_PREFIX}.log-file"
# Where `up` keeps a container's secret files on this host (set at create, outside the record, so
# `plan --json` and the hash do not depend on the machine or user that renders them).
LABEL_SECRETS = f"{LABEL_PREFIX}.secrets-dir"
LABEL_ROLE = f"{LABEL_PREFIX}.role"  # set on side services (the gateway); instances have none
OWNER_UP = "vllm-orch"
