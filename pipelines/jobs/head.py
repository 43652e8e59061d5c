"""A local Ray head for job submission: started once (detached), found again via a state file.

``vidcorpus jobs submit`` without ``--address`` attaches to the head recorded in
``$VIDCORPUS_HOME/ray-head.json`` (default ``~/.vidcorpus``) or starts one with
``ray start --head --block --include-dashboard true`` as a detached subprocess. The head gets its
own ``--temp-dir`` and free ports, so it never becomes the cluster that an address-less Ray init
elsewhere on the machine joins, and stopping it ends only the processes it started (never
``ray stop``, which would end every Ray on the machine). Ray's token authentication stays on,
with a token of our own (``$VIDCORPUS_HOME/ray-auth-token``) that clients send as a header.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)
PORT_FLAGS = ("--port", "--dashboard-port", "--ray-client-server-port", "--dashboard-agent-listen-port",
              "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port",
              "--node-manager-port", "--object-manager-port")


class HeadError(RuntimeError):
    """The local Ray head could not be started or reached."""


@dataclass(frozen=True)
class HeadState:
    """What is recorded about a running local head."""

    dashboard_url: str  # Jobs API address, e.g. http://127.0.0.1:8265
    gcs_address: str
    pid: int  # the `ray start --block` process; its session holds the whole head
    temp_dir: str
    num_cpus: int
    log_path: str
    token_path: str  # Ray token authentication: clients send this token as a bearer header
    started_at: float

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {Path(self.token_path).read_text().strip()}"}


def vidcorpus_home(home: str | os.PathLike | None = None) -> Path:
    """Where per-user state lives: ``home``, else ``$VIDCORPUS_HOME``, else ``~/.vidcorpus``."""
    return Path(home or os.environ.get("VIDCORPUS_HOME") or Path.home() / ".vidcorpus")


def state_path(home: str | os.PathLike | None = None) -> Path:
    return vidcorpus_home(home) / "ray-head.json"


def find_head(home: str | os.PathLike | None = None) -> HeadState | None:
    """The recorded head when it is still up and answering, else None."""
    state = _read_state(home)
    return state if state and _alive(state.pid) and _answers(state, "/api/jobs/") else None


def ensure_head(num_cpus: int | None = None, home: str | os.PathLike | None = None,
                timeout_s: float = 120.0) -> tuple[HeadState, bool]:
    """Attach to the recorded head or start one; returns (state, whether it was started now).

    A file lock makes concurrent callers (a scheduler and a submit) share one head.
    """
    with _locked(vidcorpus_home(home)):
        state = find_head(home)
        if state is not None:
            return state, False
        stop_head(home)  # a recorded head that died: clean up what it left
        return start_head(num_cpus, home, timeout_s), True


@contextmanager
def attached_head(num_cpus: int | None = None, home: str | os.PathLike | None = None) -> Iterator[HeadState]:
    """A head for the duration of a block; stopped afterwards only when this block started it."""
    state, started = ensure_head(num_cpus, home)
    try:
        yield state
    finally:
        if started:
            stop_head(home)


def start_head(num_cpus: int | None = None, home: str | os.PathLike | None = None,
               timeout_s: float = 120.0) -> HeadState:
    """Start a detached local head and wait until its Jobs API answers."""
    home_dir = vidcorpus_home(home)
    home_dir.mkdir(parents=True, exist_ok=True)
    ports = dict(zip(PORT_FLAGS, _free_ports(len(PORT_FLAGS))))
    temp_dir = tempfile.mkdtemp(prefix="vcray-", dir="/tmp")  # short: Ray's socket paths have a limit
    n = num_cpus or os.cpu_count() or 1
    cmd = [_ray_bin(), "start", "--head", "--block", "--include-dashboard", "true",
           "--dashboard-host", "127.0.0.1", "--node-ip-address", "127.0.0.1", "--num-cpus", str(n),
           "--temp-dir", temp_dir, "--disable-usage-stats"]
    cmd += [str(x) for flag, port in ports.items() for x in (flag, port)]
    log_path, token_path = home_dir / "ray-head.log", _token_file(home_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path))
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    state = HeadState(dashboard_url=f"http://127.0.0.1:{ports['--dashboard-port']}",
                      gcs_address=f"127.0.0.1:{ports['--port']}", pid=proc.pid, temp_dir=temp_dir,
                      num_cpus=n, log_path=str(log_path), token_path=str(token_path),
                      started_at=time.time())
    _write_state(state, home)
    try:
        _wait_ready(proc, state, timeout_s)
    except HeadError:
        stop_head(home)
        raise
    log.info("started a local Ray head at %s (pid %d)", state.dashboard_url, proc.pid)
    return state


def stop_head(home: str | os.PathLike | None = None, timeout_s: float = 20.0) -> bool:
    """Stop the recorded head and every process it started; True when one was recorded."""
    path = state_path(home)
    state = _read_state(home)
    if state is None:
        path.unlink(missing_ok=True)
        return False
    _terminate([state.pid], timeout_s)
    _terminate(_pids_mentioning(state.temp_dir), 5.0)  # workers and agents the head left behind
    shutil.rmtree(state.temp_dir, ignore_errors=True)  # our own temp dir: safe to delete whole
    path.unlink(missing_ok=True)
    return True


@contextmanager
def _locked(home_dir: Path) -> Iterator[None]:
    home_dir.mkdir(parents=True, exist_ok=True)
    with open(home_dir / "ray-head.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_state(home) -> HeadState | None:
    path = state_path(home)
    try:
        return HeadState(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as e:  # corrupt or from another version: treat as no head
        log.warning("ignoring unreadable Ray head state %s: %s", path, e)
        return None


def _write_state(state: HeadState, home) -> None:
    path = state_path(home)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    os.replace(tmp, path)


def _wait_ready(proc: subprocess.Popen, state: HeadState, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HeadError(f"`ray start` exited with {proc.returncode}; see {state.log_path}:\n"
                            + _tail(state.log_path))
        if _answers(state, "/api/jobs/"):
            return
        time.sleep(0.5)
    raise HeadError(f"the Ray head did not answer within {timeout_s:.0f}s; see {state.log_path}:\n"
                    + _tail(state.log_path))


def _answers(state: HeadState, path: str) -> bool:
    request = urllib.request.Request(state.dashboard_url + path, headers=state.auth_headers())
    try:
        with urllib.request.urlopen(request, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _token_file(home_dir: Path) -> Path:
    """Our head's auth token (created once, readable by this user only)."""
    path = home_dir / "ray-auth-token"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path


def _ray_bin() -> str:
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        raise HeadError("the `ray` command is not installed (pip install 'ray[default]')")
    return found


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _alive(pid: int) -> bool:
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child that has exited: reap it
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pids_mentioning(marker: str) -> list[int]:
    """Processes whose command line mentions ``marker`` (our head's temp dir), Linux only."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return [p for p in pids if p != os.getpid()]


def _terminate(pids: list[int], timeout_s: float) -> None:
    """SIGTERM ``pids``, wait up to ``timeout_s``, then SIGKILL the ones still alive."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        live = [p for p in pids if _alive(p)]
        for pid in live:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + timeout_s
        while live and time.monotonic() < deadline:
            time.sleep(0.2)
            live = [p for p in live if _alive(p)]
        if not live:
            return


def _tail(path: str, n: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"
