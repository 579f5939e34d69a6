"""
Real processes for netdump's integration tests: a C{twistd -n netdump}
server and C{netdump-sim} clients, started by the test and stopped by pid
at its end, even when it fails.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sysmon.testing import TwistdChild


def freeUDPPort(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LiveServer(TwistdChild):
    """
    C{twistd -n netdump} in a child process.
    """

    def __init__(self, case, dumpdir: str, *args: str, port: int | None = None):  # type: ignore[no-untyped-def]
        super().__init__(case, ROOT)
        self.dumpdir = dumpdir
        self.args = list(args)
        self.port = port or freeUDPPort()

    def start(self, timeout: float = 30) -> LiveServer:
        start = self.logSize()
        self.spawn("netdump", "--port", str(self.port), "--addr", "127.0.0.1",
                   "--dumpdir", self.dumpdir, "--config", os.devnull, *self.args)
        self.waitLog("netdump listening on", timeout, start=start)
        return self


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
