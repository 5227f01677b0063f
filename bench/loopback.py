"""The real service as a subprocess on 127.0.0.1, and small timed HTTP helpers to measure it.

Only the standard library talks HTTP here (``http.client``), so the measured latency is the service's
plus a thin client, not a client library's connection pooling. Every loop is bounded twice: by a count
and by a deadline, so a hung server ends the benchmark with a clear error instead of hanging it.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench.datasets import REPO_ROOT

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(
    env: dict[str, str], log_path: Path, ready_timeout: float = 120.0
) -> Iterator[tuple[int, int]]:
    """Start uvicorn on a free loopback port; yield (port, pid) once /readyz answers 200; stop it after."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:create_app",
        "--factory",
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, **env}, stdout=log, stderr=log)
        try:
            _wait_ready(port, process, ready_timeout, log_path)
            yield port, process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{_tail(log_path)}")
        try:
            if call(port, "GET", "/readyz", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the server was not ready after {timeout:.0f} s:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
    connection: http.client.HTTPConnection | None = None,
) -> tuple[int, bytes, float]:
    """One request: (status, body, seconds from sending to the last byte)."""
    conn = connection or http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        started = time.perf_counter()
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        payload = response.read()
        return response.status, payload, time.perf_counter() - started
    finally:
        if connection is None:
            conn.close()


def download(port: int, path: str, timeout: float) -> dict[str, Any]:
    """Stream a GET body in 1 MiB reads, counting lines, without holding it: (status, rows, timings)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        started = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"GET {path} answered {response.status}: {response.read()[:300]!r}")
        lines, size, first_byte = 0, 0, None
        while chunk := response.read(1 << 20):
            first_byte = first_byte if first_byte is not None else time.perf_counter() - started
            lines += chunk.count(b"\n")
            size += len(chunk)
        seconds = time.perf_counter() - started
    finally:
        conn.close()
    rows = lines - 1  # the header line
    return {
        "rows": rows,
        "mib": size / 2**20,
        "seconds": seconds,
        "first_byte_s": first_byte,
        "rows_per_s": rows / seconds,
    }


def latencies(
    port: int, requests: int, clients: int, method: str, path: str, body: bytes | None, deadline_s: float
) -> dict[str, Any]:
    """``requests`` calls spread over ``clients`` threads (one keep-alive connection each); p50/p95 in ms."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    stop_at = time.monotonic() + deadline_s
    counter = iter(range(requests))
    lock = threading.Lock()

    def client() -> list[float]:
        conn = http.client.HTTPConnection(HOST, port, timeout=deadline_s)
        times = []
        try:
            while time.monotonic() < stop_at:
                with lock:
                    if next(counter, None) is None:
                        break
                status, payload, seconds = call(port, method, path, body, headers, connection=conn)
                if status != 200:
                    raise RuntimeError(f"{method} {path} answered {status}: {payload[:300]!r}")
                times.append(seconds)
        finally:
            conn.close()
        return times

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        times = [t for result in pool.map(lambda _: client(), range(clients)) for t in result]
    wall = time.monotonic() - started
    return {**summarise_ms(times), "clients": clients, "requests_per_s": len(times) / wall, "wall_s": wall}


def summarise_ms(seconds: list[float]) -> dict[str, Any]:
    if not seconds:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}
    ms = 1000 * np.asarray(seconds)
    return {
        "n": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "max_ms": float(ms.max()),
    }


def proc_status_kib(pid: int, field: str) -> int | None:
    """A ``/proc/<pid>/status`` memory field (VmRSS, VmHWM) in KiB; None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Samples a process's VmRSS in a background thread while a block runs."""

    def __init__(self, pid: int, interval_s: float = 0.1):
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        value = proc_status_kib(self.pid, "VmRSS")
        if value is not None:
            self.samples.append(value)

    def summary(self) -> dict[str, Any]:
        start, peak = self.samples[0], max(self.samples)
        return {"start_mib": start / 1024, "peak_mib": peak / 1024, "growth_mib": (peak - start) / 1024}


def probe_while(
    port: int, path: str, interval_s: float, max_seconds: float, still_running: Callable[[], bool]
) -> list[float]:
    """Time GET ``path`` every ``interval_s`` while ``still_running()`` holds, for at most ``max_seconds``."""
    times: list[float] = []
    stop_at = time.monotonic() + max_seconds
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        while time.monotonic() < stop_at and still_running():
            status, _, seconds = call(port, "GET", path, connection=conn)
            if status == 200:
                times.append(seconds)
            time.sleep(interval_s)
    finally:
        conn.close()
    return times
