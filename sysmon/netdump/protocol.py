"""
The netdump UDP socket: sort each datagram (netdump reply, another server's
request, console text) and hand it to the server; send the server's
requests.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from sysmon.netdump import wire
from sysmon.udp import growReceiveBuffer

__all__ = ["NetdumpProtocol", "RECEIVE_BUFFER"]

#: Socket receive buffer asked for: a window of 64 pages of 64 KiB arrives
#: as 4096 datagrams at once.
RECEIVE_BUFFER = 16 * 1024 * 1024

_MEM_SIZE = wire.HEADER_SIZE + wire.FRAGMENT_SIZE
_MEM_CODE = wire.REPLY.MEM.to_bytes(4, "big")
_VERSIONS = (3, 4, 5)


class NetdumpProtocol(DatagramProtocol):
    """
    Thin glue between the socket and L{NetdumpServer}.

    @ivar server: the L{sysmon.netdump.server.NetdumpServer}.
    """

    log = Logger()

    def __init__(self, server: Any) -> None:
        self.server = server

    _sendto = None

    def startProtocol(self) -> None:
        sock = getattr(self.transport, "socket", None)
        if isinstance(sock, socket.socket):
            self.receiveBuffer = growReceiveBuffer(sock, RECEIVE_BUFFER)
            # The server only ever sends to IPv4 addresses it received from,
            # so the transport's per-write address checks can be skipped.
            self._sendto = sock.sendto

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        """
        Send a request; a failed send is counted, not raised (the request
        times out and is sent again).
        """
        try:
            if self._sendto is not None:
                self._sendto(data, addr)
            else:
                self.transport.write(data, addr)
        except OSError as e:
            self.server.counters["send_errors"] += 1
            self.log.debug("cannot send to {ip}:{port}: {error}", ip=addr[0], port=addr[1],
                           error=e)

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            if len(data) == _MEM_SIZE and data[5:9] == _MEM_CODE and data[0] in _VERSIONS:
                # Nearly every datagram of a dump: straight to the page logic.
                self.server.memReceived(data, addr)
                return
            kind = wire.classify(data)
            if kind == wire.KIND_REPLY:
                self.server.replyReceived(data, addr)
            elif kind == wire.KIND_CONSOLE:
                self.server.consoleReceived(data, addr)
            else:
                self.server.requestReceived(data, addr)
        except Exception:
            self.server.counters["errors"] += 1
            self.log.failure("handling a datagram from {ip}:{port}", ip=addr[0], port=addr[1])
