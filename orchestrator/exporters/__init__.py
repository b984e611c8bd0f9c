"""Exporters: the resolved plan rendered for a target other than a Docker engine (Kubernetes)."""
