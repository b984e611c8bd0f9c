"""watch's restart records beside the log file, as ps and `logs --restarts` read them."""

from __future__ import annotations

import os

from orchestrator import restart_log


def test_records_live_beside_the_log_file_and_survive_as_lines(tmp_path):
    log = str(tmp_path / "logs" / "vllm-server-chat.log")
    assert restart_log.path_for(log) == str(tmp_path / "logs" / "vllm-server-chat.restarts.jsonl")
    assert restart_log.summary(log) == (0, None)
    restart_log.append(log, {"action": "restart", "reason": "first", "log_tail": ["a"]})
    restart_log.append(log, {"action": "restart", "reason": "second", "log_tail": []})
    assert [r["reason"] for r in restart_log.read(log)] == ["first", "second"]
    assert restart_log.summary(log) == (2, "second")


def test_a_crash_loop_report_is_shown_but_not_counted_as_a_restart(tmp_path):
    log = str(tmp_path / "x.log")
    restart_log.append(log, {"action": "restart", "reason": "r"})
    restart_log.append(log, {"action": "gave up", "reason": "crash loop"})
    assert restart_log.summary(log) == (1, "crash loop")


def test_a_damaged_line_or_a_symlink_does_not_break_ps(tmp_path):
    log = str(tmp_path / "x.log")
    restart_log.append(log, {"action": "restart", "reason": "r"})
    with open(restart_log.path_for(log), "a") as handle:
        handle.write("{not json\n[1]\n")
    assert restart_log.summary(log) == (1, "r")
    other = str(tmp_path / "y.log")
    os.symlink("/etc/passwd", restart_log.path_for(other))
    assert restart_log.read(other) == []
