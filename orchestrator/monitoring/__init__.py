"""`[monitoring]`: Prometheus over the project's servers, run by `up` as one more owned container,
with the rules, the Grafana dashboard and the Kubernetes operator's objects (docs/architecture.md)."""
