"""A warm interpreter for stage commands: torch is imported once, and each stage is forked from it.

Every stage command is a new process, and `import torch` alone costs ~2 s of it on the 2-core
sandbox; the embedded default's `dvc repro` runs 24 stage processes. `r2kd warm` starts a server
that imports torch once and listens on `.r2kd/warm/socket`. While it runs, `workflow/scripts/r2kd`
hands its command to the server instead of starting Python: the arguments, working directory,
umask, environment, and its stdin/stdout/stderr themselves (passed over the socket), and the
server forks a child that runs `python -m r2kd ...` as a fresh process would. r2kd's own code is
never imported by the server: each child imports the checkout's code as it is now.

A command runs in a new process as before whenever the server cannot run it exactly as a fresh
process would: no server, another interpreter, an environment that differs in a variable read at
start-up or import (PYTHON*, OMP_*, MKL_*, TORCH*, CUDA*, LD_*, LANG, LC_*), or torch reinstalled
since the server started (the server then stops).

Signals reach the command as they would a fresh process: the client forwards SIGINT, SIGTERM,
SIGHUP and SIGQUIT to the child's process group, and a client that dies (DVC or Snakemake killed)
takes its child with it. The client exits with the child's status.

This module is also the client (`python -I -S r2kd/warm.py SOCKET PYTHON ARGS...`, from the
launcher): it imports nothing beyond the standard library at module level.
"""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# Environment read while Python starts or a preloaded library loads: a command whose values differ
# from the server's runs in a fresh process.
IMPORT_TIME_ENV = ("PYTHON", "OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "TORCH", "PYTORCH", "CUDA", "NVIDIA",
                   "MPL", "XDG_", "HOME",  # matplotlib's backend, config and font cache (preload_listening)
                   "LD_", "MALLOC", "LANG", "LC_")
MAX_REQUEST = 1 << 20
GRACE_SECONDS = 10.0  # a child whose client vanished gets SIGTERM, then SIGKILL after this long


# ----------------------------------------------------------------------------------------- client


def warm_dir(root: str | os.PathLike) -> str:
    return os.path.join(os.fspath(root), ".r2kd", "warm")


def import_time_env(env: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if key.startswith(IMPORT_TIME_ENV)}


