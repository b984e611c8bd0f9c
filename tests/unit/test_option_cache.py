"""The option-table cache: only lasting answers are kept, and only files that are ours, plain,
not writable by others and of the dump's shape are believed (a table spells every argv)."""

from __future__ import annotations

import json
import os

import pytest

from orchestrator import option_cache
from orchestrator.option_cache import CACHE_ENV, image_table

TABLE = {"format": 1, "vllm_version": "0.32.0",
         "options": [{"dest": "max_model_len", "flags": ["--max-model-len"], "takes_value": True}]}


class Backend:
    """Answers run_once like the Docker backend: (exit code, stdout, stderr)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.asked = 0

    def run_once(self, image, argv, mounts, timeout):
        self.asked += 1
        return self.answers.pop(0)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    return tmp_path / "option-tables"


def ask(backend):
    return image_table(backend, "img", "sha256:" + "c" * 64, pixi_project_dir=None, pixi_environment="default")


def cached_file(cache):
    [path] = [p for p in cache.iterdir() if p.suffix == ".json"]
    return path


def test_a_table_is_asked_once_then_read(cache):
    backend = Backend((0, json.dumps(TABLE), ""))
    assert ask(backend).table is not None and ask(backend).table is not None
    assert backend.asked == 1
    assert oct(os.stat(cached_file(cache)).st_mode & 0o777) == "0o600"


def test_a_transient_failure_is_not_kept(cache):
    backend = Backend((-1, "", "the Docker engine did not answer"), (137, "", "Killed"), (0, json.dumps(TABLE), ""))
    assert ask(backend).table is None
    assert ask(backend).table is None
    assert ask(backend).table is not None  # asked again each time until it answered
    assert backend.asked == 3


def test_the_images_own_no_vllm_answer_is_kept(cache):
    backend = Backend((0, json.dumps({"format": 1, "error": "No module named 'vllm'"}), ""))
    assert "No module named" in ask(backend).note and "No module named" in ask(backend).note
    assert backend.asked == 1


@pytest.mark.parametrize("damage", ["[1, 2]", "{", '{"options": "x"}', "",
                                    json.dumps({**TABLE, "options": [{"dest": "x", "flags": ["--x; rm -rf /"]}]}),
                                    json.dumps({**TABLE, "options": [{"dest": "x", "flags": ["--x"],
                                                                      "negative_flag": "--api-key=stolen"}]})])
def test_a_damaged_or_tampered_file_is_asked_again_and_replaced(cache, damage):
    ask(Backend((0, json.dumps(TABLE), "")))
    cached_file(cache).write_text(damage)
    backend = Backend((0, json.dumps(TABLE), ""))
    assert ask(backend).table is not None and backend.asked == 1
    assert json.loads(cached_file(cache).read_text()) == TABLE


def test_a_file_others_can_write_is_not_believed(cache):
    ask(Backend((0, json.dumps(TABLE), "")))
    cached_file(cache).chmod(0o666)
    backend = Backend((0, json.dumps(TABLE), ""))
    ask(backend)
    assert backend.asked == 1


def test_a_symlink_in_the_cache_is_not_followed(cache, tmp_path):
    ask(Backend((0, json.dumps(TABLE), "")))
    path = cached_file(cache)
    elsewhere = tmp_path / "planted.json"
    elsewhere.write_text(json.dumps({**TABLE, "vllm_version": "planted"}))
    path.unlink()
    path.symlink_to(elsewhere)
    answer = ask(Backend((0, json.dumps(TABLE), "")))
    assert "planted" not in answer.note


def test_writes_go_through_a_temporary_file_of_their_own(cache, monkeypatch):
    """Two runs writing at once each use their own temporary name, then rename."""
    names = []
    real = os.replace
    monkeypatch.setattr(option_cache.os, "replace", lambda a, b: (names.append(os.path.basename(a)), real(a, b)))
    ask(Backend((0, json.dumps(TABLE), "")))
    cached_file(cache).unlink()
    ask(Backend((0, json.dumps(TABLE), "")))
    assert len(set(names)) == 2 and not any(n.endswith(".json") for n in names)
