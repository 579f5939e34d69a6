"""
Real processes for statd's tests: C{twistd -n statd}, rpcbind, rpc.statd,
sm-notify; each started by the test and stopped by pid at its end.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

from sysmon.rpc import message as m
from sysmon.rpc.xdr import Packer, Unpacker
from sysmon.statd import nsm
from sysmon.testing import Namespace, TwistdChild, freePort, stopProcess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWISTD = "from twisted.scripts.twistd import run; run()"


def rpcCall(port: int, proc: int, args: bytes = b"", prog: int = nsm.PROG, vers: int = nsm.VERS,
            timeout: float = 5.0, host: str = "127.0.0.1") -> m.Reply:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(m.encodeCall(77, prog, vers, proc, args), (host, port))
        return m.decodeReply(s.recv(65536))


def smStat(port: int, timeout: float = 5.0) -> int:
    reply = rpcCall(port, nsm.STAT, Packer().string(b"localhost").bytes(), timeout=timeout)
    u = Unpacker(reply.results)
    u.int()
    return u.int()


stop = stopProcess


class Statd(TwistdChild):
    """
    C{twistd -n statd} in a child process.
    """

    def __init__(self, case, stateFile: str, *args: str, port: int | None = None,  # type: ignore[no-untyped-def]
                 addr: str = "127.0.0.1"):
        super().__init__(case, ROOT)
        self.addr = addr
        self.stateFile = stateFile
        self.args = list(args)
        self.port = port or freePort()

    def start(self, wait: bool = True) -> Statd:
        self.spawn("statd", "--port", str(self.port), "--addr", self.addr,
                   "--state-file", self.stateFile, "--name", "test.example.org", *self.args)
        assert self.process is not None
        if wait:
            deadline = time.monotonic() + 30
            while True:
                try:
                    self.state = smStat(self.port, timeout=0.2)
                    break
                except OSError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(f"statd did not start:\n{self.log()}")
        return self


def need(case, *programs: str) -> None:  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        raise case.skipTest("the real NFS peers need root")
    for program in programs:
        if shutil.which(program) is None:
            raise case.skipTest(f"{program} is not installed (Debian rpcbind / nfs-common)")


class Rpcbind:
    """
    C{rpcbind -w -f}, stopped by pid; its warm-start files removed.
    """

    def __init__(self, case) -> None:  # type: ignore[no-untyped-def]
        need(case, "rpcbind", "rpcinfo")
        if _listening(111):
            raise case.skipTest("something already listens on port 111")
        os.makedirs("/run/rpcbind", exist_ok=True)
        self.process = subprocess.Popen(["rpcbind", "-w", "-f"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        case.addCleanup(self.stop)
        deadline = time.monotonic() + 10
        while not _listening(111):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError("rpcbind did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        stop(self.process)
        for name in ("portmap.xdr", "rpcbind.xdr"):
            try:
                os.unlink(os.path.join("/run/rpcbind", name))
            except FileNotFoundError:
                pass


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


