"""
A real SMTP server for tests: L{twisted.mail.smtp.ESMTP} on 127.0.0.1 (a
port of its own), offering STARTTLS with a certificate from a
L{sysmon.testing.TestCA} when given one, and keeping what it receives in
memory, with whether the session was under TLS.

    server = startSMTPServer(self, ca)          # self: the TestCase
    ... send to 127.0.0.1:server.port ...
    [message] = server.messages
    message.tls, message.recipients, message.data

The server is stopped, and its connections closed, by the test's cleanup.
"""

from __future__ import annotations

from typing import Any, Iterable

import attrs
from twisted.internet import defer, protocol
from twisted.mail import smtp
from zope.interface import implementer

from sysmon.testing import TestCA

__all__ = ["ReceivedMessage", "TestSMTPServer", "startSMTPServer"]


@attrs.define
class ReceivedMessage:
    """
    One message the server accepted.

    @ivar helo: what the client said in EHLO/HELO.
    @ivar peer: the client's address C{(host, port)}.
    @ivar mailFrom: the envelope sender.
    @ivar recipients: the envelope recipients.
    @ivar data: the message as received (C{\\n} line ends, dots unstuffed).
    @ivar tls: the session was under TLS (after STARTTLS) when it came.
    """

    helo: str
    peer: tuple[str, int]
    mailFrom: str
    recipients: list[str]
    data: bytes
    tls: bool

    @property
    def headers(self) -> dict[str, str]:
        """
        The header fields, by lower-case name (the last of a repeated one).
        """
        import email

        msg = email.message_from_bytes(self.data)
        return {k.lower(): str(v) for k, v in msg.items()}

    @property
    def body(self) -> str:
        """
        The body text.
        """
        import email

        msg = email.message_from_bytes(self.data)
        payload = msg.get_payload(decode=True)
        return payload.decode("utf-8") if isinstance(payload, bytes) else str(payload)


@implementer(smtp.IMessage)
class _Message:
    def __init__(self, server: TestSMTPServer, session: _Session, recipient: str) -> None:
        self.server = server
        self.session = session
        self.recipient = recipient
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def eomReceived(self) -> defer.Deferred[str]:
        proto = self.session.proto
        self.server.messages.append(
            ReceivedMessage(
                helo=self.session.helo,
                peer=self.session.peer,
                mailFrom=self.session.mailFrom,
                recipients=[self.recipient],
                data=b"\n".join(self.lines) + b"\n",
                tls=bool(proto.startedTLS),
            )
        )
        return defer.succeed("accepted")

    def connectionLost(self) -> None:
        self.lines = []


@implementer(smtp.IMessageDelivery)
class _Session:
    """
    The delivery for one connection: it knows its protocol, so it can tell
    whether STARTTLS happened.
    """

    def __init__(self, server: TestSMTPServer, proto: smtp.ESMTP) -> None:
        self.server = server
        self.proto = proto
        self.helo = ""
        self.peer: tuple[str, int] = ("", 0)
        self.mailFrom = ""

    def receivedHeader(self, helo: tuple[bytes, bytes], origin: smtp.Address,
                       recipients: list[smtp.User]) -> None:
        return None

    def validateFrom(self, helo: tuple[bytes, bytes], origin: smtp.Address) -> smtp.Address:
        self.helo = (helo[0] or b"").decode("ascii", "replace")
        self.mailFrom = str(origin)
        return origin

    def validateTo(self, user: smtp.User) -> Any:
        address = str(user.dest)
        if address in self.server.refuse:
            raise smtp.SMTPBadRcpt(user)
        return lambda: _Message(self.server, self, address)


class _Factory(protocol.ServerFactory):
    def __init__(self, server: TestSMTPServer) -> None:
        self.server = server

    def buildProtocol(self, addr: Any) -> smtp.ESMTP:
        proto = _ESMTP(self.server, contextFactory=self.server.tlsContext)
        proto.factory = self
        proto.host = b"smtp.test"
        session = _Session(self.server, proto)
        session.peer = (addr.host, addr.port)
        proto.delivery = session
        return proto


class _ESMTP(smtp.ESMTP):
    def __init__(self, server: TestSMTPServer, contextFactory: Any = None) -> None:
        super().__init__(contextFactory=contextFactory)
        self.server = server

    def extensions(self) -> dict[bytes, Any]:
        ext = super().extensions()
        if self.server.refuseStartTLS:
            ext[b"STARTTLS"] = None
        return ext

    def ext_STARTTLS(self, rest: bytes) -> None:
        if self.server.refuseStartTLS:
            self.sendCode(454, b"TLS not available due to temporary reason")
            return
        super().ext_STARTTLS(rest)

    def connectionMade(self) -> None:
        self.server.connections += 1
        self.server._live.add(self)
        super().connectionMade()

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self.server._live.discard(self)
        for d in self.server._waiting.pop(self, []):
            d.callback(None)


class TestSMTPServer:
    """
    What L{startSMTPServer} returns.

    @ivar port: the TCP port on 127.0.0.1.
    @ivar messages: every L{ReceivedMessage}, in order.
    @ivar connections: how many connections were accepted.
    @ivar refuse: recipient addresses refused with 550 (the test may add).
    @ivar tlsContext: the server TLS context, or L{None} when STARTTLS is
        not offered.
    @ivar refuseStartTLS: STARTTLS is offered but every attempt is answered
        454 (a broken or hostile server).
    """

    def __init__(self, tlsContext: Any = None, refuse: Iterable[str] = (),
                 refuseStartTLS: bool = False) -> None:
        self.tlsContext = tlsContext
        self.refuse = set(refuse)
        self.refuseStartTLS = refuseStartTLS
        self.messages: list[ReceivedMessage] = []
        self.connections = 0
        self.port = 0
        self._listening: Any = None
        self._live: set[_ESMTP] = set()
        self._waiting: dict[_ESMTP, list[defer.Deferred[None]]] = {}

    def stop(self) -> defer.Deferred[Any]:
        """
        Stop listening, close every connection, and fire when all are gone.
        """
        waits = []
        for proto in list(self._live):
            d: defer.Deferred[None] = defer.Deferred()
            self._waiting.setdefault(proto, []).append(d)
            waits.append(d)
            proto.setTimeout(None)
            proto.transport.abortConnection()
        if self._listening is not None:
            waits.append(defer.maybeDeferred(self._listening.stopListening))
            self._listening = None
        return defer.gatherResults(waits)


def startSMTPServer(case: Any, ca: TestCA | None = None, *, starttls: bool = True,
                    refuse: Iterable[str] = (), refuseStartTLS: bool = False,
                    reactor: Any = None) -> TestSMTPServer:
    """
    Start a L{TestSMTPServer} on 127.0.0.1, port 0, stopped by C{case}'s
    cleanup.

    @param case: the running L{twisted.trial.unittest.TestCase}.
    @param ca: its server certificate is offered with STARTTLS.
    @param starttls: offer STARTTLS (needs C{ca}).
    @param refuse: recipients to refuse.
    @param refuseStartTLS: offer STARTTLS but answer it with 454.
    """
    if reactor is None:
        from twisted.internet import reactor  # noqa: PLW0621
    context = ca.serverContextFactory() if (ca is not None and starttls) else None
    server = TestSMTPServer(context, refuse, refuseStartTLS)
    server._listening = reactor.listenTCP(0, _Factory(server), interface="127.0.0.1")
    server.port = server._listening.getHost().port
    case.addCleanup(server.stop)
    return server
