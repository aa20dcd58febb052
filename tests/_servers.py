"""Real HTTP servers for the FastAPI tests: uvicorn in a subprocess, or in a background thread.

Everything listens on 127.0.0.1 only, on a port the OS hands out.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
START_TIMEOUT = 30.0

T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for(probe: Callable[[], T | None], timeout: float = 15.0, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds.

    Used to wait for the server's background writer, never to assert on how long anything took.
    """
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout:.0f}s (last value {value!r})")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


class UvicornProcess:
    """``python -m uvicorn <app>`` in a subprocess, with its own store file."""

    def __init__(self, app: str, store: str, log_path: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.store = store
        self.log_path = log_path
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEDUCK_")}
        full_env["TRACEDUCK_STORE"] = store
        full_env.update(env or {})
        self._log = open(log_path, "wb")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", app, "--host", HOST, "--port", str(self.port),
             "--log-level", "warning"],
            cwd=str(REPO), env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            self._wait_until_serving()
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        self._log.flush()
        return Path(self.log_path).read_text(errors="replace")

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"uvicorn exited with {self.proc.returncode}:\n{self.log()}")
            try:
                httpx.get(self.base_url + "/openapi.json", timeout=2.0)
                return
            except httpx.TransportError:
                pass
            if time.monotonic() >= deadline:
                raise AssertionError(f"uvicorn did not answer within {START_TIMEOUT:.0f}s:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


class ThreadedServer:
    """An ASGI app served by uvicorn from a background thread of this process."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        config = uvicorn.Config(app, host=HOST, port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.server.started:
            if not self.thread.is_alive():
                raise AssertionError("uvicorn thread exited before serving")
            if time.monotonic() >= deadline:
                raise AssertionError(f"uvicorn thread did not start within {START_TIMEOUT:.0f}s")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
