"""
C{twistd statd}: the NSM host-status monitor; C{twistd statd -n}: notify
the monitored hosts that we rebooted, then exit.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import usage

from sysmon.rpc.client import IPPROTO_TCP, IPPROTO_UDP, listenClient, pmapSet, pmapUnset
from sysmon.rpc.server import RPCDatagramProtocol, RPCServer, RPCStreamFactory
from sysmon.statd import nsm
from sysmon.statd.server import StatdServer
from sysmon.statd.store import StatusStore

__all__ = ["Options", "StatdService", "makeService"]

DEFAULT_STATE_FILE = "/var/db/statd.status"


class Options(usage.Options):
    """
    C{twistd statd} options.
    """

    synopsis = "[options]"
    longdesc = (
        "The NSM status monitor (ONC RPC program 100024 v1) that NFS locking relies on: "
        "lockd asks it (SM_MON) to watch peers, and when a peer reboots its statd's "
        "SM_NOTIFY makes this one call lockd back on 127.0.0.1.  At start the state number "
        "becomes the next odd number and every monitored host is told (unless "
        "--no-notify); with -n it only does that and exits.  The monitor list lives in an "
        "SQLite database (--state-file) that survives any crash; sysmon-statd -l lists it."
    )
    optFlags = [
        ["notify-only", "n", "Notify the hosts that need it that we rebooted, then exit."],
        ["no-notify", "L", "Do not notify hosts at start (the monitor list is kept)."],
        ["no-register", None, "Do not register with the portmapper (rpcbind) on "
                              "127.0.0.1:111; peers must then be given --port."],
    ]
    optParameters = [
        ["port", "p", 0, "Port for UDP and TCP (0: any free one).", usage.portCoerce],
        ["addr", None, "", "Address to listen on [default: all]."],
        ["state-file", None, DEFAULT_STATE_FILE, "The status database."],
        ["name", None, None, "This host's name in SM_NOTIFY [default: the FQDN]."],
        ["max-record", None, 9000, "Largest TCP record accepted, in bytes.", int],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["allow-callback"] = []

    def opt_allow_callback(self, prog: str) -> None:
        """
        Also accept SM_MON callbacks to this RPC program (repeatable; lockd,
        100021, is always allowed).
        """
        try:
            self["allow-callback"].append(int(prog))
        except ValueError:
            raise usage.UsageError(f"--allow-callback takes a program number, not {prog!r}")

    def postOptions(self) -> None:
        if self["name"] is None:
            self["name"] = socket.getfqdn()


class StatdService(service.Service):
    """
    Listens (UDP and TCP), registers with the portmapper, notifies; releases
    everything on stop.
    """

    log = Logger()

    def __init__(self, options: Options, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor  # noqa: PLW0621
        self.reactor = reactor
        self.options = options
        self.ports: list[Any] = []
        self.server: StatdServer | None = None
        self.store: StatusStore | None = None
        self.registered = False

    def privilegedStartService(self) -> None:
        path = os.path.abspath(self.options["state-file"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.store = StatusStore(path, self.reactor)
        client, clientPort = listenClient(self.reactor, reserved=True, interface="127.0.0.1"
                                          if not self.options["notify-only"] else "")
        self.ports.append(clientPort)
        self.client = client
        self.server = StatdServer(self.store, client, self.reactor, self.options["name"],
                                  self.options["allow-callback"],
                                  notify=not self.options["no-notify"])
        if not self.options["notify-only"]:
            self.rpc = RPCServer()
            self.server.register(self.rpc)
            udp = self.reactor.listenUDP(self.options["port"], RPCDatagramProtocol(self.rpc),
                                         interface=self.options["addr"])
            self.ports.append(udp)
            port = udp.getHost().port
            try:
                tcp = self.reactor.listenTCP(port, RPCStreamFactory(self.rpc,
                                             self.options["max-record"]),
                                             interface=self.options["addr"])
            except Exception:
                tcp = self.reactor.listenTCP(0, RPCStreamFactory(self.rpc,
                                             self.options["max-record"]),
                                             interface=self.options["addr"])
            self.ports.append(tcp)
            self.udpPort, self.tcpPort = port, tcp.getHost().port
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        if self.server is None:
            self.privilegedStartService()
        assert self.server is not None
        d = self.server.reboot()
        if self.options["notify-only"]:
            d.addCallback(lambda _: self.server.notifyAll())
            d.addBoth(self._notified)
            return
        self.log.info("statd listening on udp {udp} and tcp {tcp}, state file {path}",
                      udp=self.udpPort, tcp=self.tcpPort, path=self.store.path)
        if not self.options["no-register"]:
            d.addCallback(lambda _: self._register())
        if not self.options["no-notify"]:
            d.addCallback(lambda _: self.server.notifyAll())
        d.addErrback(lambda f: self.log.failure("statd start", f))

    def _notified(self, result: Any) -> None:
        self.log.info("notify mode: done")
        if self.reactor.running:
            self.reactor.stop()

    @defer.inlineCallbacks
    def _register(self) -> Any:
        try:
            yield pmapUnset(self.client, nsm.PROG, nsm.VERS)
            ok = yield defer.gatherResults([
                pmapSet(self.client, nsm.PROG, nsm.VERS, IPPROTO_UDP, self.udpPort),
                pmapSet(self.client, nsm.PROG, nsm.VERS, IPPROTO_TCP, self.tcpPort),
            ])
        except Exception as e:
            self.log.warn("cannot register with the portmapper on 127.0.0.1:111 ({error}); "
                          "serving on udp {udp} / tcp {tcp} anyway", error=str(e),
                          udp=self.udpPort, tcp=self.tcpPort)
            return
        self.registered = all(ok)
        if not self.registered:
            self.log.warn("the portmapper refused our registration: {ok}", ok=ok)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        if self.server is not None:
            self.server.stop()
        if self.registered:
            try:
                yield pmapUnset(self.client, nsm.PROG, nsm.VERS)
            except Exception:
                pass
        self.client.stop()
        for port in self.ports:
            yield defer.maybeDeferred(port.stopListening)
        self.ports = []
        if self.store is not None:
            yield self.store.stop()


def makeService(options: Options, reactor: Any = None) -> service.IService:
    return StatdService(options, reactor)
