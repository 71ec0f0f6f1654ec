"""Processes the kit starts: a Faust worker, the API, a simulator; free ports; pid files for the demo.

Every process runs detached (its own session), logs to ``.stack/logs`` and is stopped with TERM, then KILL.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from models.settings import Settings
from tools.kafka_admin import start_group_at_end_blocking

ROOT = Path(__file__).resolve().parents[2]
STACK_DIR = Path(os.environ.get("STACK_DIR", ROOT / ".stack"))
if not STACK_DIR.is_absolute():
    STACK_DIR = ROOT / STACK_DIR
RUN_DIR = STACK_DIR / "run"
LOG_DIR = STACK_DIR / "logs"
# A worker started ``for_tests`` also reads the keys PipelineClient.upload makes (tests/{uuid}.jpg, not
# bound to a job id); otherwise it refuses everything but the API's keys, as in production.
DEFAULT_KEY_PATTERN = Settings.model_fields["upload_key_pattern"].default
TEST_KEY_PATTERN = rf"(?:{DEFAULT_KEY_PATTERN})|tests/[a-z0-9-]{{1,64}}\.(?:jpg|png|webp)"


# free_port's ports lie below the kernel's ephemeral range, in a span this wide.
FREE_PORT_SPAN = 12_000


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (connect() and bind(0) take their ports from it)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A port free on 127.0.0.1 now, for a server a process started later binds (seconds later, after imports).

    Taken below the ephemeral range: a port bind(0) hands out is one the kernel also gives outgoing connections
    (a Kafka or HTTP client's), and one opened between this call and the server's bind made the server fail
    with EADDRINUSE. Chosen at random among the free ones, so two callers rarely pick the same port either.
    """
    low = _ephemeral_low()
    first = max(1024, low - FREE_PORT_SPAN)
    rng = random.SystemRandom()
    for _ in range(100 if low - first >= 1000 else 0):
        port = rng.randrange(first, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # no room below the range: a port of the range itself
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def venv_bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment a subprocess needs to build the same Settings (field names, upper-cased)."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        elif isinstance(value, list):
            value = json.dumps(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[name.upper()] = str(getattr(value, "value", value))
    return env


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """TERM, wait, then KILL: Faust workers need the TERM to leave their consumer group cleanly."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@dataclass
class Proc:
    """A process the kit started, its log, and (for a worker) its web port."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    web_port: int | None = None  # a worker's /readyz and /metrics
    cleanup: list[Path] = field(default_factory=list)  # folders removed on stop

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        stop_process(self.process, timeout)
        for path in self.cleanup:
            shutil.rmtree(path, ignore_errors=True)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_digest(self, warnings: int = 80, tail: int = 25) -> str:
        """What a failed test report shows of a worker: its warnings and errors, then its last lines."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        alerts = [line[:300] for line in lines if "[WARNING]" in line or "[ERROR]" in line or "Traceback" in line]
        return "\n".join([f"--- {len(alerts)} warning/error lines (last {warnings}) ---", *alerts[-warnings:],
                          f"--- last {tail} lines ---", *(line[:300] for line in lines[-tail:])])


# Every worker the kit started in this process, so a failed test's report can show what they logged.
STARTED: list[Proc] = []


def kill_and_wait_gone(pid: int, what: str, timeout: float = 30.0) -> None:
    """kill -9 ``pid`` and wait until its process is gone (reaped by init: the stack's services run detached)."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} (pid {pid}) still there {timeout}s after SIGKILL")
        time.sleep(0.05)  # polling for the kernel to reap it, within the deadline above


def spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``argv`` in its own session, from the repository root, stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def worker_argv(datadir: Path) -> list[str]:
    return [venv_bin("faust"), "--datadir", str(datadir), "-A", "streams.app", "worker", "-l", "info"]


def start_worker(settings: Settings, name: str = "worker", *, new_group: bool = True, for_tests: bool = True,
                 datadir: Path | None = None, log_path: Path | None = None, keep_data: bool = True) -> Proc:
    """``faust -A streams.app worker`` with ``settings``, reading from the earliest uncommitted offset.

    ``new_group`` first commits the group's offsets at the end of every topic it reads, so it neither replays
    earlier sessions' events nor skips any of its own (tools/kafka_admin.py); ``new_group=False`` joins or
    restarts a group where it left off (a second member, a restart after a crash). Faust's data folder goes under
    ``.stack/faust`` unless ``datadir`` says otherwise (removed on stop unless ``keep_data``). ``for_tests``: in
    development mode, and reading the keys PipelineClient.upload makes as well as the API's.
    """
    settings = settings.model_copy(update={"kafka_auto_offset_reset": "earliest"})
    if for_tests:
        settings = settings.model_copy(update={"app_env": "development"})
        if settings.upload_key_pattern == DEFAULT_KEY_PATTERN:
            settings = settings.model_copy(update={"upload_key_pattern": TEST_KEY_PATTERN})
    if new_group:
        start_group_at_end_blocking(settings)
    datadir = datadir or STACK_DIR / "faust" / settings.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    log_path = log_path or LOG_DIR / f"{name}-{settings.app_id}.log"
    process = spawn(worker_argv(datadir), log_path, settings_env(settings))
    worker = Proc(name, process, log_path, settings.worker_web_port, [] if keep_data else [datadir])
    STARTED.append(worker)
    return worker


def start_api(settings: Settings, log_path: Path) -> Proc:
    return Proc("api", spawn([sys.executable, "-m", "api"], log_path, settings_env(settings)), log_path)


# --- long-lived processes with pid files next to the stack's own (scripts/stack.sh down stops them) ------------


def _alive(pid: int, pattern: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return pattern in cmdline


def running_pid(name: str, pattern: str) -> int | None:
    try:
        pid = int((RUN_DIR / f"{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid, pattern) else None


def start_detached(name: str, argv: list[str], pattern: str, env: dict[str, str] | None = None) -> tuple[int, bool]:
    """Start ``argv`` with a pid file unless it already runs; returns (pid, started_now)."""
    pid = running_pid(name, pattern)
    if pid is not None:
        return pid, False
    process = spawn(argv, LOG_DIR / f"{name}.log", env)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    (RUN_DIR / f"{name}.pid").write_text(f"{process.pid}\n")
    return process.pid, True