def flavor(python: str, env: dict[str, str]) -> str:
    """Which server can run a command: one per host, interpreter and start-up environment. Snakemake,
    for one, sets OMP_NUM_THREADS and its kin per job, so its jobs get their own server; the host
    keeps the nodes of a cluster sharing a checkout off each other's sockets."""
    text = json.dumps({"host": socket.gethostname(), "python": python, "env": import_time_env(env)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


_directory_fds: dict[str, int] = {}


def _reachable(path: str) -> str:
    """A socket path short enough for AF_UNIX (108 bytes): long ones go through /proc/self/fd."""
    if len(path.encode()) < 100:
        return path
    directory = os.path.dirname(path)
    if directory not in _directory_fds:  # kept open for the process's life, one per folder
        _directory_fds[directory] = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    return f"/proc/self/fd/{_directory_fds[directory]}/{os.path.basename(path)}"


class _Forwarder:
    """Signals the client gets go to the command's process group; one that arrives before the
    command started waits for it, or, if the command then runs in this process, is re-raised."""

    def __init__(self) -> None:
        self.child: int | None = None
        self.pending: list[int] = []
        for signum in FORWARDED_SIGNALS:
            signal.signal(signum, self.forward)

    def forward(self, signum, _frame) -> None:
        if self.child is None:
            self.pending.append(signum)
            return
        try:
            os.killpg(self.child, signum)
        except ProcessLookupError:
            pass

    def started(self, child: int) -> None:
        self.child = child
        for signum in self.pending:
            self.forward(signum, None)

    def run_here(self, python: str, args: list[str]) -> None:
        for signum in FORWARDED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        for signum in self.pending:  # as if it had reached the fresh process at once
            os.kill(os.getpid(), signum)
        _run_cold(python, args)


def _run_cold(python: str, args: list[str]) -> None:
    os.execvp(python, [python, "-m", "r2kd", *args])


def _read_line(stream) -> bytes:
    try:
        return stream.readline()
    except OSError:
        return b""


def _start_in_background(root: str, python: str, name: str, idle: float) -> None:
    """Start a server for this command's flavor, for the commands after it (this one runs cold)."""
    import subprocess

    directory = warm_dir(root)
    starting = os.path.join(directory, f"{name}.starting")
    try:
        os.close(os.open(starting, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:  # another command is starting it; one that died long ago left this file
        if time.time() - os.stat(starting).st_mtime > 120:
            os.unlink(starting)
        return
    log = os.open(os.path.join(directory, "log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    subprocess.Popen([python, "-m", "r2kd.warm", "serve", root, name, str(idle)], cwd=root,
                     stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    os.close(log)


def client(root: str, python: str, args: list[str]) -> None:
    """Run `python -m r2kd ARGS` in a warm server if one can, else exec it here; never returns."""
    import shutil

    signals = _Forwarder()
    python = os.path.abspath(shutil.which(python) or python)
    try:
        with open(os.path.join(warm_dir(root), "enabled")) as handle:  # written by `r2kd warm`
            idle = float(handle.read().strip())
    except (OSError, ValueError):
        signals.run_here(python, args)
        return
    name = flavor(python, dict(os.environ))
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(_reachable(os.path.join(warm_dir(root), f"{name}.sock")))
    except OSError:  # no server of this flavor yet
        try:
            _start_in_background(root, python, name, idle)
        except OSError:
            pass
        signals.run_here(python, args)
        return
    try:
        umask = os.umask(0)
        os.umask(umask)
        request = json.dumps({"argv": args, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask,
                              "python": python}).encode()
        socket.send_fds(conn, [struct.pack("!I", len(request))], [0, 1, 2])
        conn.sendall(request)
    except OSError:  # the server went away, a closed stdin: nothing was started, run it here
        signals.run_here(python, args)
        return
    replies = conn.makefile("rb")
    first = _read_line(replies)
    if not first.startswith(b"pid "):  # "cold" or nothing: the server started nothing
        conn.close()
        signals.run_here(python, args)
        return
    child = int(first.split()[1])
    signals.started(child)
    status = _read_line(replies).split()
    if len(status) == 2 and status[0] == b"exit":
        os._exit(int(status[1]))
    if len(status) == 2 and status[0] == b"signal":
        signum = int(status[1])
        if signum not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot be caught anyway
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        os._exit(128 + signum)
    # The server went away while the command ran: its status is lost, so report a failure (outputs
    # are written atomically; a rerun resumes) once the command itself has ended.
    while True:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    sys.stderr.write("r2kd: the warm interpreter stopped while this command ran; its exit status is lost\n")
    os._exit(1)


# ----------------------------------------------------------------------------------------- server


def _file_stamps(paths: list[str]) -> list[tuple]:
    stamps = []
    for path in paths:
        try:
            st = os.stat(path)
            stamps.append((path, st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            stamps.append((path, None))
    return stamps


class Server:
    """One thread: accept a command, check it can run warm, fork, report the child's exit status.

    It serves one flavor (interpreter + start-up environment) of one checkout from
    `.r2kd/warm/<flavor>.sock`, and stops after ``idle_seconds`` without a command."""

    def __init__(self, root: str, name: str, idle_seconds: float, module: str = "r2kd",
                 watch: list[str] | None = None, log=None, listening=None):
        self.directory = warm_dir(root)
        self.name = name
        self.socket_file = os.path.join(self.directory, f"{name}.sock")
        self.pid_file = os.path.join(self.directory, f"{name}.pid")
        self.idle_seconds = idle_seconds
        self.module = module
        self.python = os.path.abspath(sys.executable)
        self.env = import_time_env(dict(os.environ))
        self.watch = list(watch or [])
        self.stamps = _file_stamps(self.watch)
        self.log = log or sys.stderr
        self.children: dict[int, tuple[socket.socket, float | None]] = {}  # pid -> (client, kill deadline)
        self.stopping = False
        self.served = 0
        self.inode = None
        self.listening = listening  # a function run once bound, before the first command is accepted

    def say(self, text: str) -> None:
        self.log.write(f"{time.strftime('%H:%M:%S')} [{self.name}] {text}\n")
        self.log.flush()

    # -- listening -------------------------------------------------------------------------------

    def bind(self) -> socket.socket:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        os.chmod(self.directory, 0o700)  # only this user may hand the server a command
        address = _reachable(self.socket_file)
        if _listening(address):
            raise RuntimeError(f"a warm interpreter already listens on {self.socket_file}")
        try:
            os.unlink(self.socket_file)  # stale: its server is gone
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(address)
        listener.listen(16)
        self.inode = os.stat(self.socket_file).st_ino
        with open(self.pid_file, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        try:
            os.unlink(os.path.join(self.directory, f"{self.name}.starting"))
        except FileNotFoundError:
            pass
        return listener

    def unbind(self) -> None:
        try:
            if os.stat(self.socket_file).st_ino == self.inode:  # never another server's socket
                os.unlink(self.socket_file)
        except OSError:
            pass
        try:
            with open(self.pid_file) as handle:
                if handle.read().strip() == str(os.getpid()):
                    os.unlink(self.pid_file)
        except OSError:
            pass

    def serve(self) -> None:
        listener = self.bind()
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stopping", True))
        if self.listening is not None:
            self.listening()
        self.say(f"ready: pid {os.getpid()}, {self.python}, module {self.module}, idle stop {self.idle_seconds:g} s")
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ)
        idle_since = time.monotonic()
        try:
            while True:
                for key, _ in selector.select(timeout=0.05):
                    if key.fileobj is listener:
                        conn, _ = listener.accept()
                        self.handle(conn, selector, listener)
                    else:  # a client with a running child: readable means it hung up
                        self.client_gone(key.fileobj, selector)
                self.reap(selector)
                if self.children:
                    idle_since = time.monotonic()
                elif self.stopping or time.monotonic() - idle_since > self.idle_seconds:
                    break
                if self.stopping and listener.fileno() >= 0:
                    selector.unregister(listener)
                    listener.close()
                    self.unbind()
        finally:
            if listener.fileno() >= 0:
                listener.close()
            self.unbind()
            self.say(f"stopped after {self.served} command(s)")

    # -- one command -----------------------------------------------------------------------------

    def refuse(self, conn: socket.socket, why: str) -> None:
        self.say(f"cold: {why}")
        try:
            conn.sendall(b"cold\n")
        except OSError:
            pass
        conn.close()

    def handle(self, conn: socket.socket, selector, listener: socket.socket) -> None:
        fds: list[int] = []
        try:
            conn.settimeout(5.0)
            _, peer_uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                 struct.calcsize("3i")))
            if peer_uid != os.getuid():
                self.say(f"refused a client of uid {peer_uid}")
                conn.close()
                return
            data, fds, _, _ = socket.recv_fds(conn, 4, 3)
            if not data and not fds:  # a probe (`r2kd warm` checking that the server listens)
                conn.close()
                return
            if len(data) != 4 or len(fds) != 3:
                raise ValueError("malformed request header")
            (size,) = struct.unpack("!I", data)
            if size > MAX_REQUEST:
                raise ValueError(f"request of {size} bytes")
            body = b""
            while len(body) < size:
                chunk = conn.recv(size - len(body))
                if not chunk:
                    raise ValueError("truncated request")
                body += chunk
            request = json.loads(body)
            conn.settimeout(None)
        except (OSError, ValueError) as error:
            self.say(f"bad request: {error}")
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        why = self.cannot_serve(request)
        if why:
            for fd in fds:
                os.close(fd)
            self.refuse(conn, why)
            if why.startswith("changed"):
                self.stopping = True
            return
        pid = os.fork()
        if pid == 0:
            self.become_child(conn, fds, request, selector, listener)  # never returns
        for fd in fds:
            os.close(fd)
        try:
            os.setpgid(pid, pid)  # also done by the child: whichever runs first wins the race
        except OSError:
            pass
        self.children[pid] = (conn, None)
        selector.register(conn, selectors.EVENT_READ)
        self.served += 1
        self.say(f"pid {pid}: {self.module} {' '.join(request['argv'])}")

    def cannot_serve(self, request: dict) -> str | None:
        if self.stopping:
            return "stopping"
        if request.get("python") != self.python:
            return f"interpreter {request.get('python')} is not the server's {self.python}"
        env = request.get("env")
        if not isinstance(env, dict) or import_time_env(env) != self.env:
            theirs = import_time_env(env) if isinstance(env, dict) else {}
            differ = sorted(k for k in set(theirs) | set(self.env) if theirs.get(k) != self.env.get(k))
            return f"start-up environment differs in {differ}"
        if _file_stamps(self.watch) != self.stamps:
            return "changed: the installed torch changed since the server started"
        if not isinstance(request.get("argv"), list) or not all(isinstance(a, str) for a in request["argv"]):
            return "malformed argv"
        return None

    def become_child(self, conn: socket.socket, fds: list[int], request: dict, selector, listener) -> None:
        code = 1
        try:
            os.setpgid(0, 0)
            for signum in (*FORWARDED_SIGNALS, signal.SIGCHLD):
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            selector.close()
            listener.close()
            for other, _ in self.children.values():
                other.close()
            for fd in _directory_fds.values():
                os.close(fd)
            _directory_fds.clear()
            conn.sendall(f"pid {os.getpid()}\n".encode())
            conn.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            code = _run_as_fresh_process(self.module, request)
        except BaseException:  # noqa: BLE001 - the child must never return into the server's loop
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)

    # -- children --------------------------------------------------------------------------------

    def reap(self, selector) -> None:
        for pid in list(self.children):
            conn, deadline = self.children[pid]
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 1 << 8
            if done == 0:
                if deadline is not None and time.monotonic() > deadline:
                    _kill_group(pid, signal.SIGKILL)
                continue
            del self.children[pid]
            reply = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
            if conn.fileno() >= 0:
                selector.unregister(conn)
                try:
                    conn.sendall(reply.encode() + b"\n")
                except OSError:
                    pass
                conn.close()
            self.say(f"pid {pid}: {reply}")

    def client_gone(self, conn: socket.socket, selector) -> None:
        selector.unregister(conn)
        for pid, (known, _) in self.children.items():
            if known is conn:
                self.say(f"pid {pid}: its client hung up; stopping it")
                _kill_group(pid, signal.SIGTERM)
                self.children[pid] = (conn, time.monotonic() + GRACE_SECONDS)
        conn.close()


def _kill_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _exit_code(value) -> int:
    """What `sys.exit(value)` makes a process's status, as the interpreter does it."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    sys.stderr.write(f"{value}\n")
    return 1


def _stdio(fd: int, mode: str, line_buffering: bool):
    import io

    raw = io.FileIO(fd, mode, closefd=False)
    buffered = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
    interactive = raw.isatty()
    return io.TextIOWrapper(buffered, encoding=sys.stdout.encoding, errors="backslashreplace" if fd == 2 else "strict",
                            line_buffering=line_buffering or (interactive and mode == "w"),
                            write_through=bool(os.environ.get("PYTHONUNBUFFERED")) and mode == "w")


def _run_as_fresh_process(module: str, request: dict) -> int:
    """In the forked child: become `python -m MODULE ARGV` started in the client's place."""
    import atexit
    import random
    import runpy

    os.chdir(request["cwd"])
    os.umask(int(request["umask"]))
    os.environ.clear()
    os.environ.update(request["env"])
    # `python -m` puts the working directory first; the rest (PYTHONPATH, stdlib, site) is the
    # server's, which equals the client's since their PYTHON* variables are the same.
    sys.path[0] = os.getcwd()
    for name in [n for n in sys.modules if n == module or n.startswith(module + ".") or n == "r2kd"
                 or n.startswith("r2kd.")]:
        del sys.modules[name]
    sys.stdin = sys.__stdin__ = _stdio(0, "r", False)
    sys.stdout = sys.__stdout__ = _stdio(1, "w", False)
    sys.stderr = sys.__stderr__ = _stdio(2, "w", True)
    random.seed()  # a fresh process draws its own seed; r2kd seeds every generator it uses anyway
    sys.argv = [module, *request["argv"]]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit_:
        code = _exit_code(exit_.code)
    except KeyboardInterrupt:
        import traceback

        traceback.print_exc()
        code = 128 + signal.SIGINT
        _finish()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)  # as an interpreter does: the status says "killed by SIGINT"
    except BaseException:  # noqa: BLE001 - an uncaught error: print it and fail, as `python -m` does
        import traceback

        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    _finish()
    return code


def _finish() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


# ----------------------------------------------------------------------------------------- start


def _torch_files() -> list[str]:
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        return []
    base = os.path.dirname(spec.origin)
    plots = importlib.util.find_spec("matplotlib")  # preloaded too (preload_listening)
    return [spec.origin, os.path.join(base, "version.py"), os.path.abspath(sys.executable),
            *([plots.origin] if plots is not None and plots.origin else [])]


def preload() -> None:
    """What every stage imports first and costs the most: torch (and numpy, which it pulls in)."""
    import numpy  # noqa: F401
    import torch  # noqa: F401
    import torch.nn.functional  # noqa: F401


def preload_listening() -> None:
    """What only some stages import, imported once the server listens (so `r2kd warm` returns no
    later; a command that arrives meanwhile waits for it): matplotlib's pyplot, ~0.5-0.9 s of the
    report stage, which ends every `make run` and `dvc exp run`. The backend is left for the child
    to choose (r2kd.stages.report picks Agg), as in a fresh process."""
    try:
        import matplotlib  # noqa: F401
        import matplotlib.pyplot  # noqa: F401
    except ImportError:  # the stage that plots says so itself
        pass


def server_env(root: str) -> dict[str, str]:
    """The environment stage commands get from workflow/scripts/r2kd: the checkout's code first."""
    env = dict(os.environ)
    old = env.get("PYTHONPATH", "")
    if old.split(os.pathsep)[0] != root:
        env["PYTHONPATH"] = root + (os.pathsep + old if old else "")
    return env


# What Snakemake sets in every job's environment to the job's thread count (snakemake/shell.py):
# its jobs are a flavor of their own, one per thread count.
SNAKEMAKE_THREAD_ENV = ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                        "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def snakemake_job_threads(threads: int, nproc_per_node: int) -> tuple[int, ...]:
    """The thread counts of the Snakemake jobs (workflow/rules): runtime.threads, 1 for the light
    rules, runtime.threads x nproc_per_node for a torchrun launch (tests/test_dag.py)."""
    return tuple(sorted({1, threads, threads * nproc_per_node}))


def snakemake_job_env(env: dict[str, str], threads: int) -> dict[str, str]:
    """``env`` as a Snakemake job of ``threads`` threads started from it sees it."""
    return {**env, **{name: str(threads) for name in SNAKEMAKE_THREAD_ENV}}


def start(root: str, idle_seconds: float, timeout: float = 60.0,
          job_threads: tuple[int, ...] = ()) -> list[tuple[int, bool]]:
    """Enable warm commands for the checkout at ROOT and start the server for this process's flavor
    (the one `dvc repro` started from the same shell will have), or, given ``job_threads``, one for
    the flavor of Snakemake's jobs of each of those thread counts (a first job would otherwise run
    cold and start it). Servers start side by side; return (pid, started) for each once all listen."""
    import subprocess

    directory = warm_dir(root)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    log_path = os.path.join(directory, "log")
    if os.path.exists(log_path) and os.path.getsize(log_path) > 1 << 20:
        os.replace(log_path, log_path + ".1")
    base = server_env(root)
    envs = [snakemake_job_env(base, n) for n in sorted(set(job_threads))] if job_threads else [base]
    servers: list[tuple[str, int, subprocess.Popen | None]] = []
    for env in envs:
        name = flavor(os.path.abspath(sys.executable), env)
        running = _server_pid(root, name)
        if running:
            servers.append((name, running, None))
            continue
        with open(log_path, "a") as log:
            process = subprocess.Popen([sys.executable, "-m", "r2kd.warm", "serve", root, name, f"{idle_seconds:g}"],
                                       cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       start_new_session=True)
        servers.append((name, process.pid, process))
    deadline = time.monotonic() + timeout
    waiting = [(name, process) for name, _, process in servers if process is not None]
    while waiting and time.monotonic() < deadline:
        for name, process in waiting:
            if process.poll() is not None:
                raise RuntimeError(f"the warm interpreter exited with status {process.returncode}; see {log_path}")
        waiting = [(name, process) for name, process in waiting if not _server_pid(root, name)]
        if waiting:
            time.sleep(0.05)
    if waiting:
        for _, process in waiting:
            process.terminate()
        raise RuntimeError(f"the warm interpreter did not listen within {timeout:g} s; see {log_path}")
    # Only now: a command that found `enabled` before its server listened would run cold and start
    # a second server of its flavor.
    with open(os.path.join(directory, "enabled"), "w") as handle:
        handle.write(f"{idle_seconds:g}\n")
    return [(pid, process is not None) for _, pid, process in servers]


def stop(root: str, timeout: float = 30.0) -> list[int]:
    """Disable warm commands for the checkout and stop its servers once their running commands end."""
    directory = warm_dir(root)
    try:
        os.unlink(os.path.join(directory, "enabled"))
    except FileNotFoundError:
        pass
    pids = []
    for entry in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        if entry.endswith(".pid"):
            pid = _server_pid(root, entry[:-4])
            if pid:
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    return pids


def _listening(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)  # our own child (tests): reap it
        return done == 0
    except ChildProcessError:
        pass
    # Exited but not yet reaped by init (a container's init may take seconds): it runs nothing.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _server_pid(root: str, name: str) -> int | None:
    directory = warm_dir(root)
    try:
        with open(os.path.join(directory, f"{name}.pid")) as handle:
            pid = int(handle.read().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) and _listening(_reachable(os.path.join(directory, f"{name}.sock"))) else None


def main(argv: list[str]) -> None:
    if len(argv) == 4 and argv[0] == "serve":
        root, name, idle = argv[1], argv[2], float(argv[3])
        preload()
        Server(root, name, idle, watch=_torch_files(), log=sys.stderr, listening=preload_listening).serve()
        # Its socket and pid file are gone and no child runs: skip the interpreter's teardown
        # (~0.5 s with torch loaded), which `r2kd warm --stop` would wait for.
        sys.stderr.flush()
        os._exit(0)
    elif len(argv) >= 2:
        client(argv[0], argv[1], argv[2:])
    else:
        sys.exit("usage: warm.py ROOT PYTHON ARGS...  |  python -m r2kd.warm serve ROOT FLAVOR IDLE_SECONDS")


if __name__ == "__main__":
    main(sys.argv[1:])
