"""
Tests for L{sysmon.watchdog.shutdown}: the mail to the admin (through a
real SMTP server with STARTTLS, or a fake sendmail program) and the request
to the init system (fake C{systemctl} and C{shutdown} programs that record
how they were called; the real ones are never reachable).
"""

from __future__ import annotations

import email
import email.utils
import os
import shutil
import signal
import socket
import time

from twisted.internet import defer, task
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from sysmon.children import ChildRunner
from sysmon.testing import FakeReactor, freePort, makeTestCA, processAlive, writeScript
from sysmon.watchdog import codes, shutdown
from sysmon.watchdog.shutdown import (
    DEFAULT_COMMANDS,
    InitSystemShutdown,
    IShutdownAction,
    MailConfigError,
    Mailer,
    describeDecision,
)
from tests.watchdog.smtpd import startSMTPServer

ADMIN = "root@example.org"
FQDN = "box.example.org"


def captureLog(case, cls) -> list[dict]:
    """
    Send C{cls.log}'s events to a list for the rest of the test.
    """
    events: list[dict] = []
    case.patch(cls, "log", Logger(namespace=cls.__name__, observer=events.append))
    return events


def lines(events, level: LogLevel | None = None) -> list[str]:
    """
    The formatted log lines, all or those of one level.
    """
    return [formatEvent(e) for e in events if level is None or e["log_level"] == level]






class DescribeDecisionTests(SynchronousTestCase):
    """
    L{describeDecision} is the original's ALERT line.
    """

    def test_watchdogAndErrnoCodes(self):
        """
        The watchdog's own codes get their text, errno values strerror's.
        """
        self.assertEqual(describeDecision(codes.ETOOHOT),
                         "shutting down the system because of error 252 = 'too hot'")
        self.assertEqual(describeDecision(12),
                         f"shutting down the system because of error 12 = '{os.strerror(12)}'")


class MessageTests(SynchronousTestCase):
    """
    The message is the original's, with proper From, Date and Message-ID.
    """

    def parse(self, mailer, code):
        return email.message_from_bytes(mailer.message(code))

    def test_reboot(self):
        """
        To the admin, subject "<fqdn> is going down!", the original's body
        plus the error text; From watchdog@<fqdn>; a Date and a Message-ID
        in this host's domain.
        """
        mailer = Mailer(MemoryReactorClock(), admin=ADMIN, hostname=FQDN)
        msg = self.parse(mailer, codes.EREBOOT)
        self.assertEqual(msg["To"], ADMIN)
        self.assertEqual(msg["From"], f"watchdog@{FQDN}")
        self.assertEqual(msg["Subject"], f"{FQDN} is going down!")
        self.assertIsNotNone(email.utils.parsedate_to_datetime(msg["Date"]))
        self.assertTrue(msg["Message-ID"].endswith(f"@{FQDN}>"), msg["Message-ID"])
        self.assertEqual(
            msg.get_payload(decode=True).decode(),
            "Message from watchdog:\n"
            "The system will be rebooted because of error 255!\n\n"
            "Error 255 = 'unconditional reboot requested'.\n",
        )

    def test_tooHot(self):
        """
        For ETOOHOT the body says it is too hot and the system is halted.
        """
        mailer = Mailer(MemoryReactorClock(), admin=ADMIN, hostname=FQDN)
        body = self.parse(mailer, codes.ETOOHOT).get_payload(decode=True).decode()
        self.assertIn("It is too hot to keep on working. The system will be halted!\n", body)
        self.assertIn("Error 252 = 'too hot'.", body)
        self.assertNotIn("rebooted", body)

    def test_senderAndDefaultName(self):
        """
        A given sender is the From; without a hostname the FQDN comes from
        L{socket.getfqdn} (at construction).
        """
        self.patch(shutdown.socket, "getfqdn", lambda: "looked.up.example")
        mailer = Mailer(MemoryReactorClock(), admin=ADMIN, sender="ops@example.org")
        msg = self.parse(mailer, 101)
        self.assertEqual(msg["From"], "ops@example.org")
        self.assertEqual(msg["Subject"], "looked.up.example is going down!")
        self.assertIn(f"Error 101 = '{os.strerror(101)}'", msg.get_payload())
        self.assertEqual(Mailer(MemoryReactorClock(), admin=ADMIN).sender,
                         "watchdog@looked.up.example")

    def test_messageIDsDiffer(self):
        """
        Two messages get two Message-IDs.
        """
        mailer = Mailer(MemoryReactorClock(), admin=ADMIN, hostname=FQDN)
        self.assertNotEqual(self.parse(mailer, 255)["Message-ID"],
                            self.parse(mailer, 255)["Message-ID"])


