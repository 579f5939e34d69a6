"""
Test helpers that the tests of several daemons use (public, as treq's
C{treq.testing} is): a datagram transport that records what is written, a
fake reactor (a L{MemoryReactorClock} that also records C{listenUDP},
C{listenMulticast} and C{spawnProcess}), a fake child process the test ends
when it likes, and fixture C{/proc} trees.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal as _signal
import socket
import subprocess
import sys
import time
from typing import Any, Iterable, Mapping, Sequence

import attrs
from twisted.internet import defer, error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

__all__ = [
    "TwistdChild",
    "stopProcess",
    "ProcessUsage",
    "processUsage",
    "FakeProcess",
    "FakeReactor",
    "ProcTree",
    "RecordingDatagramTransport",
]


def _address(kind: str, host: str, port: int) -> IPv4Address | IPv6Address:
    if ":" in host:
        return IPv6Address(kind, host, port)
    return IPv4Address(kind, host or "0.0.0.0", port)


class RecordingDatagramTransport:
    """
    A UDP (and multicast) transport that records every datagram written.

    @ivar written: C{(data, (host, port))} pairs in write order.
    @ivar groups: multicast groups joined, as C{(group, interface)}.
    @ivar listening: L{False} once C{stopListening} was called.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, protocol: Any = None):
        self.host = host
        self.port = port
        self.protocol = protocol
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.groups: set[tuple[str, str]] = set()
        self.listening = True
        self.ttl = 1
        self.loopback = 1
        self.outgoingInterface = ""
        self.connectedTo: tuple[str, int] | None = None

    def write(self, data: bytes, addr: tuple[str, int] | None = None) -> None:
        if not isinstance(data, bytes):
            raise TypeError(f"datagrams are bytes, not {type(data).__name__}")
        if addr is None:
            if self.connectedTo is None:
                raise ValueError("write without an address on an unconnected transport")
            addr = self.connectedTo
        self.written.append((data, tuple(addr)))  # type: ignore[arg-type]

    def connect(self, host: str, port: int) -> None:
        self.connectedTo = (host, port)

    def pop(self) -> list[tuple[bytes, tuple[str, int]]]:
        """
        Return what was written since the last C{pop} and forget it.
        """
        written, self.written = self.written, []
        return written

    def getHost(self) -> IPv4Address | IPv6Address:
        return _address("UDP", self.host, self.port)

    def stopListening(self) -> defer.Deferred[None]:
        if self.listening:
            self.listening = False
            if self.protocol is not None:
                self.protocol.doStop()
        return defer.succeed(None)

    loseConnection = stopListening

    # IMulticastTransport
    def joinGroup(self, addr: str, interface: str = "") -> defer.Deferred[int]:
        self.groups.add((addr, interface))
        return defer.succeed(1)

    def leaveGroup(self, addr: str, interface: str = "") -> defer.Deferred[int]:
        self.groups.discard((addr, interface))
        return defer.succeed(1)

    def setTTL(self, ttl: int) -> None:
        self.ttl = ttl

    def getTTL(self) -> int:
        return self.ttl

    def setLoopbackMode(self, mode: int) -> None:
        self.loopback = mode

    def getLoopbackMode(self) -> int:
        return self.loopback

    def setOutgoingInterface(self, addr: str) -> defer.Deferred[int]:
        self.outgoingInterface = addr
        return defer.succeed(1)

    def getOutgoingInterface(self) -> str:
        return self.outgoingInterface


