"""Log files are opened as root without being turned against the host: a symlink, hard link,
FIFO, directory or someone else's file where a log belongs is refused, and the thing it points
at is left exactly as it was."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from orchestrator import log_files
from orchestrator.cli import main
from orchestrator.logs import tail_lines


@pytest.fixture
def victim(tmp_path):
    target = tmp_path / "victim"
    target.write_text("precious\n")
    target.chmod(0o600)
    return target


def unchanged(path) -> tuple:
    info = os.stat(path)
    return (path.read_text(), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)


def test_symlink_in_place_of_the_log_is_refused_and_its_target_untouched(tmp_path, victim):
    before = unchanged(victim)
    log = tmp_path / "logs" / "vllm-server-a.log"
    log.parent.mkdir()
    log.symlink_to(victim)
    with pytest.raises(log_files.UnsafeLogFile, match="symbolic link"):
        log_files.prepare(str(log), owner=(1000, 1000))
    with pytest.raises(log_files.UnsafeLogFile, match="symbolic link"):
        log_files.prepare(str(log), shared=True)
    with pytest.raises(log_files.UnsafeLogFile, match="symbolic link"):
        tail_lines(log, 10)
    assert unchanged(victim) == before


def test_hard_link_is_refused(tmp_path, victim):
    before = unchanged(victim)
    log = tmp_path / "vllm-server-a.log"
    os.link(victim, log)
    with pytest.raises(log_files.UnsafeLogFile, match="hard links"):
        log_files.prepare(str(log), shared=True)
    assert unchanged(victim) == before


def test_fifo_neither_hangs_nor_is_used(tmp_path):
    log = tmp_path / "vllm-server-a.log"
    os.mkfifo(log)
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(_raises(lambda: log_files.prepare(str(log)))))
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "opening a FIFO must not block"
    assert outcome == [True]


def _raises(fn) -> bool:
    try:
        fn()
    except log_files.UnsafeLogFile:
        return True
    return False


def test_someone_elses_file_is_not_taken_over(tmp_path):
    log = tmp_path / "vllm-server-a.log"
    log.write_text("theirs\n")
    os.chown(log, 4242, 4242)
    with pytest.raises(log_files.UnsafeLogFile, match="belongs to uid 4242"):
        log_files.prepare(str(log), owner=(1000, 1000))
    assert os.stat(log).st_uid == 4242


def test_a_new_log_is_created_and_handed_to_the_servers_user(tmp_path):
    log = tmp_path / "deep" / "vllm-server-a.log"
    log_files.prepare(str(log), owner=(1000, 1001))
    info = os.stat(log)
    assert (info.st_uid, info.st_gid) == (1000, 1001) and stat.S_ISREG(info.st_mode)
    log_files.prepare(str(log), owner=(1000, 1001))  # its own file again: fine, and appended to
    fd = log_files.open_for_append(str(log), owner=(1000, 1001))
    os.write(fd, b"line\n")
    os.close(fd)
    assert tail_lines(log, 5) == ["line"]


def test_logs_command_does_not_print_a_symlinked_file(tmp_path, victim, capsys):
    config = tmp_path / "fleet.toml"
    config.write_text('[docker]\nimage = "img"\n[instance.a.server]\nmodel = "/m"\n')
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "vllm-server-a.log").symlink_to(victim)
    assert main(["-c", str(config), "logs", "a"]) == 1
    out, err = capsys.readouterr()
    assert "precious" not in out + err
    assert "symbolic link" in err and err.count("\n") == 1


def test_logs_command_on_a_directory_is_one_line(tmp_path, capsys):
    config = tmp_path / "fleet.toml"
    config.write_text('[docker]\nimage = "img"\n[instance.a.server]\nmodel = "/m"\n')
    (tmp_path / "logs" / "vllm-server-a.log").mkdir(parents=True)
    assert main(["-c", str(config), "logs", "a", "-n", "5"]) == 1
    assert "is a directory" in capsys.readouterr().err