class MailerClockTests(SynchronousTestCase):
    """
    The mail's limits, driven by a clock and a memory reactor.
    """

    def test_noAdmin(self):
        """
        Without an admin, L{Mailer.send} fires L{False} at once: no
        connection, no program, no timer.
        """
        reactor = FakeReactor()
        for sendmail in (None, "/usr/sbin/sendmail"):
            mailer = Mailer(reactor, admin=None, sendmail=sendmail,
                            runner=ChildRunner(reactor))
            self.assertIs(self.successResultOf(mailer.send(255)), False)
        self.assertEqual(reactor.tcpClients, [])
        self.assertEqual(reactor.processes, [])
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_timeout(self):
        """
        A connection that does not finish is given up after C{timeout}
        seconds: the result is L{False}, the connector is stopped and the
        reason logged.
        """
        events = captureLog(self, Mailer)
        reactor = MemoryReactorClock()
        mailer = Mailer(reactor, admin=ADMIN, host="mail.example.org", port=2525,
                        timeout=20, hostname=FQDN)
        d = mailer.send(255)
        [(host, port, factory, timeout, bindAddress)] = reactor.tcpClients
        self.assertEqual((host, port, timeout), ("mail.example.org", 2525, 20))
        reactor.advance(19.9)
        self.assertNoResult(d)
        reactor.advance(0.1)
        self.assertIs(self.successResultOf(d), False)
        self.assertTrue(reactor.connectors[0]._disconnected)
        self.assertEqual(reactor.getDelayedCalls(), [])
        self.assertEqual(
            lines(events, LogLevel.error),
            ["mail to root@example.org through mail.example.org:2525 did not finish "
             "within 20 seconds: given up"],
        )

    def test_cancel(self):
        """
        Cancelling L{Mailer.send} (the service stopping) stops the
        connection and its timer and fails the Deferred with
        L{defer.CancelledError}.
        """
        reactor = MemoryReactorClock()
        mailer = Mailer(reactor, admin=ADMIN, timeout=20, hostname=FQDN)
        d = mailer.send(255)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertTrue(reactor.connectors[0]._disconnected)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_sendmailTimeout(self):
        """
        A sendmail that does not finish is given up after C{timeout}
        seconds: L{False} at once, logged, and its process group gets
        SIGTERM.
        """
        events = captureLog(self, Mailer)
        reactor = FakeReactor()
        signals = []
        runner = ChildRunner(reactor, killGrace=2,
                             killpg=lambda pid, sig: signals.append((pid, sig)))
        mailer = Mailer(reactor, admin=ADMIN, sendmail="/bin/true", timeout=30,
                        hostname=FQDN, runner=runner)
        d = mailer.send(255)
        [process] = reactor.processes
        self.assertEqual(process.args[-3:], ["/bin/true", "-i", ADMIN])
        self.assertTrue(process.stdinClosed)
        self.assertIn(b"Subject: box.example.org is going down!", process.written)
        reactor.advance(29.9)
        self.assertNoResult(d)
        self.assertEqual(signals, [])
        reactor.advance(0.1)
        self.assertIs(self.successResultOf(d), False)
        self.assertEqual(signals, [(process.pid, signal.SIGTERM)])
        self.assertEqual(lines(events, LogLevel.error),
                         [f"mail to {ADMIN} through sendmail did not finish within 30 "
                          "seconds: given up"])
        process.die(signal.SIGTERM)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_sendmailCancel(self):
        """
        Cancelling a sendmail attempt kills the program and fails the
        Deferred with L{defer.CancelledError}; no timer is left.
        """
        reactor = FakeReactor()
        signals = []
        runner = ChildRunner(reactor, killGrace=2,
                             killpg=lambda pid, sig: signals.append((pid, sig)))
        mailer = Mailer(reactor, admin=ADMIN, sendmail="/bin/true", timeout=30,
                        hostname=FQDN, runner=runner)
        d = mailer.send(255)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        [process] = reactor.processes
        self.assertEqual(signals, [(process.pid, signal.SIGTERM)])
        process.die(signal.SIGTERM)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_badCAFile(self):
        """
        A CA file that cannot be read, or holds no certificate, is refused
        when the L{Mailer} is made, with the file named.
        """
        missing = os.path.join(self.mktemp(), "ca.pem")
        e = self.assertRaises(MailConfigError, Mailer, MemoryReactorClock(), admin=ADMIN,
                              caFile=missing, hostname=FQDN)
        self.assertIn(missing, str(e))
        junk = self.mktemp()
        with open(junk, "w") as f:
            f.write("not a certificate\n")
        e = self.assertRaises(MailConfigError, Mailer, MemoryReactorClock(), admin=ADMIN,
                              caFile=junk, hostname=FQDN)
        self.assertIn("no PEM certificate", str(e))