class FakeProcess:
    """
    The transport of a child "started" by L{FakeReactor.spawnProcess}.  The
    test drives it: L{output}, L{exit}, L{die}.

    @ivar signals: the signals sent with C{signalProcess}, as given.
    @ivar written: bytes written to the child's stdin.
    """

    def __init__(self, protocol: Any, pid: int, executable: str, args: Sequence[str], **kw: Any):
        self.proto = protocol
        self.pid: int | None = pid
        self.executable = executable
        self.args = list(args)
        self.env = kw.get("env")
        self.path = kw.get("path")
        self.uid = kw.get("uid")
        self.gid = kw.get("gid")
        self.childFDs = kw.get("childFDs")
        self.signals: list[str | int] = []
        self.written = b""
        self.stdinClosed = False
        self.ended = False

    def signalProcess(self, signalID: str | int) -> None:
        if self.ended:
            raise error.ProcessExitedAlready()
        self.signals.append(signalID)

    def writeToChild(self, childFD: int, data: bytes) -> None:
        self.written += data

    def write(self, data: bytes) -> None:
        self.written += data

    def closeStdin(self) -> None:
        self.stdinClosed = True

    def closeChildFD(self, childFD: int) -> None:
        if childFD == 0:
            self.stdinClosed = True

    def loseConnection(self) -> None:
        self.closeStdin()

    def output(self, data: bytes, fd: int = 1) -> None:
        """
        The child writes C{data} to its file descriptor C{fd}.
        """
        self.proto.childDataReceived(fd, data)

    def exit(self, code: int = 0) -> None:
        """
        The child exits with status C{code}.
        """
        if code == 0:
            reason: Failure = Failure(error.ProcessDone(0))
        else:
            reason = Failure(error.ProcessTerminated(exitCode=code))
        self._end(reason)

    def die(self, signum: int = _signal.SIGKILL) -> None:
        """
        The child is killed by C{signum}.
        """
        self._end(Failure(error.ProcessTerminated(signal=signum)))

    def _end(self, reason: Failure) -> None:
        if self.ended:
            raise RuntimeError("the fake process has already ended")
        self.ended = True
        self.pid = None
        self.proto.processExited(reason)
        self.proto.processEnded(reason)


@attrs.define
class UDPListen:
    """
    One recorded C{listenUDP} or C{listenMulticast} call.
    """

    port: int
    protocol: Any
    interface: str
    maxPacketSize: int
    transport: RecordingDatagramTransport
    multicast: bool = False
    listenMultiple: bool = False


class FakeReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} (C{callLater} driven by C{advance}; TCP and UNIX
    listens recorded by the base class) that also records UDP and multicast
    listens and child processes.

    @ivar udp: every L{UDPListen}, in call order.
    @ivar processes: every L{FakeProcess} spawned, in order.
    @ivar failListen: a port number whose listen raises
        L{error.CannotListenError} (to test bind failures).
    """

    def __init__(self) -> None:
        super().__init__()
        self.udp: list[UDPListen] = []
        self.processes: list[FakeProcess] = []
        self.failListen: int | None = None
        self._pids = itertools.count(10000)
        self._ephemeral = itertools.count(40000)

    def _listen(self, multicast: bool, port: int, protocol: Any, interface: str,
                maxPacketSize: int, listenMultiple: bool = False) -> RecordingDatagramTransport:
        if self.failListen is not None and port == self.failListen:
            raise error.CannotListenError(interface, port, OSError(98, "Address already in use"))
        bound = port or next(self._ephemeral)
        transport = RecordingDatagramTransport(interface or "0.0.0.0", bound, protocol)
        self.udp.append(
            UDPListen(port, protocol, interface, maxPacketSize, transport, multicast, listenMultiple)
        )
        protocol.makeConnection(transport)
        return transport

    def listenUDP(self, port: int, protocol: Any, interface: str = "",
                  maxPacketSize: int = 8192) -> RecordingDatagramTransport:
        return self._listen(False, port, protocol, interface, maxPacketSize)

    def listenMulticast(self, port: int, protocol: Any, interface: str = "",
                        maxPacketSize: int = 8192,
                        listenMultiple: bool = False) -> RecordingDatagramTransport:
        return self._listen(True, port, protocol, interface, maxPacketSize, listenMultiple)

    def spawnProcess(self, processProtocol: Any, executable: str, args: Sequence[str] = (),
                     env: Mapping[str, str] | None = None, path: str | None = None,
                     uid: int | None = None, gid: int | None = None, usePTY: bool = False,
                     childFDs: Mapping[int, Any] | None = None) -> FakeProcess:
        process = FakeProcess(
            processProtocol, next(self._pids), executable, args,
            env=env, path=path, uid=uid, gid=gid, childFDs=childFDs,
        )
        self.processes.append(process)
        processProtocol.makeConnection(process)
        return process


# -- real daemons in child processes (integration tests) ------------------------


def stopProcess(process: subprocess.Popen | None, grace: float = 15) -> None:
    """
    SIGTERM a child process, SIGKILL it if it is still there after C{grace}
    seconds, and reap it.
    """
    if process is None or process.poll() is not None:
        return
    process.send_signal(_signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(grace)


class TwistdChild:
    """
    C{twistd -n <plugin> ...} in a child process, logging to a file; stopped
    by pid when the test ends, even when it fails.

    @ivar process: the L{subprocess.Popen}, once started.
    @ivar logfile: where twistd logs.
    """

    def __init__(self, case: Any, cwd: str) -> None:
        self.cwd = cwd
        self.logfile = os.path.abspath(case.mktemp()) + ".log"
        self.process: subprocess.Popen | None = None
        case.addCleanup(self.stop)

    def spawn(self, plugin: str, *args: str, prefix: Sequence[str] = (),
              env: Mapping[str, str] | None = None,
              python: str = sys.executable) -> subprocess.Popen:
        """
        Start C{twistd -n plugin args}, after C{prefix} (e.g.
        L{Namespace.prefix}, which execs, so the pid stays twistd's).

        @param env: its environment (this process's by default).
        @param python: the interpreter.
        """
        argv = [*prefix, python, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", f"--logfile={self.logfile}", plugin, *args]
        with open(self.logfile + ".stderr", "wb") as stderr:
            self.process = subprocess.Popen(argv, cwd=self.cwd, stdout=subprocess.DEVNULL,
                                            stderr=stderr,
                                            env=None if env is None else dict(env))
        return self.process

    def stderr(self) -> str:
        """
        What the child wrote on its standard error (twistd's own complaints
        before logging starts).
        """
        try:
            with open(self.logfile + ".stderr", encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def logSize(self) -> int:
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
        """
        Wait until C{text} is in the log (after byte C{start}).

        @raise AssertionError: it did not come, or the daemon exited.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log()[start:]:
                return
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"the daemon exited ({self.process.returncode}):\n"
                                     f"{self.log()}{self.stderr()}")
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the log after {timeout}s:\n{self.log()[-3000:]}")

    def kill(self, signum: int = _signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signum)
            self.process.wait(30)

    def stop(self) -> None:
        stopProcess(self.process)


class LogCapture:
    """
    Collects the text of every log event while a test runs (of one logger
    namespace, if given).
    """

    def __init__(self, case: Any, namespace: str | None = None) -> None:
        self.namespace = namespace
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self._observe)
        case.addCleanup(globalLogPublisher.removeObserver, self._observe)

    def _observe(self, event: LogEvent) -> None:
        if self.namespace is None or event.get("log_namespace") == self.namespace:
            self.events.append(event)

    def texts(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def matching(self, fragment: str) -> list[str]:
        return [t for t in self.texts() if fragment in t]

    def has(self, fragment: str) -> bool:
        return any(fragment in t for t in self.texts())

    def count(self, fragment: str) -> int:
        return sum(fragment in t for t in self.texts())


def writeScript(path: str, body: str, mode: int = 0o755) -> str:
    """
    Write a shell script (C{#!/bin/sh} and C{body}) at C{path} with C{mode}.

    @return: C{path}.
    """
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, mode)
    return path


def processAlive(pid: int) -> bool:
    """
    Whether C{pid} is a running (not zombie) process.
    """
    from sysmon import processes

    return processes.state(pid) not in (None, "Z", "X")


def commandLineSoon(pid: int, timeout: float = 5.0) -> tuple[str, ...] | None:
    """
    The command line of a process that was just started.  Whoever starts a
    process has its pid as soon as the exec has begun, but the kernel fills
    in the new command line a moment later (until then it reads as empty):
    wait up to C{timeout} seconds for it.

    @return: the command line, or L{None} if the process has ended.
    """
    from sysmon import processes

    deadline = time.monotonic() + timeout
    while (cmdline := processes.commandLine(pid)) is None and time.monotonic() < deadline:
        if not processAlive(pid):
            return None
        time.sleep(0.001)
    return cmdline


def fakeInitSystem(directory: str) -> tuple[str, str]:
    """
    Stand-ins for C{systemctl} and C{shutdown} that only record their
    arguments (one line each, C{"systemctl reboot"}), in a new directory to
    put first on a daemon's PATH, so that a shutdown it decides reboots
    nothing.

    @return: the directory, and the file the calls are recorded in.
    """
    os.makedirs(directory, exist_ok=True)
    calls = os.path.join(directory, "calls")
    for name in ("systemctl", "shutdown"):
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\n')
        os.chmod(path, 0o755)
    return directory, calls


def freePort() -> int:
    """
    A port number free for both UDP and TCP on 127.0.0.1 just now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        try:
            t.bind(("127.0.0.1", port))
        except OSError:
            pass
        return port


_namespaces = itertools.count()


def _inNamespace(name: str | None, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", name, *argv] if name else list(argv)


class Namespace:
    """
    A network namespace of the test's own joined by a veth pair: a test host
    at C{remote} inside namespace C{name}, reaching the near end at
    C{local} — in this namespace, or, with C{localNamespace}, in a second
    namespace C{localName} so that both ends are isolated (multicast tests).
    Removed at the end of the test; the test is skipped, with the reason,
    where namespaces cannot be made (not root, no C{ip}).
    """

    def __init__(self, case: Any, local: str = "10.203.77.1", remote: str = "10.203.77.2",
                 localNamespace: bool = False) -> None:
        if os.geteuid() != 0:
            raise case.skipTest("network namespaces need root")
        if shutil.which("ip") is None:
            raise case.skipTest("ip (iproute2) is not installed")
        tag = f"{os.getpid() % 100000}{next(_namespaces)}"
        self.name = f"sysmon-t{tag}"
        self.localName = f"sysmon-l{tag}" if localNamespace else None
        self.veth = f"vsm{tag}"
        self.peer = self.veth + "p"
        self.local, self.remote = local, remote
        steps = [["ip", "netns", "add", self.name]]
        if self.localName:
            steps.append(["ip", "netns", "add", self.localName])
        steps += [
            ["ip", "link", "add", self.veth, "type", "veth", "peer", "name", self.peer],
            ["ip", "link", "set", self.peer, "netns", self.name],
        ]
        if self.localName:
            steps.append(["ip", "link", "set", self.veth, "netns", self.localName])
        for where, device, address in ((self.localName, self.veth, local),
                                       (self.name, self.peer, remote)):
            steps += [
                _inNamespace(where, ["ip", "addr", "add", address + "/30", "dev", device]),
                _inNamespace(where, ["ip", "link", "set", device, "up"]),
            ]
            if where:
                steps.append(_inNamespace(where, ["ip", "link", "set", "lo", "up"]))
        case.addCleanup(self.remove)
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                raise case.skipTest(
                    f"cannot make a network namespace here: {done.stderr.strip()}")

    def prefix(self, local: bool = False) -> list[str]:
        """
        The command prefix that runs a program in the far namespace (or in
        the near one, with C{local}; empty when the near end is here).
        """
        return _inNamespace(self.localName if local else self.name, [])

    def run(self, *argv: str, timeout: float = 30, cwd: str | None = None,
            local: bool = False) -> subprocess.CompletedProcess:
        """
        Run a program in the far namespace (or the near one) to its end.
        """
        return subprocess.run(self.prefix(local) + list(argv), capture_output=True,
                              text=True, timeout=timeout, cwd=cwd)

    def remove(self) -> None:
        """
        Delete the pair and the namespaces (processes in them must be gone).
        """
        subprocess.run(_inNamespace(self.localName, ["ip", "link", "del", self.veth]),
                       capture_output=True)
        for name in (self.name, self.localName):
            if name:
                subprocess.run(["ip", "netns", "del", name], capture_output=True)


# -- measuring real processes (benchmarks, soak tests) -------------------------


@attrs.frozen
class ProcessUsage:
    """
    What a running process has used so far.

    @ivar cpu: user + system CPU seconds.
    @ivar rss: resident memory now, in bytes.
    @ivar peakRss: the most resident memory so far (VmHWM), in bytes.
    """

    cpu: float
    rss: int
    peakRss: int


def processUsage(pid: int, proc: str = "/proc") -> ProcessUsage:
    """
    Read C{pid}'s CPU time and memory from C{/proc}.
    """
    from sysmon import processes

    fields = processes.statFields(pid, proc)
    if fields is None:
        raise ProcessLookupError(f"no process {pid} in {proc}")
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    memory = {}
    with open(f"{proc}/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                memory[key] = int(value.split()[0]) * 1024
    return ProcessUsage(cpu, memory.get("VmRSS", 0), memory.get("VmHWM", 0))


# -- fixture /proc trees ---------------------------------------------------------

#: The fields of one /proc/net/dev line after the interface name.
NET_DEV_FIELDS = (
    "rx_bytes", "rx_packets", "rx_errs", "rx_drop", "rx_fifo", "rx_frame",
    "rx_compressed", "rx_multicast", "tx_bytes", "tx_packets", "tx_errs",
    "tx_drop", "tx_fifo", "tx_colls", "tx_carrier", "tx_compressed",
)

#: The fields of one "cpu" line of /proc/stat, in clock ticks.
CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
              "guest", "guest_nice")


class ProcTree:
    """
    Writes a fixture C{/proc} tree under C{root}, in the kernel's formats,
    for code that reads C{/proc} with a configurable root.  Each method
    (re)writes one file, so a test can change the counters between rounds.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(root, exist_ok=True)

    def _write(self, relative: str, text: str) -> str:
        path = os.path.join(self.root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        return path

    @classmethod
    def make(cls, root: str) -> ProcTree:
        """
        A whole tree with plausible values for a 2-CPU machine with lo and eth0.
        """
        tree = cls(root)
        tree.loadavg()
        tree.meminfo()
        tree.stat()
        tree.netdev()
        tree.uptime()
        tree.cpuinfo()
        return tree

    def loadavg(self, one: float = 0.25, five: float = 0.5, fifteen: float = 0.75,
                running: int = 1, total: int = 123, lastPid: int = 4567) -> str:
        return self._write(
            "loadavg", f"{one:.2f} {five:.2f} {fifteen:.2f} {running}/{total} {lastPid}\n"
        )

    def meminfo(self, **kB: int) -> str:
        """
        /proc/meminfo; keyword arguments (in kB) override or add fields, a
        value of C{None} leaves a field out.
        """
        fields: dict[str, int | None] = {
            "MemTotal": 16315240, "MemFree": 8123456, "MemAvailable": 12345678,
            "Buffers": 234567, "Cached": 3456789, "SwapCached": 0,
            "Active": 4567890, "Inactive": 2345678, "SwapTotal": 2097148,
            "SwapFree": 2097148, "Dirty": 128, "Shmem": 65536,
        }
        fields.update(kB)
        lines = [f"{name + ':':<16}{value:>8} kB\n" for name, value in fields.items()
                 if value is not None]
        return self._write("meminfo", "".join(lines))

    def stat(self, cpus: Iterable[Sequence[int]] = ((100, 0, 50, 1000, 5, 0, 1, 0, 0, 0),
                                                    (120, 2, 40, 990, 3, 0, 2, 0, 0, 0)),
             btime: int = 1700000000, running: int = 1, blocked: int = 0) -> str:
        cpus = [list(c) + [0] * (len(CPU_FIELDS) - len(c)) for c in cpus]
        total = [sum(column) for column in zip(*cpus)]
        lines = ["cpu  " + " ".join(map(str, total))]
        lines += [f"cpu{i} " + " ".join(map(str, c)) for i, c in enumerate(cpus)]
        lines += ["intr 123456 0 9 0", "ctxt 987654", f"btime {btime}", "processes 4321",
                  f"procs_running {running}", f"procs_blocked {blocked}",
                  "softirq 1000 0 100 0 0 0 0 0 0 0 0"]
        return self._write("stat", "\n".join(lines) + "\n")

    def netdev(self, interfaces: Mapping[str, Mapping[str, int]] | None = None) -> str:
        """
        /proc/net/dev; C{interfaces} maps a name to counters by
        L{NET_DEV_FIELDS} name (missing ones are 0).
        """
        if interfaces is None:
            interfaces = {
                "lo": {"rx_bytes": 1000, "rx_packets": 10, "tx_bytes": 1000, "tx_packets": 10},
                "eth0": {"rx_bytes": 123456789, "rx_packets": 98765, "tx_bytes": 23456789,
                         "tx_packets": 45678, "rx_errs": 1, "tx_drop": 2},
            }
        lines = [
            "Inter-|   Receive                                                |  Transmit\n",
            " face |bytes    packets errs drop fifo frame compressed multicast"
            "|bytes    packets errs drop fifo colls carrier compressed\n",
        ]
        for name, counters in interfaces.items():
            values = " ".join(f"{counters.get(f, 0):>7}" for f in NET_DEV_FIELDS)
            lines.append(f"{name:>6}: {values}\n")
        return self._write("net/dev", "".join(lines))

    def uptime(self, up: float = 12345.67, idle: float = 23456.78) -> str:
        return self._write("uptime", f"{up:.2f} {idle:.2f}\n")

    def cpuinfo(self, mhz: Sequence[float] = (2400.0, 2400.0),
                model: str = "Fixture CPU @ 2.40GHz") -> str:
        blocks = []
        for i, speed in enumerate(mhz):
            blocks.append(
                f"processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: {model}\n"
                f"cpu MHz\t\t: {speed:.3f}\ncache size\t: 8192 KB\ncpu cores\t: {len(mhz)}\n"
            )
        return self._write("cpuinfo", "\n".join(blocks) + "\n")

    def process(self, pid: int, comm: str = "sleep", state: str = "S", ppid: int = 1,
                starttime: int = 123456, cmdline: Sequence[str] = ("sleep", "1000")) -> str:
        """
        /proc/<pid>/stat and cmdline; C{starttime} is field 22 (clock ticks
        after boot), which the daemons pair with the pid.
        """
        rest = [ppid, pid, pid, 0, -1, 4194304, 100, 0, 0, 0, 5, 3, 0, 0, 20, 0, 1, 0,
                starttime, 12345678, 300]
        self._write(f"{pid}/cmdline", "\0".join(cmdline) + "\0")
        return self._write(f"{pid}/stat", f"{pid} ({comm}) {state} " +
                           " ".join(map(str, rest)) + "\n")

    def removeProcess(self, pid: int) -> None:
        for name in ("stat", "cmdline"):
            try:
                os.unlink(os.path.join(self.root, str(pid), name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(os.path.join(self.root, str(pid)))
        except OSError:
            pass


# -- a throw-away certificate authority for TLS tests ---------------------------

import datetime as _datetime  # noqa: E402
import ipaddress as _ipaddress  # noqa: E402

__all__ += ["TestCA", "makeTestCA"]


def _newKey() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _writePEM(path: str, data: bytes, mode: int) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


def _keyPEM(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certPEM(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _subjectAltNames(hostnames: Iterable[str]) -> list[Any]:
    from cryptography import x509

    names: list[Any] = []
    for name in hostnames:
        try:
            names.append(x509.IPAddress(_ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    return names


@attrs.frozen
class TestCA:
    """
    A certificate authority made for one test, and a server certificate it
    issued: all PEM files in C{directory}.  Two calls of L{makeTestCA} make
    two unrelated authorities (new keys), which is how a test gets "a
    certificate from an unknown CA".

    @ivar directory: where the files are.
    @ivar caCert: the authority's certificate (the trust root to give a
        client).
    @ivar caKey: the authority's private key.
    @ivar serverCert: the server certificate (leaf only).
    @ivar serverKey: its private key (mode 0600).
    @ivar hostnames: the names in the server certificate's
        subjectAltName: DNS names, and IP addresses as IP entries.
    """

    directory: str
    caCert: str
    caKey: str
    serverCert: str
    serverKey: str
    hostnames: tuple[str, ...]

    def issue(self, name: str, hostnames: Sequence[str], *,
              days: int = 30, notBefore: _datetime.datetime | None = None) -> tuple[str, str]:
        """
        Issue another server certificate, e.g. one for the wrong name or an
        expired one.

        @param name: the file name stem: C{<name>.pem} and C{<name>.key}.
        @param hostnames: its subjectAltName entries (DNS names and IPs).
        @param days: how long it is valid.
        @param notBefore: when its validity starts (default: a day ago).
        @return: the paths of the certificate and of its key.
        """
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        with open(self.caCert, "rb") as f:
            caCert = x509.load_pem_x509_certificate(f.read())
        with open(self.caKey, "rb") as f:
            caKey = serialization.load_pem_private_key(f.read(), password=None)
        return _issueServer(self.directory, name, caCert, caKey, tuple(hostnames),
                            days=days, notBefore=notBefore)

    def serverPEM(self) -> bytes:
        """
        The server's key and certificate in one PEM blob, as
        C{twisted.internet.ssl.PrivateCertificate.loadPEM} takes it.
        """
        with open(self.serverKey, "rb") as k, open(self.serverCert, "rb") as c:
            return k.read() + c.read()

    def serverContextFactory(self) -> Any:
        """
        A server-side TLS context factory for C{listenSSL} or C{startTLS}
        that presents the server certificate.
        """
        from twisted.internet import ssl

        return ssl.PrivateCertificate.loadPEM(self.serverPEM()).options()


def _issueServer(directory: str, name: str, caCert: Any, caKey: Any,
                 hostnames: tuple[str, ...], *, days: int = 30,
                 notBefore: _datetime.datetime | None = None) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = _newKey()
    start = notBefore or _datetime.datetime.now(_datetime.timezone.utc) - _datetime.timedelta(days=1)
    common = hostnames[0] if hostnames else name
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)]))
        .issuer_name(caCert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=True, data_encipherment=False,
                          key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                   ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(caKey.public_key()),
            critical=False,
        )
    )
    if hostnames:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(_subjectAltNames(hostnames)), critical=False
        )
    cert = builder.sign(caKey, hashes.SHA256())
    certPath = _writePEM(os.path.join(directory, name + ".pem"), _certPEM(cert), 0o644)
    keyPath = _writePEM(os.path.join(directory, name + ".key"), _keyPEM(key), 0o600)
    return certPath, keyPath


def makeTestCA(directory: str, hostnames: Sequence[str] = ("localhost", "127.0.0.1"), *,
               name: str = "sysmon test CA") -> TestCA:
    """
    Make a new certificate authority and a server certificate for
    C{hostnames}, as PEM files C{ca.pem}, C{ca.key}, C{server.pem} and
    C{server.key} in C{directory} (created if missing).  EC P-256 keys, so it
    is quick.

    @param hostnames: the server certificate's subjectAltName entries; an
        entry that parses as an IPv4 or IPv6 address becomes an IP entry, the
        rest DNS names.
    @param name: the authority's common name.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    os.makedirs(directory, exist_ok=True)
    key = _newKey()
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sysmon tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, name),
    ])
    now = _datetime.datetime.now(_datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _datetime.timedelta(days=1))
        .not_valid_after(now + _datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False,
                          key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    caCert = _writePEM(os.path.join(directory, "ca.pem"), _certPEM(cert), 0o644)
    caKey = _writePEM(os.path.join(directory, "ca.key"), _keyPEM(key), 0o600)
    hostnames = tuple(hostnames)
    serverCert, serverKey = _issueServer(directory, "server", cert, key, hostnames)
    return TestCA(directory, caCert, caKey, serverCert, serverKey, hostnames)
