#!/usr/bin/env bash
# The main job on the bundled example, from a fresh machine: install and start the Docker engine,
# build the real vLLM CPU image and the tiny model (cached after the first run), bring up the two
# instances of configs/demo.toml, show `vllm-orch ps`, one real completion from each (and through
# the gateway, for each model, when the config has a [gateway]), then `top --once` and where
# Prometheus (the config's [monitoring]) lists them.
# The servers keep running; stop them with:  .venv/bin/vllm-orch -c configs/demo.toml down
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-host.sh
scripts/bootstrap-venv.sh
scripts/build-images.sh vllm-cpu model gateway monitoring
orch=(.venv/bin/vllm-orch -c configs/demo.toml)
"${orch[@]}" up --wait --timeout 900
"${orch[@]}" ps
"${orch[@]}" ps --json | .venv/bin/python scripts/ask_each.py
# What each server is doing now, from its /metrics (`top` without --once is the live view).
"${orch[@]}" top --once
# Prometheus' own page of its targets (the demo's servers, up or down): 2.42's classic UI.
"${orch[@]}" ps --json | .venv/bin/python -c '
import json, sys
rows = [r for r in json.load(sys.stdin)["instances"] if r["name"] == "monitoring"]
if rows:
    print("Prometheus scrapes them:", rows[0]["url"] + "/classic/targets", "(a Grafana dashboard: vllm-orch dashboard -o FILE)")'
echo "stop them with: .venv/bin/vllm-orch -c configs/demo.toml down"
