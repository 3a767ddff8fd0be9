"""The warm interpreter (r2kd/warm.py): a command forked from it behaves as a fresh process would.

Its exit status, stdin/stdout/stderr, working directory and environment are the client's; signals
sent to the client reach the command; a client that dies takes its command with it; whatever the
server cannot run exactly as a fresh process would (another start-up environment, torch changed on
disk, no server at all) runs in a fresh process. End to end, `snakemake --cores 2` through it gives
the same bytes as `dvc repro` without it (tests/test_pipeline.py).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, make_repo, run

WARM = REPO / "r2kd" / "warm.py"
TESTS = Path(__file__).resolve().parent


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS)])
    env.update(extra)
    return env


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


@pytest.fixture
def server(tmp_path):
    """A warm server for a checkout at tmp_path that runs tests/warm_helper.py instead of r2kd."""
    from r2kd import warm

    watched = tmp_path / "watched"  # stands for torch's files: a change stops the server
    watched.write_text("v1")
    directory = Path(warm.warm_dir(tmp_path))
    directory.mkdir(parents=True)
    (directory / "enabled").write_text("30\n")
    name = warm.flavor(os.path.abspath(sys.executable), environment())
    log = open(directory / "log", "a")
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from r2kd.warm import Server; "
         "Server(sys.argv[1], sys.argv[2], 30, module='warm_helper', watch=[sys.argv[3]]).serve()",
         str(tmp_path), name, str(watched)],
        env=environment(), stdout=log, stderr=log, start_new_session=True)
    sock = directory / f"{name}.sock"
    wait_for(lambda: sock.exists() or process.poll() is not None)
    assert process.poll() is None, (directory / "log").read_text()
    yield sock, watched, directory / "log", process
    process.terminate()
    process.wait(timeout=30)
    warm.stop(str(tmp_path))  # any server a test's command started


def client(sock: Path, *args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    root = sock.parents[2]
    return subprocess.Popen([sys.executable, "-I", "-S", str(WARM), str(root), sys.executable, *args],
                            env=env or environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


def served(log: Path) -> list[str]:
    return [line.split(": ", 1)[1] for line in log.read_text().splitlines() if ": warm_helper " in line]


def test_exit_status_streams_directory_and_environment_are_the_clients(server, tmp_path):
    sock, _, log, _ = server
    proc = client(sock, "exit", "5")
    assert proc.wait(timeout=30) == 5
    assert proc.stdout.read() == "exiting with 5\n"

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    proc = client(sock, "echo", env=environment(WARM_TEST_VALUE="42"), stdin=subprocess.PIPE, cwd=workdir)
    out, err = proc.communicate("hello\n", timeout=30)
    assert proc.returncode == 0
    assert out == f"out:hello:{workdir}:42\n" and err == "err:hello\n"

    proc = client(sock, "raise")
    assert proc.wait(timeout=30) == 1
    assert "RuntimeError: an uncaught error" in proc.stderr.read()
    assert served(log) == ["warm_helper exit 5", "warm_helper echo", "warm_helper raise"]  # none ran cold


def test_a_signal_to_the_client_reaches_the_command(server, tmp_path):
    sock, _, _, _ = server
    marker = tmp_path / "marker"
    proc = client(sock, "sleep", str(marker))
    first = proc.stdout.readline()
    assert first.startswith("sleeping ")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 3  # the command's own status
    assert marker.read_text() == f"SIGTERM {first.split()[1]}\n"


def test_a_client_that_dies_takes_its_command_with_it(server, tmp_path):
    sock, _, log, _ = server
    marker = tmp_path / "marker"
    proc = client(sock, "sleep", str(marker))
    child = int(proc.stdout.readline().split()[1])
    proc.kill()  # SIGKILL: nothing to forward; the server sees the hang-up
    proc.wait(timeout=30)
    wait_for(lambda: marker.exists())
    assert marker.read_text() == f"SIGTERM {child}\n"
    wait_for(lambda: "exit 3" in log.read_text())


def test_a_command_killed_by_a_signal_kills_its_client_with_it(server, tmp_path):
    sock, _, _, _ = server
    proc = client(sock, "sleep", str(tmp_path / "marker"))
    child = int(proc.stdout.readline().split()[1])
    os.kill(child, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL  # the status a fresh process would have had


def test_another_start_up_environment_runs_fresh_and_gets_its_own_server(server, tmp_path):
    from r2kd import warm

    sock, _, log, _ = server
    other = environment(OMP_NUM_THREADS="3")  # read when torch loads: the helper server cannot run it
    proc = client(sock, "check", env=other, cwd=REPO)  # a fresh `python -m r2kd check`
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    assert "is valid" in proc.stderr.read()
    name = warm.flavor(os.path.abspath(sys.executable), other)
    wait_for(lambda: (sock.parent / f"{name}.pid").exists(), timeout=60)  # started for the next one
    proc = client(sock, "check", env=other, cwd=REPO)
    assert proc.wait(timeout=120) == 0
    assert f"[{name}] pid {proc.pid}" not in log.read_text()
    assert re.search(rf"\[{name}\] pid \d+: r2kd check\n.*\[{name}\] pid \d+: exit 0", log.read_text(), re.S)
    assert served(log) == [] and "cold" not in log.read_text()


def test_torch_changed_on_disk_stops_the_server_and_runs_fresh(server):
    sock, watched, log, process = server
    watched.write_text("v2")
    proc = client(sock, "check", cwd=REPO)
    assert proc.wait(timeout=120) == 0
    assert "cold: changed: the installed torch changed" in log.read_text()
    process.wait(timeout=30)
    assert served(log) == []


def test_without_r2kd_warm_or_with_a_stale_socket_a_command_runs_fresh(server, tmp_path):
    sock, _, log, process = server
    process.terminate()
    process.wait(timeout=30)
    import socket

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock))
    listener.close()  # the file stays and nobody listens: a server that was killed
    proc = client(sock, "check", cwd=REPO)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    assert "is valid" in proc.stderr.read()
    wait_for(lambda: sock.with_suffix(".pid").exists(), timeout=60)  # a new server replaced the stale one

    from r2kd import warm

    assert warm.stop(str(tmp_path))  # also turns warm commands off for the checkout
    before = sorted(p.name for p in sock.parent.iterdir())
    proc = client(sock, "check", cwd=REPO)
    assert proc.wait(timeout=120) == 0 and "is valid" in proc.stderr.read()
    time.sleep(1)
    assert sorted(p.name for p in sock.parent.iterdir()) == before  # and starts nothing


def test_r2kd_warm_serves_the_checkouts_stage_commands(tmp_path):
    repo = make_repo(tmp_path / "repo", git=False)
    cold = run("workflow/scripts/r2kd --params missing.yaml check", repo, check=False)
    started = run("workflow/scripts/r2kd warm --idle 60", repo)
    assert "warm interpreter ready" in started.stderr
    assert "already runs here" in run("workflow/scripts/r2kd warm", repo).stderr
    try:
        warm = run("workflow/scripts/r2kd --params missing.yaml check", repo, check=False)
        assert (warm.returncode, warm.stdout, warm.stderr) == (cold.returncode, cold.stdout, cold.stderr) != (0, "", "")
        run("workflow/scripts/r2kd check --stamp", repo)
        log = (repo / ".r2kd/warm/log").read_text()
        assert "r2kd --params missing.yaml check" in log and "r2kd check --stamp" in log and "cold" not in log
        assert (repo / "runs/checked.txt").exists()
        assert oct((repo / ".r2kd/warm").stat().st_mode & 0o777) == "0o700"
    finally:
        stopped = run("workflow/scripts/r2kd warm --stop", repo)
    assert "stopped" in stopped.stderr
    assert not (repo / ".r2kd/warm/socket").exists()
    assert "no warm interpreter" in run("workflow/scripts/r2kd warm --stop", repo).stderr
