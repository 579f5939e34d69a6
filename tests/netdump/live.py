"""
Real processes for netdump's integration tests: a C{twistd -n netdump}
server and C{netdump-sim} clients, started by the test and stopped by pid
at its end, even when it fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TWISTD = "import sys; from twisted.scripts.twistd import run; run()"


def freeUDPPort(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LiveServer:
    """
    C{twistd -n netdump} in a child process.
    """

    def __init__(self, case, dumpdir: str, *args: str, port: int | None = None):  # type: ignore[no-untyped-def]
        self.case = case
        self.dumpdir = dumpdir
        self.args = list(args)
        self.port = port or freeUDPPort()
        self.logfile = os.path.abspath(case.mktemp()) + ".log"
        self.process: subprocess.Popen | None = None
        case.addCleanup(self.stop)

    def start(self, timeout: float = 30) -> LiveServer:
        argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", f"--logfile={self.logfile}",
                "netdump", "--port", str(self.port), "--addr", "127.0.0.1",
                "--dumpdir", self.dumpdir, "--config", os.devnull, *self.args]
        self.process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        self.waitLog("netdump listening on", timeout, start=self._size())
        return self

    def _size(self) -> int:
        try:
            return os.path.getsize(self.logfile)
        except OSError:
            return 0

    def log(self) -> str:
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def waitLog(self, text: str, timeout: float = 60, start: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log()[start:]:
                return
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"the server exited ({self.process.returncode}):\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the server log after {timeout}s:\n{self.log()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(15)


class Sim:
    """
    A C{netdump-sim} client process.
    """

    def __init__(self, case, server: LiveServer, *args: str, bind: str = "127.0.0.1"):  # type: ignore[no-untyped-def]
        self.args = ["--server", "127.0.0.1", "--port", str(server.port), "--bind", bind,
                     "--no-progress", *args]
        self.bind = bind
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sysmon.netdump.sim", *self.args], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        case.addCleanup(self.stop)

    def wait(self, timeout: float = 300) -> int:
        assert self.process is not None
        self.out, self.err = self.process.communicate(timeout=timeout)
        return self.process.returncode

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(15)


def simVerify(directory: str, *args: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "sysmon.netdump.sim", "--no-progress",
                           *args, "--verify", directory], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr
