"""
The watchdog's way down: the mail to the admin and the request to the init
system.

The original daemon (C{src/shutdown.c}) took the machine down itself: it
stopped init, killed every process, unmounted the file systems and called
C{reboot(2)}.  On a machine run by systemd that fights the init system, so
here the decision is handed to it instead: L{InitSystemShutdown} runs
C{systemctl reboot} (or C{poweroff}, C{halt}) and falls back to
C{shutdown -r now} (C{-P}, C{-H}).  If the machine is still up after
C{sigterm-delay}, the service stops feeding the hardware watchdog, which
then resets it; that part is the service's.  The action is the interface
L{IShutdownAction}, so tests use a recording fake and never reboot anything.

Before that, L{Mailer} tells the admin, as the original's
C{src/send-email.c} did: C{To: <admin>}, C{Subject: <fqdn> is going down!}
and "Message from watchdog: The system will be rebooted because of error
N!" (for ETOOHOT: "It is too hot to keep on working. The system will be
halted!").  Unlike the original, which could only pipe the message into a
sendmail binary, it speaks SMTP itself (L{twisted.mail.smtp}) to the
configured server, with STARTTLS and certificate verification whenever the
server offers it; a configured sendmail binary is still used instead when
one is given.

Module imports stay light: L{twisted.mail.smtp} installs the global reactor
when imported, so it is imported only when a mail goes out.
"""

from __future__ import annotations

import email.message
import email.utils
import io
import socket
from typing import Any, Mapping, Sequence

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from sysmon.children import ChildError, ChildResult, ChildRunner
from sysmon.watchdog import codes

__all__ = [
    "DEFAULT_COMMANDS",
    "MODES",
    "IShutdownAction",
    "InitSystemShutdown",
    "MailConfigError",
    "Mailer",
    "describeDecision",
]

#: The ways down that L{IShutdownAction.shutdown} knows.
MODES = ("reboot", "poweroff", "halt")

#: For each mode, the commands tried in turn until one exits with status 0.
DEFAULT_COMMANDS: Mapping[str, tuple[tuple[str, ...], ...]] = {
    "reboot": (("systemctl", "reboot"), ("shutdown", "-r", "now")),
    "poweroff": (("systemctl", "poweroff"), ("shutdown", "-P", "now")),
    "halt": (("systemctl", "halt"), ("shutdown", "-H", "now")),
}


def describeDecision(code: int) -> str:
    """
    The ALERT line the service logs when it decides to shut down, as the
    original's: C{shutting down the system because of error 252 = 'too
    hot'}.
    """
    return f"shutting down the system because of error {code} = '{codes.describe(code)}'"


class IShutdownAction(Interface):
    """
    Takes the machine down.  The service calls it once per decision.
    """

    def shutdown(code: int, mode: str) -> defer.Deferred[bool]:
        """
        Ask for the machine to go down.

        @param code: the error that caused the decision (for the log).
        @param mode: C{"reboot"}, C{"poweroff"} or C{"halt"}.
        @return: a Deferred that fires with L{True} when the request was
            accepted (the machine is on its way down) and L{False} when
            every way failed.  It does not fail; cancelling it abandons the
            request (and fails it with L{defer.CancelledError}).
        """


@implementer(IShutdownAction)
class InitSystemShutdown:
    """
    Asks the init system to take the machine down: each command for the mode
    in turn (by default C{systemctl <mode>}, then C{shutdown -r/-P/-H now})
    until one exits with status 0.

    @ivar runner: the L{ChildRunner} the commands run under.
    @ivar commands: mode -> the commands to try, in order.
    @ivar timeout: seconds each command may take before it is killed and
        counted as failed.
    """

    log = Logger()

    def __init__(
        self,
        runner: ChildRunner | None = None,
        reactor: Any = None,
        commands: Mapping[str, Sequence[Sequence[str]]] | None = None,
        *,
        timeout: float = 30.0,
    ) -> None:
        """
        @param runner: runs the commands; by default a new one on
            C{reactor}.
        @param reactor: the reactor (the global one by default).
        @param commands: replaces L{DEFAULT_COMMANDS} (mode -> argv list).
        @param timeout: seconds per attempt.
        """
        if runner is None:
            runner = ChildRunner(reactor)
        self.runner = runner
        source = DEFAULT_COMMANDS if commands is None else commands
        self.commands = {mode: tuple(tuple(argv) for argv in argvs)
                         for mode, argvs in source.items()}
        self.timeout = timeout

    def shutdown(self, code: int, mode: str) -> defer.Deferred[bool]:
        """
        See L{IShutdownAction.shutdown}.  Every attempt is logged with how
        it ended.
        """
        return defer.Deferred.fromCoroutine(self._shutdown(code, mode))

    async def _shutdown(self, code: int, mode: str) -> bool:
        attempts = self.commands.get(mode)
        if not attempts:
            self.log.error(
                "cannot {mode} the system (error {code}): no command for that mode",
                mode=mode, code=code,
            )
            return False
        for argv in attempts:
            try:
                result: ChildResult = await self.runner.run(argv, timeout=self.timeout)
            except defer.CancelledError:
                self.log.warn("the request to {mode} the system was abandoned", mode=mode)
                raise
            except ChildError as e:
                self.log.warn("cannot ask the init system to {mode} with {argv}: {why}",
                              mode=mode, argv=" ".join(argv), why=str(e))
                continue
            except Exception:
                self.log.failure("asking the init system to {mode} with {argv}",
                                 mode=mode, argv=" ".join(argv))
                continue
            if result.succeeded:
                self.log.info(
                    "asked the init system to {mode} (error {code}): {argv} {outcome}",
                    mode=mode, code=code, argv=" ".join(argv), outcome=result.describe(),
                )
                return True
            self.log.warn(
                "asking the init system to {mode} failed: {argv} {outcome}{stderr}",
                mode=mode, argv=" ".join(argv), outcome=result.describe(),
                stderr=_tail(result.stderr),
            )
        self.log.error("no way to {mode} the system through the init system worked",
                       mode=mode)
        return False


def _tail(data: bytes, limit: int = 300) -> str:
    """
    The end of a program's error output, for a log line ("" when empty).
    """
    text = data.decode("utf-8", "replace").strip()
    if not text:
        return ""
    if len(text) > limit:
        text = "..." + text[-limit:]
    return f" ({text})"


class MailConfigError(ValueError):
    """
    The mail settings cannot work (e.g. an unreadable CA file); raised when
    the L{Mailer} is made, so the daemon refuses to start rather than find
    out at the worst moment.
    """


