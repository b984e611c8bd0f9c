"""Exporters: the resolved plan rendered for a target other than a Docker engine (Kubernetes).

`comment_text` is shared with the Compose exporter (`orchestrator/compose.py`): both write the
config path, model and secret names into YAML comments. So is `safe_loader`: both read their text
back before writing it."""

from typing import Any


def safe_loader() -> Any:
    """PyYAML's safe loader on libyaml (C) where PyYAML has it, else the pure-Python one: the same
    documents, and reading an export back cost ~10 ms per instance in Python (compose and k8s
    of 2,000 instances: tens of seconds; bench/validate_scale.py). Only the loader: the text
    written stays the pure-Python dumper's, which the export-stability tests compare."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def comment_text(text: str) -> str:
    """Text for a YAML comment: every character that is not printable (line and paragraph
    separators, \\r, NEL, controls) escaped, so the comment ends where we end it."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def object_metadata(name: str, namespace: str | None, labels: dict[str, str],
                    annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A Kubernetes object's `metadata`, keys in the order every release wrote them."""
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = annotations
    return meta
