"""Send one completion and one chat request to every running instance in `vllm-orch ps --json`
(read from stdin), and through the gateway (its row lists the models it routes) to each model,
and print the answers. Used by scripts/demo.sh; exits 1 if any request fails."""

from __future__ import annotations

import json
import sys
import urllib.request


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def main() -> int:
    rows = json.load(sys.stdin)["instances"]
    # The gateway serves several models at one URL: one (name, url, model) per model.
    targets = [(row["name"], row["url"], model) for row in rows if row["state"] == "running" and row["url"]
               for model in (row["model"] or "").split(",") if model]
    failed = 0
    for name, url, model in targets:
        base = url.replace("0.0.0.0", "127.0.0.1")
        try:
            done = post(f"{base}/v1/completions", {"model": model, "prompt": "Hello, my name is", "max_tokens": 12})
            chat = post(f"{base}/v1/chat/completions", {"model": model, "max_tokens": 12,
                                                        "messages": [{"role": "user", "content": "Say hi"}]})
        except OSError as exc:
            print(f"{name}: request to {base} failed: {exc}")
            failed += 1
            continue
        print(f"{name} ({model} at {base}):")
        print(f"  completion: {done['choices'][0]['text']!r}")
        print(f"  chat:       {chat['choices'][0]['message']['content']!r}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