def _loadTrust(caFile: str) -> Any:
    """
    A Twisted trust root with every certificate of the PEM bundle C{caFile}.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from twisted.internet import ssl

    try:
        with open(caFile, "rb") as f:
            data = f.read()
    except OSError as e:
        raise MailConfigError(f"cannot read the SMTP CA file {caFile}: {e.strerror}") from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise MailConfigError(
            f"the SMTP CA file {caFile} holds no PEM certificate ({e})"
        ) from None
    return ssl.trustRootFromCertificates(
        [ssl.Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in certificates]
    )


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and not any(exc is s for s in seen):
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _sslReason(exc: Exception) -> str:
    """
    OpenSSL's reasons from a L{OpenSSL.SSL.Error} (its argument is a list of
    C{(library, function, reason)}).
    """
    try:
        return ", ".join(str(r[2]) for r in exc.args[0] if r[2]) or str(exc)
    except (IndexError, TypeError):
        return str(exc)


def _explain(failure: Failure, host: str) -> tuple[str, str]:
    """
    Why a mail did not go out, for the log: a kind (C{"tls"},
    C{"connect"}, C{"refused"}, C{"smtp"}) and a phrase.
    """
    from OpenSSL import SSL
    from service_identity import VerificationError
    from twisted.internet import error
    from twisted.mail import smtp

    chain = _chain(failure.value)
    for exc in chain:
        if isinstance(exc, VerificationError):
            return "tls", f"the server certificate is not valid for {host}"
        if isinstance(exc, SSL.Error):
            reason = _sslReason(exc)
            if "certificate verify failed" in reason:
                return "tls", ("the server certificate is not signed by a trusted "
                               f"authority, or has expired ({reason})")
            return "tls", f"TLS handshake failed ({reason})"
    exc = chain[0] if chain else failure.value
    if isinstance(exc, smtp.TLSError):
        return "tls", (f"the server offered STARTTLS but it failed: {exc.code} "
                       f"{_text(exc.resp)}")
    if isinstance(exc, smtp.SMTPDeliveryError):
        return "refused", f"the server refused it: {exc.code} {_text(exc.resp)}"
    for cause in chain[1:]:
        if isinstance(cause, (error.ConnectError, OSError)):
            return "connect", f"cannot connect: {cause}"
    if isinstance(exc, smtp.SMTPClientError):
        if exc.code == -1 or exc.code is None:
            return "smtp", _text(exc.resp)
        return "smtp", f"{exc.code} {_text(exc.resp)}"
    return "smtp", str(exc) or type(exc).__name__


_senderFactoryClass: Any = None


def _factoryClass() -> Any:
    """
    An L{twisted.mail.smtp.ESMTPSenderFactory} that notes whether the mail
    went under TLS and fires C{closed} when the connection is gone.  Made on first use (see the
    module docstring about the import).
    """
    global _senderFactoryClass
    if _senderFactoryClass is not None:
        return _senderFactoryClass
    from twisted.mail import smtp

    class Sender(smtp.ESMTPSender):
        def sentMail(self, *args: Any) -> None:
            self.factory.securedTLS = bool(self._tlsMode)
            super().sentMail(*args)

    class SenderFactory(smtp.ESMTPSenderFactory):
        protocol = Sender

        def __init__(self, *args: Any, closed: defer.Deferred[None], **kw: Any) -> None:
            super().__init__(*args, **kw)
            self.closed = closed
            self.securedTLS = False

        def _gone(self) -> None:
            if not self.closed.called:
                self.closed.callback(None)

        def clientConnectionFailed(self, connector: Any, err: Failure) -> None:
            try:
                super().clientConnectionFailed(connector, err)
            finally:
                self._gone()

        def clientConnectionLost(self, connector: Any, err: Failure) -> None:
            try:
                super().clientConnectionLost(connector, err)
            finally:
                self._gone()

    _senderFactoryClass = SenderFactory
    return SenderFactory


class Mailer:
    """
    Tells the admin that the machine is going down.

    By default the mail goes by SMTP to C{host}:C{port}.  When the server
    offers STARTTLS it is used, and the server certificate must be signed
    by an authority in C{caFile} (or the platform's trust store) and be
    valid for C{host}: a bad certificate fails the mail, it never falls
    back to plain text.  A server that does not offer STARTTLS (a local MTA
    on port 25, usually) gets the mail in plain text, with a warning in the
    log.  With C{sendmail} set, C{<sendmail> -i <admin>} is run with the
    message on its standard input instead, as the original did.

    @ivar admin: the recipient, or L{None} for no mail.
    @ivar fqdn: this machine's name, for the subject, the sender address,
        the Message-ID and EHLO.
    @ivar sender: the envelope and C{From:} address.
    @ivar timeout: seconds a whole attempt may take.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any = None,
        *,
        admin: str | None,
        host: str = "localhost",
        port: int = 25,
        caFile: str | None = None,
        sender: str | None = None,
        sendmail: str | None = None,
        timeout: float = 60.0,
        hostname: str | None = None,
        runner: ChildRunner | None = None,
    ) -> None:
        """
        @param reactor: the reactor (the global one by default).
        @param admin: who gets the mail; L{None}: nobody (L{send} fires
            L{False} at once).
        @param host: the SMTP server; also the name its certificate must
            carry.
        @param port: its port.
        @param caFile: a PEM bundle of the authorities trusted for the
            server certificate; L{None}: the platform's trust store.
        @param sender: the sender address; by default C{watchdog@<fqdn>}.
        @param sendmail: a sendmail-compatible program to use instead of
            SMTP.
        @param timeout: seconds a whole attempt may take.
        @param hostname: this machine's fully qualified name; by default
            L{socket.getfqdn}, looked up here, at start-up, because a name
            lookup at shutdown time may hang when the network is the
            problem.
        @param runner: runs C{sendmail}; by default a new L{ChildRunner}.
        @raise MailConfigError: C{caFile} cannot be read or holds no
            certificate.
        """
        if reactor is None:
            from twisted.internet import reactor  # noqa: PLW0621
        self.reactor = reactor
        self.admin = admin
        self.host = host
        self.port = port
        self.caFile = caFile
        self.sendmail = sendmail
        self.timeout = timeout
        self.fqdn = hostname or socket.getfqdn()
        self.sender = sender or f"watchdog@{self.fqdn}"
        self._runner = runner
        self._trust = _loadTrust(caFile) if caFile and not sendmail else None

    @property
    def server(self) -> str:
        """
        C{host:port}, for the log.
        """
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def message(self, code: int) -> bytes:
        """
        The whole message for error C{code}, with C{\\n} line ends.
        """
        msg = email.message.EmailMessage()
        msg["From"] = self.sender
        msg["To"] = self.admin or ""
        msg["Subject"] = f"{self.fqdn} is going down!"
        msg["Date"] = email.utils.formatdate(localtime=True)
        msg["Message-ID"] = email.utils.make_msgid("watchdog", domain=self.fqdn)
        if code == codes.ETOOHOT:
            what = "It is too hot to keep on working. The system will be halted!"
        else:
            what = f"The system will be rebooted because of error {code}!"
        msg.set_content(
            "Message from watchdog:\n"
            f"{what}\n"
            "\n"
            f"Error {code} = '{codes.describe(code)}'.\n"
        )
        return msg.as_bytes()

    def send(self, code: int) -> defer.Deferred[bool]:
        """
        Mail the admin that the machine goes down because of C{code}.

        @return: a Deferred that fires with L{True} when the server (or
            sendmail) accepted the mail and L{False} otherwise, the reason
            logged; at the latest after C{timeout} seconds.  It never
            fails; cancelling it abandons the attempt (and fails it with
            L{defer.CancelledError}, as cancelled Deferreds do).
        """
        if self.admin is None:
            return defer.succeed(False)
        try:
            message = self.message(code)
            if self.sendmail:
                return self._bounded(self._viaSendmail(message), "sendmail")
            return self._viaSMTP(message)
        except Exception:
            self.log.failure("mailing {admin} about error {code}", admin=self.admin, code=code)
            return defer.succeed(False)

    # -- sendmail ------------------------------------------------------------------

    def _viaSendmail(self, message: bytes) -> defer.Deferred[bool]:
        assert self.admin is not None and self.sendmail is not None
        if self.admin.startswith("-"):
            self.log.error("mail not sent: the admin address {admin} looks like an option",
                           admin=self.admin)
            return defer.succeed(False)
        argv = [self.sendmail, "-i", self.admin]
        if self._runner is None:
            self._runner = ChildRunner(self.reactor)
        d = self._runner.run(argv, stdinData=message)

        def ended(result: ChildResult) -> bool:
            if result.succeeded:
                self.log.info("mail to {admin} handed to {sendmail}", admin=self.admin,
                              sendmail=self.sendmail)
                return True
            self.log.error("mail to {admin} not sent: {argv} {outcome}{stderr}",
                           admin=self.admin, argv=" ".join(argv), outcome=result.describe(),
                           stderr=_tail(result.stderr))
            return False

        def failed(f: Failure) -> Failure | bool:
            if f.check(defer.CancelledError):
                return f
            why = str(f.value) if f.check(ChildError) else f.getErrorMessage()
            self.log.error("mail to {admin} not sent: {why}", admin=self.admin, why=why)
            return False

        return d.addCallbacks(ended, failed)

    def _bounded(self, d: defer.Deferred[bool], via: str) -> defer.Deferred[bool]:
        """
        C{d}, given up after C{timeout} seconds (then it is cancelled and
        this fires L{False}).
        """
        outcome: defer.Deferred[bool] = defer.Deferred(lambda _: d.cancel())

        def expire() -> None:
            if outcome.called:
                return
            self.log.error("mail to {admin} through {via} did not finish within "
                           "{timeout} seconds: given up", admin=self.admin, via=via,
                           timeout=self.timeout)
            outcome.callback(False)
            d.cancel()

        timer = self.reactor.callLater(self.timeout, expire)

        def done(result: Any) -> None:
            if timer.active():
                timer.cancel()
            if outcome.called:
                if isinstance(result, Failure):
                    result.trap(defer.CancelledError)
                return
            if isinstance(result, Failure):
                outcome.errback(result)
            else:
                outcome.callback(result)

        d.addBoth(done)
        return outcome

    # -- SMTP ----------------------------------------------------------------------

    def _tlsOptions(self) -> Any:
        from twisted.internet import ssl

        trust = self._trust if self._trust is not None else ssl.platformTrust()
        return ssl.optionsForClientTLS(self.host, trustRoot=trust)

    def _viaSMTP(self, message: bytes) -> defer.Deferred[bool]:
        assert self.admin is not None
        sent: defer.Deferred[Any] = defer.Deferred()
        closed: defer.Deferred[None] = defer.Deferred()
        factory = _factoryClass()(
            None, None, self.sender, [self.admin], io.BytesIO(message), sent,
            retries=0, timeout=None, contextFactory=self._tlsOptions(),
            heloFallback=True, requireAuthentication=False, requireTransportSecurity=False,
            closed=closed,
        )
        factory.domain = self.fqdn if self.fqdn.isascii() else "localhost"
        factory.noisy = False
        state: dict[str, Any] = {"ok": None, "over": False}

        def accepted(result: tuple[int, Any]) -> None:
            numOk = result[0]
            state["ok"] = numOk > 0
            if state["over"]:
                return
            if factory.securedTLS:
                self.log.info("mail to {admin} sent through {server} (STARTTLS)",
                              admin=self.admin, server=self.server)
            else:
                self.log.warn(
                    "mail to {admin} sent through {server} in plain text: the server "
                    "does not offer STARTTLS", admin=self.admin, server=self.server)

        def refused(f: Failure) -> None:
            state["ok"] = False
            if state["over"]:
                return
            kind, why = _explain(f, self.host)
            if kind == "tls":
                self.log.error(
                    "mail to {admin} not sent: TLS verification of SMTP server {server} "
                    "failed: {why}", admin=self.admin, server=self.server, why=why)
            else:
                self.log.error("mail to {admin} not sent through {server}: {why}",
                               admin=self.admin, server=self.server, why=why)

        sent.addCallbacks(accepted, refused)

        def abort() -> None:
            factory.sendFinished = True  # no retry, no late errback
            transport = getattr(connector, "transport", None)
            if getattr(connector, "state", None) == "connected" and transport is not None:
                transport.abortConnection()
            else:
                connector.disconnect()

        def cancel(_: defer.Deferred[bool]) -> None:
            state["over"] = True
            if timer.active():
                timer.cancel()
            abort()

        outcome: defer.Deferred[bool] = defer.Deferred(cancel)

        def expire() -> None:
            state["over"] = True
            if state["ok"] is None:
                self.log.error(
                    "mail to {admin} through {server} did not finish within {timeout} "
                    "seconds: given up", admin=self.admin, server=self.server,
                    timeout=self.timeout)
            abort()
            outcome.callback(state["ok"] is True)

        def finish(_: None) -> None:
            if timer.active():
                timer.cancel()
            if not outcome.called:
                outcome.callback(state["ok"] is True)

        connector = self.reactor.connectTCP(self.host, self.port, factory,
                                            timeout=self.timeout)
        timer = self.reactor.callLater(self.timeout, expire)
        closed.addCallback(finish)
        return outcome

