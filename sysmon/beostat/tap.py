"""
C{twistd recvstats} and C{twistd sendstats}: command lines and services.

The plugin file names L{recvstats} and L{sendstats} below (each carries
its C{Options} and C{makeService}), so both daemons share this module.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import types
from typing import Any

from twisted.logger import Logger
from twisted.python import usage

from sysmon.beostat import recv, shm, wire
from sysmon.beostat.recv import RecvstatsService, RecvstatsSettings
from sysmon.beostat.send import MAX_INTERVAL, MIN_INTERVAL, SendstatsService
from sysmon.directory import DirectoryError
from sysmon.directory.options import DIRECTORY_OPTIONS, chooseDirectory
from sysmon.udp import interfaceAddress

__all__ = ["RecvstatsOptions", "SendstatsOptions", "readKey", "recvstats", "sendstats"]

log = Logger()


def readKey(path: str) -> bytes:
    """
    The shared HMAC key: the file's bytes, without trailing white space.

    @raise usage.UsageError: unreadable or empty, with the path.
    """
    try:
        with open(path, "rb") as f:
            key = f.read().rstrip(b"\r\n\t ")
            mode = os.fstat(f.fileno()).st_mode
    except OSError as e:
        raise usage.UsageError(f"--key-file {path}: {e.strerror}")
    if not key:
        raise usage.UsageError(f"--key-file {path}: the file is empty")
    if mode & stat.S_IROTH:
        log.warn("key file {path} is readable by everyone", path=path)
    return key


def _seconds(low: float, high: float):
    def coerce(text: str) -> float:
        value = float(text)
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g} seconds")
        return value
    coerce.coerceDoc = f"Seconds, {low:g} to {high:g}."
    return coerce


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _interface(options: usage.Options) -> str:
    if not options["interface"]:
        return ""
    try:
        return interfaceAddress(options["interface"])
    except ValueError as e:
        raise usage.UsageError(f"--interface: {e}")


class RecvstatsOptions(usage.Options):
    """
    C{twistd recvstats} options.
    """

    synopsis = "-i INTERFACE [options]"
    longdesc = (
        "Cluster status receiver (the master side of Scyld's beostat).  Receives the nodes' "
        "sendstats reports on one UDP port, both on the multicast group (joined on the "
        "interface given with -i) and unicast, and keeps every node's CPU, memory, load, "
        "network and disk in a shared-memory file that beostat, schedulers and "
        "sysmon.beostat.reader read (docs/beostat-shm.md).  It asks the nodes for updates "
        "at start and every --request-interval seconds; a node is down after 4 of its "
        "intervals without a report.  With --gmond-port it also takes Ganglia gmond 3.x "
        "packets.  This machine itself is node -1."
    )
    optFlags = [
        ["no-multicast", None, "Unicast only: do not join the group or send requests to it."],
    ]
    optParameters = [
        ["interface", "i", None, "Network interface (or its IPv4 address) for the multicast "
                                 "group; it should always be given."],
        ["port", "p", wire.DEFAULT_PORT, "UDP port for status packets.", usage.portCoerce],
        ["bind", None, "", "Address to bind [default: all]."],
        ["group", "g", wire.DEFAULT_GROUP, "Multicast group."],
        ["ttl", None, 1, "TTL of the requests sent to the group.", int],
        ["gmond-port", None, None, "Also take Ganglia gmond packets on this UDP port "
                                   "(gmond uses 8649; default: off)", usage.portCoerce],
        ["key-file", None, None, "Shared HMAC-SHA-256 key: unsigned or badly signed packets "
                                 "are dropped, requests are signed."],
        ["rate", "r", None, "Ask every node to report every RATE seconds",
         _seconds(MIN_INTERVAL, MAX_INTERVAL)],
        ["request-interval", None, 60.0, "Seconds between update requests (0: only at start).",
         _seconds(0, 86400)],
        ["forget", None, 0.0, "Forget a node silent this many seconds (0: never).",
         _seconds(0, 10 ** 9)],
        ["nodes", "N", shm.DEFAULT_SLOTS, "Initial node slots (the file grows).", _positive],
        ["max-cpus", None, shm.DEFAULT_MAX_CPUS, "Per-CPU figures kept per node.", _positive],
        ["max-interfaces", None, shm.DEFAULT_MAX_INTERFACES, "Interfaces kept per node.",
         _positive],
        ["shm", None, None, "The shared-memory file [default: /var/shm/beostat if /var/shm "
                            "exists, else /dev/shm/beostat]."],
        ["hosts", None, None, "Host directory file (conf/hosts format): node numbers for "
                              "senders that do not give one."],
        *DIRECTORY_OPTIONS,
        ["ip-base", None, None, "Otherwise node number = sender address - this address."],
        ["master-interval", None, 5.0, "Seconds between reports of this machine as node -1 "
                                       "(0: do not report it).", _seconds(0, MAX_INTERVAL)],
        ["master-proc", None, "/proc", "/proc of this machine (for tests)."],
    ]

    def postOptions(self) -> None:
        if self["master-interval"] and self["master-interval"] < MIN_INTERVAL:
            raise usage.UsageError(f"--master-interval must be 0 or at least {MIN_INTERVAL}")
        if self["ip-base"]:
            try:
                ipaddress.IPv4Address(self["ip-base"])
            except ValueError:
                raise usage.UsageError(f"--ip-base: {self['ip-base']!r} is not an IPv4 address")
        try:
            self.directory = chooseDirectory(
                self["hosts"], self["directory"], self["directory-config"])
        except DirectoryError as e:
            raise usage.UsageError(str(e))
        address = _interface(self)
        group = None if self["no-multicast"] else self["group"]
        if group is not None:
            try:
                if not ipaddress.IPv4Address(group).is_multicast:
                    raise ValueError
            except ValueError:
                raise usage.UsageError(f"--group: {group!r} is not an IPv4 multicast address")
        self.settings = RecvstatsSettings(
            shm=self["shm"] or shm.defaultPath(), port=self["port"], bind=self["bind"],
            group=group, interfaceAddress=address, ttl=self["ttl"],
            gmondPort=self["gmond-port"],
            key=readKey(self["key-file"]) if self["key-file"] else None, rate=self["rate"],
            requestInterval=self["request-interval"], forget=self["forget"],
            slots=self["nodes"], maxCpus=self["max-cpus"],
            maxInterfaces=self["max-interfaces"], ipBase=self["ip-base"],
            # A number given while LDAP was down is asked for again as often
            # as the directory tries its server.
            directoryRetry=(self.directory.ldap.retry if self.directory.ldap is not None
                            else recv.DIRECTORY_RETRY),
            masterInterval=self["master-interval"], masterProc=self["master-proc"])


def makeRecvstatsService(options: RecvstatsOptions, reactor: Any = None) -> RecvstatsService:
    """
    The recvstats service from its options.
    """
    directory = options.directory.make(reactor)
    if options.settings.group and not options["interface"]:
        log.warn("recvstats: no --interface given; joining {group} on the kernel's default "
                 "interface", group=options.settings.group)
    return RecvstatsService(options.settings, directory=directory, reactor=reactor)


def _master(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    if not host:
        host, port = text, ""
    try:
        number = int(port) if port else wire.DEFAULT_PORT
        if not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise usage.UsageError(f"master {text!r}: the port must be a number 1-65535")
    return host, number


class SendstatsOptions(usage.Options):
    """
    C{twistd sendstats} options.
    """

    synopsis = "[options] [nodenumber] [master[:port] ...]"
    longdesc = (
        "Cluster status sender (the node side of Scyld's beostat).  Every --rate seconds it "
        "reads /proc (cpuinfo, stat, meminfo, loadavg, net/dev) and statfs of /, and sends "
        "them to each master given (unicast), or else to the multicast group on the "
        "interface given with -i.  It obeys the masters' requests for an immediate update "
        "or a new rate.  The node number is normally left to the master, which derives it "
        "from this host's address."
    )
    optParameters = [
        ["rate", "r", 5.0, "Seconds between reports.", _seconds(MIN_INTERVAL, MAX_INTERVAL)],
        ["port", "p", wire.DEFAULT_PORT, "UDP port of the group, and the masters' default.",
         usage.portCoerce],
        ["group", "g", wire.DEFAULT_GROUP, "Multicast group (when no master is given)."],
        ["interface", "i", None, "Network interface (or its IPv4 address) to send on."],
        ["ttl", None, 1, "Multicast TTL.", int],
        ["node", "n", None, "This node's number [default: -1, the master derives it].", int],
        ["key-file", None, None, "Shared HMAC-SHA-256 key to sign reports with (requests "
                                 "must then be signed too)."],
        ["hostname", None, None, "Host name to report [default: this host's]."],
        ["proc", None, "/proc", "Where /proc is (for tests and containers)."],
        ["rootfs", None, "/", "File system whose statfs is reported."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["master"] = []

    def opt_master(self, value: str) -> None:
        """
        A master's HOST[:PORT] to send to (repeatable); with none, reports go
        to the multicast group.
        """
        self["master"].append(_master(value))

    def parseArgs(self, *args: str) -> None:
        rest = list(args)
        if rest:
            try:
                node = int(rest[0])
            except ValueError:
                pass
            else:
                if self["node"] is not None and self["node"] != node:
                    raise usage.UsageError("node number given twice")
                self["node"] = node
                rest.pop(0)
        self["master"].extend(_master(a) for a in rest)

    def postOptions(self) -> None:
        if self["node"] is None:
            self["node"] = -1
        if self["node"] < -1:
            raise usage.UsageError("the node number must be -1 (derive) or more")
        self["address"] = _interface(self)
        self["key"] = readKey(self["key-file"]) if self["key-file"] else None
        if not os.path.isdir(self["proc"]):
            raise usage.UsageError(f"--proc {self['proc']}: not a directory")


def makeSendstatsService(options: SendstatsOptions, reactor: Any = None) -> SendstatsService:
    """
    The sendstats service from its options.
    """
    return SendstatsService(
        options["master"], group=options["group"], port=options["port"],
        interfaceAddress=options["address"], ttl=options["ttl"], interval=options["rate"],
        node=options["node"], key=options["key"], hostname=options["hostname"],
        proc=options["proc"], rootfs=options["rootfs"], reactor=reactor)


#: What the plugin file points at for C{twistd recvstats}.
recvstats = types.SimpleNamespace(Options=RecvstatsOptions, makeService=makeRecvstatsService)
#: What the plugin file points at for C{twistd sendstats}.
sendstats = types.SimpleNamespace(Options=SendstatsOptions, makeService=makeSendstatsService)
