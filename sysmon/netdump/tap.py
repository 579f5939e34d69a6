"""
C{twistd netdump}: command line, configuration file and service.

The configuration file (default C{/etc/netdump.conf}) is read first; options
given on the command line override it.  Keys: see L{SCHEMA} and
conf/netdump.conf.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import usage

from sysmon import config
from sysmon.config import ConfigError, Key, Schema
from sysmon.directory import DirectoryError
from sysmon.directory.options import DIRECTORY_OPTIONS, chooseDirectory
from sysmon.netdump.protocol import NetdumpProtocol
from sysmon.netdump.server import NetdumpServer, ServerSettings
from sysmon.netdump.store import DumpStore

__all__ = ["NetdumpService", "Options", "SCHEMA", "makeService"]

DEFAULT_CONFIG = "/etc/netdump.conf"

SCHEMA = Schema(
    [
        Key("port", config.port, 6666, help="UDP port to listen on"),
        Key("addr", config.string, "", allowEmpty=True, help="address to listen on (all)"),
        Key("max_concurrent_dumps", config.integer(1, 4096), 4, help="dumps at once"),
        Key("daemon", config.boolean, None, help="run in the background (twistd's own)"),
        Key("pidfile", config.string, None, allowEmpty=True, help="pid file (twistd's own)"),
        Key("secure", config.boolean, True, help="require the client's magic"),
        Key("dumpdir", config.string, "/var/crash", help="where dumps go"),
        Key("space_check", config.boolean, True, help="check free space before a dump"),
        Key("window", config.integer(1, 4096), 64, help="page requests in flight"),
        Key("timeout", config.number(0.01, 3600.0), 1.0, help="seconds before a request is resent"),
        Key("retries", config.integer(1, 100000), 20, help="silent timeouts before a client is gone"),
        Key("script_timeout", config.number(0.1, 86400.0), 60.0, help="seconds a script may run"),
        Key("hosts", config.string, None, allowEmpty=True, help="host directory file (magics)"),
        Key("directory", config.string, None, allowEmpty=True,
            help="LDAP host directory URL (magics)"),
        Key("directory_config", config.string, None, allowEmpty=True,
            help="LDAP host directory settings file"),
    ]
)

# command-line option -> config key
_OPTION_KEYS = {
    "concurrent": "max_concurrent_dumps",
    "space-check": "space_check",
    "script-timeout": "script_timeout",
    "directory-config": "directory_config",
}


class Options(usage.Options):
    """
    C{twistd netdump} options.
    """

    synopsis = "[options]"
    longdesc = (
        "Receive crash dumps from Linux machines running the netdump client "
        "(Red Hat netdump protocol v4/v5) and console text from netconsole, on one UDP "
        "port.  Each crash lands in <dumpdir>/<client-ip>-<YYYY-MM-DD-HH:MM>/ as an ELF "
        "vmcore that crash(8) reads, with the console log and dump.json.  Scripts in "
        "<dumpdir>/scripts/ (netdump-start, netdump-crash, netdump-nospace, "
        "netdump-reboot) run on events.  In secure mode (the default) a client's magic "
        "must match <dumpdir>/magic/<ip> (16 hex digits), else the host directory: the "
        "--hosts file or the LDAP directory (--directory).  Options "
        "override " + DEFAULT_CONFIG + "."
    )
    optFlags = [
        ["daemon", "d", "Run in the background (same as leaving out twistd's -n)."],
    ]
    optParameters = [
        ["config", None, None, f"Configuration file [default: {DEFAULT_CONFIG}, if present]."],
        ["port", "p", None, "UDP port to listen on [default: 6666]."],
        ["addr", "a", None, "Address to listen on [default: all]."],
        ["concurrent", "c", None, "Dumps at once; more crashing clients are rebooted "
                                  "without a dump [default: 4]."],
        ["dumpdir", "C", None, "Directory for dumps [default: /var/crash]."],
        ["secure", "s", None, "1: only clients whose magic is known may dump; 0: anyone "
                              "[default: 1]."],
        ["space-check", "S", None, "1: check free space before a dump [default: 1]."],
        ["window", "w", None, "Page requests in flight per client [default: 64]."],
        ["timeout", None, None, "Seconds before an unanswered request is sent again "
                                "[default: 1]."],
        ["retries", None, None, "Timeouts with the client silent before it is given up "
                                "[default: 20]."],
        ["script-timeout", None, None, "Seconds a script may run [default: 60]."],
        ["hosts", None, None, "Host directory file with client magics (conf/hosts format)."],
        *DIRECTORY_OPTIONS,
        ["pidfile", "P", None, "Pid file (same as twistd's --pidfile)."],
    ]

    def postOptions(self) -> None:
        path = self["config"] or DEFAULT_CONFIG
        try:
            conf = SCHEMA.load(path, missingOk=self["config"] is None)
            given = {k: v for k, v in self.items() if k not in ("config", "daemon")}
            conf.applyOptions(given, _OPTION_KEYS)
        except ConfigError as e:
            raise usage.UsageError(str(e))
        if self["daemon"]:
            conf.override("daemon", True)
        self.conf = conf
        try:
            self.directory = chooseDirectory(
                conf["hosts"], conf["directory"], conf["directory_config"])
        except DirectoryError as e:
            raise usage.UsageError(str(e))
        self._twistdOptions(conf)

    def _twistdOptions(self, conf: config.Config) -> None:
        """
        Map C{daemon} and C{pidfile} onto twistd's own options, unless they
        were given to twistd.
        """
        parent = self.parent
        if parent is None:
            return
        if self["daemon"]:
            parent["nodaemon"] = False
        elif conf["daemon"] is False:
            parent["nodaemon"] = True
        if conf["pidfile"] and parent.get("pidfile") in (None, "twistd.pid"):
            parent["pidfile"] = conf["pidfile"]


class NetdumpService(service.Service):
    """
    Binds the netdump port (privileged start), runs the server, releases
    everything on stop.
    """

    log = Logger()

    def __init__(self, server: NetdumpServer, port: int, interface: str = "",
                 reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor  # noqa: PLW0621
        self.reactor = reactor
        self.server = server
        self.portNumber = port
        self.interface = interface
        self.protocol = NetdumpProtocol(server)
        self.listening: Any = None

    def privilegedStartService(self) -> None:
        self.listening = self.reactor.listenUDP(
            self.portNumber, self.protocol, interface=self.interface, maxPacketSize=4096
        )
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        if self.listening is None:
            self.privilegedStartService()
        host = self.listening.getHost()
        self.log.info(
            "netdump listening on {addr}:{port} (dumps in {dir}, receive buffer {buf} bytes)",
            addr=host.host, port=host.port, dir=self.server.store.root,
            buf=getattr(self.protocol, "receiveBuffer", "default"),
        )
        self.server.start(self.protocol.send)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        stopping = []
        if self.listening is not None:
            stopping.append(defer.maybeDeferred(self.listening.stopListening))
            self.listening = None
        stopping.append(self.server.stop())
        return defer.gatherResults(stopping).addCallback(lambda _: None)


def settingsFrom(conf: config.Config) -> ServerSettings:
    return ServerSettings(
        window=conf["window"],
        timeout=conf["timeout"],
        retries=conf["retries"],
        concurrent=conf["max_concurrent_dumps"],
        secure=conf["secure"],
        spaceCheck=conf["space_check"],
        scriptTimeout=conf["script_timeout"],
    )


def makeService(options: Options, reactor: Any = None) -> service.IService:
    """
    The netdump service for C{options}.
    """
    conf = options.conf
    log = Logger(namespace="sysmon.netdump.tap")
    for warning in conf.warnings:
        log.warn("{warning}", warning=str(warning))
    directory = options.directory.make(reactor)
    store = DumpStore(os.path.abspath(conf["dumpdir"]))
    server = NetdumpServer(store, settingsFrom(conf), reactor=reactor, directory=directory)
    return NetdumpService(server, conf["port"], conf["addr"] or "", reactor=reactor)
