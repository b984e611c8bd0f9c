"""Exporters: the resolved plan rendered for a target other than a Docker engine (Kubernetes).

`comment_text` is shared with the Compose exporter (`orchestrator/compose.py`): both write the
config path, model and secret names into YAML comments."""


def comment_text(text: str) -> str:
    """Text for a YAML comment: every character that is not printable (line and paragraph
    separators, \\r, NEL, controls) escaped, so the comment ends where we end it."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
