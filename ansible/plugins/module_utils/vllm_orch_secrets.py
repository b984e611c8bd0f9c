# Copyright: vllm-orch contributors
# Apache License 2.0 (see the repository's LICENSE)
"""Which values of a vllm-orch config are secrets, and a diff of two config texts without them.

A secret is what vllm-orch itself keeps off argv and out of its output (README "Security"): the
value of an ``api_key`` or ``hf_token`` key (in any table, so a server table, its defaults or a
side service's table), and the ``env`` value of every name listed in a ``secret_env``. The name
lists are gathered from every document of a run (the old file, the new one, the overrides)
because ``[docker]`` and ``[instance.NAME.docker]`` merge: a name listed in one names a secret in
the other. Pure Python (no Ansible import), so it is tested on its own."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import difflib
import json

MASK = "********"
MASK_NEW = "******** (new value)"  # a secret the old text did not hold: the diff says it changed
SECRET_KEYS = ("api_key", "hf_token")

try:  # Python 3.11+; older hosts may have the backport
    import tomllib as _toml
except ImportError:  # pragma: no cover - depends on the host's Python
    try:
        import tomli as _toml
    except ImportError:
        _toml = None


def parse_toml(text):
    """The document, or None when it does not parse (or no TOML parser is on this Python)."""
    if _toml is None or text is None:
        return None
    try:
        return _toml.loads(text)
    except Exception:  # a config error is vllm-orch's to report; here it only means "no document"
        return None


def secret_env_names(*docs):
    """Every name listed in a ``secret_env`` anywhere in these documents."""
    names = set()
    for doc in docs:
        for key, value, _ in _walk(doc):
            if key == "secret_env" and isinstance(value, list):
                names.update(str(name) for name in value)
    return names


def secret_values(doc, env_names):
    """The secret values of one document (a parsed config or an overrides dict), as strings."""
    found = set()
    for key, value, parent in _walk(doc):
        if isinstance(value, (dict, list)) or value is None or isinstance(value, bool):
            continue  # hf_token = true is vLLM's stored token, not a value
        if key in SECRET_KEYS or (parent == "env" and key in env_names):
            text = "%s" % (value,)
            if text:
                found.add(text)
    return found


def _walk(node, key=None, parent=None):
    """(key, value, parent key) of every value under `node`, depth first."""
    if isinstance(node, dict):
        for child_key, child in node.items():
            yield child_key, child, key
            for item in _walk(child, child_key, key):
                yield item
    elif isinstance(node, list):
        for child in node:
            for item in _walk(child, key, parent):
                yield item


def mask(text, secrets, new=()):
    """`text` with every secret replaced, as written and as a TOML/JSON basic string spells it;
    those in `new` by MASK_NEW."""
    for secret in sorted(secrets, key=len, reverse=True):  # a secret inside a longer one: longest first
        replacement = MASK_NEW if secret in new else MASK
        text = text.replace(secret, replacement)
        escaped = json.dumps(secret)[1:-1]
        if escaped != secret:
            text = text.replace(escaped, replacement)
    return text


def config_diff(path, before, after, secrets):
    """A unified diff of two config texts with `secrets` masked, or None when a secret would
    still show (a value spelt with escapes the masking does not know): then only the fact of a
    change is told, never its text."""
    before, after = before or "", after or ""
    new = [secret for secret in secrets if secret not in before and json.dumps(secret)[1:-1] not in before]
    masked = [mask(before, secrets), mask(after, secrets, new)]
    for text in masked:
        if any(secret in text for secret in secrets) or not _secrets_gone(text, secrets):
            return None
    lines = difflib.unified_diff(masked[0].splitlines(True), masked[1].splitlines(True),
                                 fromfile=path + " (before)", tofile=path + " (after)")
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _secrets_gone(text, secrets):
    """The masked text parses and no value in it holds a secret (a \\u escape spells a secret
    the text search misses). Text that does not parse, or no parser here: not known to be safe."""
    if not text.strip():
        return True
    doc = parse_toml(text)
    if doc is None:
        return False
    for _, value, _ in _walk(doc):
        if not isinstance(value, (dict, list)) and any(secret in "%s" % (value,) for secret in secrets):
            return False
    return True
