"""The gateway: one OpenAI endpoint in front of a project's instances, routed by `model`.

vllm-orch does not proxy anything itself: it renders a router's configuration from the plan
(`haproxy.py`), writes it atomically next to the project (`files.py`) and runs the router as one
more container of the project (`service.py`). `settings.py` declares `[gateway]`, `routes.py`
decides which instance serves which model. docs/gateway.md says why HAProxy.
"""
