"""The activator: the slow path that starts on-demand instances (`[docker] on_demand`).

HAProxy (the gateway) stays the hot path. A model whose instances are all stopped or asleep has
no usable server there, so HAProxy sends its requests to the activator, its `backup` server. The
activator starts (or wakes) one instance, holds the requests until it answers `/health`, then
forwards them to it; HAProxy's own checks pick the instance up a second later and the activator
is out of the path again. It also stops (or puts to sleep) instances idle past
`idle_stop_after`, and makes room on shared GPUs before a start (budget.py).

No router starts servers (llama-swap is a router of its own; Knative's activator is the model):
this package is that small part of vllm-orch. Modules: state (the file `up` writes), budget
(who must leave), core (the decisions, with the Docker and HTTP calls behind `Control`),
control (those calls), server (HTTP + HAProxy's agent checks), service (its container), workflow
(the hooks app.py calls).
"""
