"""Helpers for the service tests: a fake predictor, uvicorn in a thread, ``medfuse serve`` in a subprocess.

Every server listens on 127.0.0.1 only, on a port the OS picks.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from medfuse import __version__

TOKEN = "test-token-5f2a9c"
LABELS = ["chf", "pneumonia", "aki"]


def record(rid: str | int = "adm-1", labs: int = 3, note: str = "shortness of breath") -> dict:
    """A small valid record: ``labs`` creatinine results and a note with two allowed sections."""
    return {"id": rid, "admittime": "2150-01-01T08:00:00",
            "labs": [{"test": 50912, "value": 1.0 + 0.1 * i, "unit": "mg/dL", "time": f"2150-01-01T{9 + i % 12:02d}:00:00"}
                     for i in range(labs)],
            "note": f"Chief Complaint:\n{note}\n\nHistory of Present Illness:\n67 year old woman with {note}.\n"}


class FakePredictor:
    """The predictor's interface without a model: probabilities from the lab count, every call recorded.

    ``gate`` (a threading.Event) makes ``predict`` wait until it is set; a record whose id is ``poison`` raises
    an error whose message quotes that id.
    """

    version = f"{__version__}+fake0000abcd"
    label_names = LABELS

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None):
        self.delay, self.gate = delay, gate
        self.calls: list[tuple[int, bool, int]] = []  # (records, explain, thread id)
        self.warm_ups = 0
        self.entered = threading.Event()

    def card(self) -> dict:
        return {"model_version": self.version, "labels": self.label_names, "intended_use": "tests only"}

    def predict(self, records: list, explain: bool = False) -> list[dict]:
        if records[0].id == "warm-up":  # the service's warm-up call, before it says ready: not held, not counted
            self.warm_ups += 1
        else:
            self.calls.append((len(records), explain, threading.get_ident()))
            self.entered.set()
            if self.gate is not None:
                self.gate.wait(30)
            time.sleep(self.delay)
        if bad := [r.id for r in records if r.id == "poison"]:
            raise ValueError(f"cannot predict record {bad[0]}")
        out = []
        for r in records:
            p = {name: 1 / (1 + math.exp(-(len(r.labs) - 2 - k))) for k, name in enumerate(self.label_names)}
            out.append({"id": r.id, "admittime": r.admittime, "probabilities": p,
                        "decisions": {n: v >= 0.5 for n, v in p.items()}, "model_version": self.version,
                        "warnings": []} | ({"explanations": {"labs": len(r.labs)}} if explain else {}))
        return out


class Served:
    """A running service: its base URL, its token and its log so far."""

    def __init__(self, url: str, token: str | None, log):
        self.url, self.token, self._log = url, token, log

    def client(self, auth: bool = True) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if auth and self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def log(self) -> str:
        return self._log()

    def sync_log(self) -> str:
        """The log once everything before this call has been written (a marked /healthz request is logged last)."""
        with self.client() as c:
            before = self.log().count("GET /healthz 200")
            c.get("/healthz")
            deadline = time.monotonic() + 10
            while self.log().count("GET /healthz 200") <= before and time.monotonic() < deadline:
                time.sleep(0.02)
        return self.log()


@contextmanager
def in_process(app, token: str | None = TOKEN):
    """``app`` under uvicorn in a thread on 127.0.0.1; yields ``(Served, server)``; medfuse logs are captured
    through the service's redaction filter."""
    import uvicorn

    from medfuse.serving.service import RedactExceptions

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactExceptions())
    loggers = [logging.getLogger(n) for n in ("medfuse", "uvicorn")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, timeout_graceful_shutdown=10))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield Served(f"http://127.0.0.1:{sock.getsockname()[1]}", token, stream.getvalue), server
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


class ServiceProcess:
    """``python -m medfuse.cli serve BUNDLE --port 0 ARGS`` with its output collected line by line."""

    def __init__(self, bundle: Path, *args: str, token: str | None = TOKEN):
        env = {k: v for k, v in os.environ.items() if k != "MEDFUSE_API_TOKEN"}
        env.update({"MEDFUSE_API_TOKEN": token} if token else {})
        self.token = token
        self.proc = subprocess.Popen([sys.executable, "-m", "medfuse.cli", "serve", str(bundle), "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self.port: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if self.port is None and (m := re.search(r"running on http://127\.0\.0\.1:(\d+)", line)):
                self.port = int(m.group(1))

    def log(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, timeout: float = 180) -> Served:
        """Wait for the port, then for ``/readyz`` to answer 200."""
        deadline = time.monotonic() + timeout
        while self.port is None:
            assert self.proc.poll() is None and time.monotonic() < deadline, f"no server started:\n{self.log()}"
            time.sleep(0.05)
        served = Served(f"http://127.0.0.1:{self.port}", self.token, self.log)
        with served.client() as c:
            while c.get("/readyz").status_code != 200:
                assert self.proc.poll() is None and time.monotonic() < deadline, f"never ready:\n{self.log()}"
                time.sleep(0.1)
        return served

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit status (killed after ``timeout`` seconds)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._reader.join(5)
        return rc
