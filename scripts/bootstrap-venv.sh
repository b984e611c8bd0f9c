#!/usr/bin/env bash
# The project's virtual environment in .venv, with vllm-orch installed editable plus the test
# tools. Reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.vllm-orch-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[bootstrap-venv] installing vllm-orch and test tools into .venv" >&2
  .venv/bin/python -m pip install -q -e '.[test]' 2> >(grep -v '^WARNING: Location' >&2)
  echo "$want" > "$stamp"
fi
# Bytecode ahead of time: where PYTHONDONTWRITEBYTECODE is set (it is on these machines), every
# run would otherwise recompile vllm-orch's modules (+25-45 ms a command).
.venv/bin/python -m compileall -q orchestrator >/dev/null