class MailerSMTPTests(TestCase):
    """
    Mail through a real Twisted ESMTP server on 127.0.0.1.
    """

    timeout = 60

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.ca = makeTestCA(self.mktemp())
        self.events = captureLog(self, Mailer)

    def mailer(self, port, host="127.0.0.1", caFile="default", timeout=20.0):
        if caFile == "default":
            caFile = self.ca.caCert
        return Mailer(self.reactor, admin=ADMIN, host=host, port=port, caFile=caFile,
                      timeout=timeout, hostname=FQDN)

    @defer.inlineCallbacks
    def test_deliveredUnderSTARTTLS(self):
        """
        The server offers STARTTLS: the mail goes under TLS (the
        certificate checked against the CA file and the IP address), to the
        admin, with the subject and body, and it is logged as sent.
        """
        server = startSMTPServer(self, self.ca)
        ok = yield self.mailer(server.port).send(codes.EREBOOT)
        self.assertIs(ok, True)
        [message] = server.messages
        self.assertTrue(message.tls)
        self.assertEqual(message.recipients, [ADMIN])
        self.assertEqual(message.mailFrom, f"watchdog@{FQDN}")
        self.assertEqual(message.helo, FQDN)
        self.assertEqual(message.headers["subject"], f"{FQDN} is going down!")
        self.assertEqual(message.headers["to"], ADMIN)
        self.assertIn("The system will be rebooted because of error 255!", message.body)
        self.assertEqual(lines(self.events),
                         [f"mail to {ADMIN} sent through 127.0.0.1:{server.port} (STARTTLS)"])

    @defer.inlineCallbacks
    def test_hostNameVerified(self):
        """
        With a host name, the certificate is checked for that DNS name.
        """
        server = startSMTPServer(self, self.ca)
        ok = yield self.mailer(server.port, host="localhost").send(codes.ETOOHOT)
        self.assertIs(ok, True)
        [message] = server.messages
        self.assertTrue(message.tls)
        self.assertIn("It is too hot to keep on working.", message.body)

    @defer.inlineCallbacks
    def test_unknownCA(self):
        """
        A server certificate from an authority not in the CA file: nothing
        is delivered (no second, plain-text attempt either), the result is
        L{False} and the log says TLS verification failed.
        """
        other = makeTestCA(self.mktemp())
        server = startSMTPServer(self, other)
        ok = yield self.mailer(server.port).send(codes.EREBOOT)
        self.assertIs(ok, False)
        self.assertEqual(server.messages, [])
        self.assertEqual(server.connections, 1)
        [line] = lines(self.events, LogLevel.error)
        self.assertEqual(
            line,
            f"mail to {ADMIN} not sent: TLS verification of SMTP server "
            f"127.0.0.1:{server.port} failed: the server certificate is not signed by a "
            "trusted authority, or has expired (certificate verify failed)",
        )

    @defer.inlineCallbacks
    def test_platformTrustByDefault(self):
        """
        Without a CA file the platform's trust store is used, which does not
        know the test CA: the mail fails on verification.  (No CA file does
        not mean "accept anything".)
        """
        server = startSMTPServer(self, self.ca)
        ok = yield self.mailer(server.port, caFile=None).send(codes.EREBOOT)
        self.assertIs(ok, False)
        self.assertEqual(server.messages, [])
        [line] = lines(self.events, LogLevel.error)
        self.assertIn("TLS verification of SMTP server", line)

    @defer.inlineCallbacks
    def test_wrongName(self):
        """
        A certificate from a trusted authority but for another name is
        refused (service_identity), and the log says for which name.
        """
        elsewhere = makeTestCA(self.mktemp(), hostnames=("other.example",))
        server = startSMTPServer(self, elsewhere)
        ok = yield self.mailer(server.port, caFile=elsewhere.caCert).send(codes.EREBOOT)
        self.assertIs(ok, False)
        self.assertEqual(server.messages, [])
        [line] = lines(self.events, LogLevel.error)
        self.assertIn("TLS verification of SMTP server", line)
        self.assertIn("the server certificate is not valid for 127.0.0.1", line)

    @defer.inlineCallbacks
    def test_startTLSRefused(self):
        """
        A server that offers STARTTLS and then refuses it does not get the
        mail in plain text.
        """
        server = startSMTPServer(self, None, refuseStartTLS=True)
        ok = yield self.mailer(server.port).send(codes.EREBOOT)
        self.assertIs(ok, False)
        self.assertEqual(server.messages, [])
        self.assertEqual(server.connections, 1)
        [line] = lines(self.events, LogLevel.error)
        self.assertIn("the server offered STARTTLS but it failed: 454", line)

    @defer.inlineCallbacks
    def test_plainTextWhenNotOffered(self):
        """
        A server that does not offer STARTTLS gets the mail in plain text,
        and the log warns about it.
        """
        server = startSMTPServer(self, self.ca, starttls=False)
        ok = yield self.mailer(server.port).send(codes.EREBOOT)
        self.assertIs(ok, True)
        [message] = server.messages
        self.assertFalse(message.tls)
        self.assertEqual(message.recipients, [ADMIN])
        self.assertEqual(
            lines(self.events, LogLevel.warn),
            [f"mail to {ADMIN} sent through 127.0.0.1:{server.port} in plain text: "
             "the server does not offer STARTTLS"],
        )

    @defer.inlineCallbacks
    def test_recipientRefused(self):
        """
        A server that refuses the recipient: L{False}, with the server's
        answer in the log.
        """
        server = startSMTPServer(self, self.ca, refuse=[ADMIN])
        ok = yield self.mailer(server.port).send(codes.EREBOOT)
        self.assertIs(ok, False)
        self.assertEqual(server.messages, [])
        [line] = lines(self.events, LogLevel.error)
        self.assertIn(f"mail to {ADMIN} not sent through 127.0.0.1:{server.port}: "
                      "the server refused it: 550", line)

    @defer.inlineCallbacks
    def test_serverDown(self):
        """
        Nothing listening: L{False} at once (well before the timeout), with
        the connection error in the log.
        """
        port = freePort()
        started = time.monotonic()
        ok = yield self.mailer(port, timeout=20).send(codes.EREBOOT)
        self.assertIs(ok, False)
        self.assertLess(time.monotonic() - started, 5)
        [line] = lines(self.events, LogLevel.error)
        self.assertIn(f"mail to {ADMIN} not sent through 127.0.0.1:{port}: cannot connect",
                      line)
        self.assertIn("refused", line)

    @defer.inlineCallbacks
    def test_silentServer(self):
        """
        A server that accepts the connection and never says anything: the
        attempt is given up after the timeout, L{False}, logged, and the
        connection is dropped.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        sock.listen(5)
        port = sock.getsockname()[1]
        started = time.monotonic()
        ok = yield self.mailer(port, timeout=0.5).send(codes.EREBOOT)
        elapsed = time.monotonic() - started
        self.assertIs(ok, False)
        self.assertGreaterEqual(elapsed, 0.45)
        self.assertLess(elapsed, 10)
        self.assertEqual(
            lines(self.events, LogLevel.error),
            [f"mail to {ADMIN} through 127.0.0.1:{port} did not finish within 0.5 "
             "seconds: given up"],
        )
        # The connection was dropped: the server side reads end of file.
        sock.setblocking(False)
        conn, _ = sock.accept()
        self.addCleanup(conn.close)
        conn.setblocking(False)
        ended = False
        for _ in range(200):
            try:
                ended = conn.recv(100) == b""
            except BlockingIOError:
                yield task.deferLater(self.reactor, 0.01, lambda: None)
                continue
            except ConnectionResetError:
                ended = True
            break
        self.assertTrue(ended)


class MailerSendmailTests(TestCase):
    """
    With C{sendmail} set, C{<sendmail> -i <admin>} gets the message on
    stdin (a fake program that records both).
    """

    timeout = 60

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.dir = os.path.abspath(self.mktemp())
        os.mkdir(self.dir)
        self.runner = ChildRunner(reactor, killGrace=0.5)
        self.addCleanup(self.runner.stopAll)
        self.events = captureLog(self, Mailer)

    def sendmail(self, body):
        return writeScript(os.path.join(self.dir, "sendmail"), body)

    def mailer(self, sendmail, admin=ADMIN, timeout=20.0, port=25):
        return Mailer(self.reactor, admin=admin, sendmail=sendmail, timeout=timeout,
                      hostname=FQDN, runner=self.runner, host="127.0.0.1", port=port)

    @defer.inlineCallbacks
    def test_messageOnStdin(self):
        """
        The program gets C{-i <admin>} and the whole message on stdin; no
        SMTP connection is made.
        """
        server = startSMTPServer(self)
        program = self.sendmail(
            f'printf "%s\\n" "$@" > {self.dir}/argv\ncat > {self.dir}/stdin\n')
        ok = yield self.mailer(program, port=server.port).send(codes.EMAXLOAD)
        self.assertIs(ok, True)
        with open(os.path.join(self.dir, "argv")) as f:
            self.assertEqual(f.read().splitlines(), ["-i", ADMIN])
        with open(os.path.join(self.dir, "stdin"), "rb") as f:
            msg = email.message_from_bytes(f.read())
        self.assertEqual(msg["To"], ADMIN)
        self.assertEqual(msg["Subject"], f"{FQDN} is going down!")
        self.assertIn("rebooted because of error 253!", msg.get_payload())
        self.assertEqual(server.connections, 0)
        self.assertEqual(lines(self.events), [f"mail to {ADMIN} handed to {program}"])

    @defer.inlineCallbacks
    def test_programFails(self):
        """
        A non-zero exit is L{False}, logged with the status and the
        program's error output.
        """
        program = self.sendmail("cat >/dev/null\necho 'queue full' >&2\nexit 75\n")
        ok = yield self.mailer(program).send(codes.EMAXLOAD)
        self.assertIs(ok, False)
        self.assertEqual(
            lines(self.events, LogLevel.error),
            [f"mail to {ADMIN} not sent: {program} -i {ADMIN} exited with status 75 "
             "(queue full)"],
        )

    @defer.inlineCallbacks
    def test_programHangs(self):
        """
        A program that does not finish is given up after the timeout
        (L{False}, logged) and killed.
        """
        program = self.sendmail(f"echo $$ > {self.dir}/pid\nexec sleep 30\n")
        started = time.monotonic()
        ok = yield self.mailer(program, timeout=0.5).send(codes.EMAXLOAD)
        self.assertIs(ok, False)
        self.assertGreaterEqual(time.monotonic() - started, 0.45)
        self.assertEqual(
            lines(self.events, LogLevel.error),
            [f"mail to {ADMIN} through sendmail did not finish within 0.5 seconds: given up"],
        )
        with open(os.path.join(self.dir, "pid")) as f:
            pid = int(f.read())
        for _ in range(200):
            if not processAlive(pid):
                break
            yield task.deferLater(self.reactor, 0.02, lambda: None)
        self.assertFalse(processAlive(pid))

    @defer.inlineCallbacks
    def test_programMissing(self):
        """
        A sendmail that does not exist: L{False}, logged.
        """
        missing = os.path.join(self.dir, "no-sendmail")
        ok = yield self.mailer(missing).send(codes.EMAXLOAD)
        self.assertIs(ok, False)
        [line] = lines(self.events, LogLevel.error)
        self.assertIn(f"mail to {ADMIN} not sent: cannot run {missing}: no such file", line)

    def test_adminLooksLikeOption(self):
        """
        An admin address that starts with "-" would be an option to
        sendmail: refused, nothing run.
        """
        reactor = FakeReactor()
        mailer = Mailer(reactor, admin="-oQ/tmp", sendmail="/usr/sbin/sendmail",
                        hostname=FQDN, runner=ChildRunner(reactor))
        self.assertIs(self.successResultOf(mailer.send(255)), False)
        self.assertEqual(reactor.processes, [])


class InitSystemShutdownTests(TestCase):
    """
    L{InitSystemShutdown} with fake C{systemctl} and C{shutdown} programs.
    PATH holds only the test's directory during these tests, so the real
    programs can never be found.
    """

    timeout = 60

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.bin = os.path.abspath(self.mktemp())
        os.mkdir(self.bin)
        self.record = os.path.join(self.bin, "calls")
        setsid = shutil.which("setsid")
        os.symlink(setsid, os.path.join(self.bin, "setsid"))
        oldPath = os.environ["PATH"]
        os.environ["PATH"] = self.bin
        self.addCleanup(os.environ.__setitem__, "PATH", oldPath)
        self.runner = ChildRunner(reactor, killGrace=0.5)
        self.addCleanup(self.runner.stopAll)
        self.events = captureLog(self, InitSystemShutdown)

    def fake(self, name, status=0, extra=""):
        writeScript(os.path.join(self.bin, name),
                    f'echo "${{0##*/}} $*" >> {self.record}\n{extra}exit {status}\n')
        self.assertEqual(shutil.which(name), os.path.join(self.bin, name))

    def calls(self):
        try:
            with open(self.record) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def action(self, **kw):
        return InitSystemShutdown(self.runner, self.reactor, **kw)

    def test_interface(self):
        """
        It provides L{IShutdownAction}.
        """
        self.assertTrue(verifyObject(IShutdownAction, self.action()))

    @defer.inlineCallbacks
    def test_systemctl(self):
        """
        Each mode asks C{systemctl <mode>}; when that succeeds nothing else
        runs, the result is L{True} and the log says how it went.
        """
        self.fake("systemctl")
        self.fake("shutdown")
        for mode in ("reboot", "poweroff", "halt"):
            ok = yield self.action().shutdown(codes.EREBOOT, mode)
            self.assertIs(ok, True)
        self.assertEqual(self.calls(),
                         ["systemctl reboot", "systemctl poweroff", "systemctl halt"])
        self.assertEqual(
            lines(self.events)[0],
            "asked the init system to reboot (error 255): systemctl reboot exited with status 0",
        )

    @defer.inlineCallbacks
    def test_fallbackWhenSystemctlFails(self):
        """
        When C{systemctl} exits non-zero, C{shutdown} is asked with the
        mode's option (-r, -P, -H); both attempts are logged.
        """
        self.fake("systemctl", status=1, extra="echo 'Failed to connect to bus' >&2\n")
        self.fake("shutdown")
        for mode in ("reboot", "poweroff", "halt"):
            ok = yield self.action().shutdown(codes.ETOOHOT, mode)
            self.assertIs(ok, True)
        self.assertEqual(self.calls(), [
            "systemctl reboot", "shutdown -r now",
            "systemctl poweroff", "shutdown -P now",
            "systemctl halt", "shutdown -H now",
        ])
        self.assertEqual(lines(self.events)[:2], [
            "asking the init system to reboot failed: systemctl reboot exited with status 1 "
            "(Failed to connect to bus)",
            "asked the init system to reboot (error 252): shutdown -r now exited with status 0",
        ])

    @defer.inlineCallbacks
    def test_fallbackWhenSystemctlMissing(self):
        """
        No C{systemctl} at all (a SysV machine): C{shutdown} is used.
        """
        self.fake("shutdown")
        ok = yield self.action().shutdown(codes.EREBOOT, "reboot")
        self.assertIs(ok, True)
        self.assertEqual(self.calls(), ["shutdown -r now"])
        self.assertEqual(lines(self.events, LogLevel.warn), [
            "cannot ask the init system to reboot with systemctl reboot: "
            "cannot run systemctl: not found in PATH",
        ])

    @defer.inlineCallbacks
    def test_everyWayFails(self):
        """
        When every command fails the result is L{False} (the service then
        lets the hardware watchdog expire), and the log says so.
        """
        self.fake("systemctl", status=1)
        self.fake("shutdown", status=1)
        ok = yield self.action().shutdown(codes.EREBOOT, "reboot")
        self.assertIs(ok, False)
        self.assertEqual(self.calls(), ["systemctl reboot", "shutdown -r now"])
        self.assertEqual(lines(self.events, LogLevel.error),
                         ["no way to reboot the system through the init system worked"])

    @defer.inlineCallbacks
    def test_attemptTimesOut(self):
        """
        A C{systemctl} that hangs is killed after the timeout and counts as
        failed: C{shutdown} is asked next.
        """
        self.fake("systemctl", extra="exec /bin/sleep 30\n")
        self.fake("shutdown")
        started = time.monotonic()
        ok = yield self.action(timeout=0.5).shutdown(codes.EREBOOT, "reboot")
        self.assertIs(ok, True)
        self.assertGreaterEqual(time.monotonic() - started, 0.45)
        self.assertEqual(self.calls(), ["systemctl reboot", "shutdown -r now"])
        self.assertIn("systemctl reboot timed out after", lines(self.events)[0])

    @defer.inlineCallbacks
    def test_cancel(self):
        """
        Cancelling the request (the service stopping) kills the running
        command, tries nothing more and fails with L{defer.CancelledError}.
        """
        self.fake("systemctl", extra=f"echo $$ > {self.bin}/pid\nexec /bin/sleep 30\n")
        self.fake("shutdown")
        d = self.action().shutdown(codes.EREBOOT, "reboot")
        pidFile = os.path.join(self.bin, "pid")
        for _ in range(500):
            if os.path.exists(pidFile) and os.path.getsize(pidFile):
                break
            yield task.deferLater(self.reactor, 0.01, lambda: None)
        with open(pidFile) as f:
            pid = int(f.read())
        d.cancel()
        yield self.assertFailure(d, defer.CancelledError)
        for _ in range(200):
            if not processAlive(pid):
                break
            yield task.deferLater(self.reactor, 0.02, lambda: None)
        self.assertFalse(processAlive(pid))
        self.assertEqual(self.calls(), ["systemctl reboot"])

    @defer.inlineCallbacks
    def test_customCommands(self):
        """
        The commands are injectable; an unknown mode is refused with
        L{False}.
        """
        self.fake("my-reboot")
        action = self.action(commands={"reboot": [["my-reboot", "--now"]]})
        ok = yield action.shutdown(codes.EREBOOT, "reboot")
        self.assertIs(ok, True)
        self.assertEqual(self.calls(), ["my-reboot --now"])
        ok = yield action.shutdown(codes.EREBOOT, "poweroff")
        self.assertIs(ok, False)
        self.assertIn("no command for that mode", lines(self.events, LogLevel.error)[0])

    def test_defaults(self):
        """
        The default commands are systemctl first, then shutdown(8).
        """
        self.assertEqual(DEFAULT_COMMANDS["reboot"],
                         (("systemctl", "reboot"), ("shutdown", "-r", "now")))
        self.assertEqual(self.action().commands, dict(DEFAULT_COMMANDS))
