"""
An in-process netdump test bench: a L{NetdumpServer} on a fake reactor,
wired to emulated clients (L{SimClient}) by function calls instead of
sockets, with a clock the test advances.
"""

from __future__ import annotations

import os
import random
from typing import Any, Callable

from twisted.internet import defer

from sysmon.children import ChildRunner
from sysmon.netdump.protocol import NetdumpProtocol
from sysmon.netdump.server import NetdumpServer, ServerSettings
from sysmon.netdump.sim import MACHINES, Memory, SimClient, defaultHoles
from sysmon.netdump.store import DumpStore, PageWriter
from sysmon.testing import FakeReactor, RecordingDatagramTransport


class Client:
    """
    One emulated machine: its addresses, its L{SimClient}, whether it is
    switched on.
    """

    def __init__(self, ip: str, sim: SimClient, port: int = 6666, logPort: int = 6664):
        self.ip = ip
        self.port = port
        self.logPort = logPort
        self.sim = sim
        self.alive = True
        self.lossy: Callable[[bytes], bool] | None = None


def makeSim(machine: str = "x86_64", memory: int = 2 * 2**20, pageSize: int = 4096,
            holes: list[tuple[int, int]] | None = None, zeroFraction: float = 0.1,
            seed: int = 7, protocol: int = 5, magic: int = 0x1111111111111111,
            drop: float = 0.0, legacy: bool = False) -> SimClient:
    em, pageOffset, task = MACHINES[machine]
    nr = memory // pageSize
    mem = Memory(nr, pageSize, defaultHoles(memory, pageSize) if holes is None else holes,
                 zeroFraction, seed)
    return SimClient(mem, em, protocol, magic, legacy, drop, random.Random(seed),
                     pageOffset=pageOffset, taskStruct=task)


class Bench:
    """
    A server and its clients.

    @ivar scriptExits: script name -> exit code given to it when it runs;
        a name missing here leaves the fake child running (the test ends it).
    """

    def __init__(self, root: str, settings: ServerSettings | None = None,
                 freeSpace: Callable[[str], int] | None = None, reactor: FakeReactor | None = None):
        self.root = root
        self.reactor = reactor or FakeReactor()
        self.signals: list[tuple[int, int]] = []
        self.runner = ChildRunner(self.reactor, killGrace=1,
                                  killpg=lambda p, s: self.signals.append((p, s)),
                                  kill=lambda p, s: self.signals.append((p, s)))
        self.store = DumpStore(root)
        self.settings = settings or ServerSettings(window=8, timeout=1.0, retries=5,
                                                   secure=False, quiet=0.5)
        self.server = NetdumpServer(
            self.store, self.settings, reactor=self.reactor, runner=self.runner,
            freeSpace=freeSpace, deferToThread=lambda f, *a: defer.maybeDeferred(f, *a),
            writer=PageWriter(self.reactor, threaded=False),
        )
        self.protocol = NetdumpProtocol(self.server)
        self.transport = RecordingDatagramTransport("0.0.0.0", 6666, self.protocol)
        self.protocol.makeConnection(self.transport)
        self.clients: dict[str, Client] = {}
        self.scriptExits: dict[str, int] = {}
        self.scriptRuns: list[list[str]] = []
        self.undelivered: list[tuple[bytes, tuple[str, int]]] = []
        #: every datagram the server sent, in order
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def start(self) -> None:
        self.server.start(self.protocol.send)

    def add(self, ip: str, sim: SimClient | None = None, **kw: Any) -> Client:
        client = Client(ip, sim or makeSim(**kw))
        self.clients[ip] = client
        return client

    def deliver(self, data: bytes, addr: tuple[str, int]) -> None:
        """
        A datagram arrives at the server from C{addr}.
        """
        self.protocol.datagramReceived(data, addr)

    def bootLog(self, client: Client, text: bytes) -> None:
        for chunk in client.sim.logChunks(text):
            self.deliver(chunk, (client.ip, client.logPort))

    def crash(self, client: Client) -> None:
        """
        The client announces its crash (once; it repeats when pumped).
        """
        self.deliver(client.sim.start(), (client.ip, client.port))

    def pump(self, until: Callable[[], bool] | None = None) -> int:
        """
        Carry every request the server sent to its client and the answers
        back, until the traffic stops (or C{until()} holds between two
        rounds).  Returns how many datagrams moved.
        """
        moved = 0
        while True:
            self._scripts()
            if until is not None and until():
                return moved
            batch = self.transport.pop()
            if not batch:
                return moved
            self.sent.extend(batch)
            for data, (ip, port) in batch:
                moved += 1
                client = self.clients.get(ip)
                if client is None or not client.alive or port != client.port:
                    self.undelivered.append((data, (ip, port)))
                    continue
                replies, logs = client.sim.handle(data)
                for chunk in logs:
                    self.deliver(chunk, (ip, client.logPort))
                for reply in replies:
                    if client.lossy is not None and client.lossy(reply):
                        continue
                    self.deliver(reply, (ip, client.port))

    def _scripts(self) -> None:
        for process in self.reactor.processes:
            if process.ended or getattr(process, "seen", False):
                continue
            process.seen = True  # type: ignore[attr-defined]
            argv = process.args[1:]
            self.scriptRuns.append([os.path.basename(argv[0])] + argv[1:])
            code = self.scriptExits.get(os.path.basename(argv[0]))
            if code is not None:
                process.exit(code)

    def run(self, until: Callable[[], bool], step: float = 0.25, limit: float = 600.0) -> None:
        """
        Pump and advance the clock until C{until()} holds; clients without
        an ACK announce themselves every second, as the kernel does.
        """
        elapsed = 0.0
        nextStart = 0.0
        while True:
            if elapsed >= nextStart:
                for client in self.clients.values():
                    if client.alive and not client.sim.acked and getattr(client, "crashed", False):
                        self.crash(client)
                nextStart += 1.0
            self.pump(until)
            if until():
                return
            if elapsed > limit:
                raise AssertionError(f"condition not reached in {limit} clock seconds")
            self.reactor.advance(step)
            elapsed += step

    def crashAll(self, *clients: Client) -> None:
        for client in clients:
            client.crashed = True  # type: ignore[attr-defined]

    def idle(self) -> bool:
        return not self.server.sessions

    def crashDirs(self, ip: str) -> list[str]:
        return sorted(
            os.path.join(self.root, name) for name in os.listdir(self.root)
            if name.startswith(ip + "-")
        )

    def writeScript(self, name: str, body: str = "exit 0\n", mode: int = 0o755) -> str:
        scripts = os.path.join(self.root, "scripts")
        os.makedirs(scripts, exist_ok=True)
        path = os.path.join(scripts, name)
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + body)
        os.chmod(path, mode)
        return path
