"""Start the worker and the API as background processes with pid files next to the stack's own.

``scripts/stack.sh down`` stops them by the same pid files.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from models.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
STACK_DIR = Path(os.environ.get("STACK_DIR", ROOT / ".stack"))
RUN_DIR = STACK_DIR / "run"
LOG_DIR = STACK_DIR / "logs"


def _alive(pid: int, pattern: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return pattern in cmdline


def running_pid(name: str, pattern: str) -> int | None:
    pid_file = RUN_DIR / f"{name}.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid, pattern) else None


def start(name: str, argv: list[str], pattern: str, env: dict[str, str] | None = None) -> tuple[int, bool]:
    """Start ``argv`` detached unless it already runs; returns (pid, started_now)."""
    pid = running_pid(name, pattern)
    if pid is not None:
        return pid, False
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with (LOG_DIR / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    (RUN_DIR / f"{name}.pid").write_text(f"{process.pid}\n")
    return process.pid, True


def venv_bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
