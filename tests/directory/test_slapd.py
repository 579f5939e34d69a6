"""
Tests of the slapd test fixture (L{tests.directory.slapd}) and of sysmon's
LDAP schema (C{conf/ldap}) against a real OpenLDAP slapd, with ldap3
directly (not sysmon's backend).

Each test starts a slapd of its own (about a tenth of a second), so that no
test depends on another's entries or on a server another test paused.

The connections here do not read the server's schema (C{get_info=NONE}), so
ldap3 gives every attribute as the list of strings the server sent.
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import subprocess
import time
import warnings
from typing import Iterator

import ldap3
from ldap3.core.exceptions import (
    LDAPConstraintViolationResult,
    LDAPInvalidAttributeSyntaxResult,
    LDAPObjectClassViolationResult,
    LDAPSocketOpenError,
    LDAPSocketReceiveError,
    LDAPStartTLSError,
)
from twisted.trial.reporter import TestResult
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from sysmon import processes
from sysmon.testing import makeTestCA, processAlive
from tests.directory.slapd import (
    ADMIN,
    ADMIN_PASSWORD,
    HOSTS,
    READER,
    READER_PASSWORD,
    SCHEMA_LDIF,
    SLAPD,
    SUFFIX,
    Slapd,
    SlapdError,
)

CONF = os.path.dirname(SCHEMA_LDIF)
ARC = "2.25.53677102900534803107194273932747466398"
INTEGER = "1.3.6.1.4.1.1466.115.121.1.27"
IA5 = "1.3.6.1.4.1.1466.115.121.1.26"


@contextlib.contextmanager
def _ldap3TLS() -> Iterator[None]:
    """
    ldap3 2.9.1 checks the server's name with C{ssl.match_hostname}, which
    warns (deprecated) on every handshake on Python 3.11; keep that one
    warning out of the test output.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"ssl\.match_hostname\(\) is deprecated",
                                DeprecationWarning)
        yield


def _connection(url: str, user: str | None = READER, password: str | None = READER_PASSWORD,
                caFile: str | None = None, timeout: int = 5) -> ldap3.Connection:
    """
    An unopened ldap3 connection; with C{caFile}, TLS that requires a
    certificate from that CA for the URL's host.
    """
    tls = None
    if caFile is not None:
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=caFile)
    server = ldap3.Server(url, tls=tls, get_info=ldap3.NONE, connect_timeout=timeout)
    return ldap3.Connection(server, user, password, receive_timeout=timeout)


def _unfoldLDIF(path: str) -> list[str]:
    """
    The lines of an LDIF file with continuation lines joined and comments
    dropped.
    """
    lines: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f.read().splitlines():
            if line.startswith(" ") and lines:
                lines[-1] += line[1:]
            elif line.startswith("#"):
                lines.append("#")
            else:
                lines.append(line)
    return [line for line in lines if line != "#"]


def _definitions(path: str) -> dict[str, list[str]]:
    """
    The schema definitions in a cn=config schema LDIF file that slapd
    wrote, by attribute (olcAttributeTypes, olcObjectClasses), without the
    C{{n}} order prefix.
    """
    found: dict[str, list[str]] = {}
    for line in _unfoldLDIF(path):
        name, _, value = line.partition(": ")
        if name in ("olcAttributeTypes", "olcObjectClasses"):
            found.setdefault(name, []).append(re.sub(r"^\{\d+\}", "", value))
    return found


class SchemaTests(SynchronousTestCase):
    """
    sysmon's schema as slapd loads it: definitions, what the server accepts
    and refuses, and the two forms of the files agreeing.
    """

    def setUp(self) -> None:
        self.slapd = Slapd(self)
        self.slapd.start()

    def test_subschema(self) -> None:
        """
        The server's subschema has sysmonNodeNumber, netdumpMagic and the
        auxiliary class sysmonHost with the OIDs under sysmon's arc, the
        syntaxes, matching rules and single-valuedness of the brief.
        """
        server = ldap3.Server(self.slapd.url, get_info=ldap3.SCHEMA)
        connection = ldap3.Connection(server, READER, READER_PASSWORD, auto_bind=True)
        self.addCleanup(connection.unbind)
        schema = server.schema
        node = schema.attribute_types["sysmonNodeNumber"]
        self.assertEqual(
            (node.oid, node.syntax, node.equality, node.ordering, node.single_value),
            (ARC + ".1.1", INTEGER, ["integerMatch"], ["integerOrderingMatch"], True),
        )
        magic = schema.attribute_types["netdumpMagic"]
        self.assertEqual(
            (magic.oid, magic.syntax, magic.equality, magic.single_value),
            (ARC + ".1.2", IA5, ["caseIgnoreIA5Match"], True),
        )
        host = schema.object_classes["sysmonHost"]
        self.assertEqual(
            (host.oid, host.kind, host.superior, sorted(host.may_contain), host.must_contain),
            (ARC + ".2.1", "AUXILIARY", ["top"], ["netdumpMagic", "sysmonNodeNumber"], []),
        )
        # and what the host entries are made of, from the system schemas
        self.assertEqual(schema.object_classes["ipHost"].kind, "AUXILIARY")
        self.assertEqual(schema.object_classes["device"].kind, "STRUCTURAL")

    def test_hostReadBack(self) -> None:
        """
        A host with every attribute, added by the fixture as the admin, is
        read back as the reader with the values given; the magic is matched
        without regard to case and node numbers are ordered as integers.
        """
        dn = self.slapd.addHost("node01", "10.1.0.1", node=10, magic=0x0123456789ABCDEF)
        self.slapd.addHost("node02", "10.1.0.2", node=9)
        self.assertEqual(dn, "cn=node01," + HOSTS)
        connection = _connection(self.slapd.url)
        connection.bind()
        self.addCleanup(connection.unbind)
        connection.search(HOSTS, "(&(objectClass=ipHost)(ipHostNumber=10.1.0.1))",
                          attributes=["cn", "ipHostNumber", "sysmonNodeNumber",
                                      "netdumpMagic", "objectClass"])
        [entry] = connection.response
        self.assertEqual(entry["dn"], dn)
        attributes = entry["attributes"]
        self.assertEqual(attributes["cn"], ["node01"])
        self.assertEqual(attributes["ipHostNumber"], ["10.1.0.1"])
        self.assertEqual(attributes["sysmonNodeNumber"], ["10"])
        self.assertEqual(attributes["netdumpMagic"], ["0123456789abcdef"])
        self.assertEqual(sorted(attributes["objectClass"]),
                         ["device", "ipHost", "sysmonHost", "top"])
        connection.search(HOSTS, "(netdumpMagic=0123456789ABCDEF)", attributes=["cn"])
        self.assertEqual([e["dn"] for e in connection.response], [dn])
        # 10 >= 9 as integers ("10" < "9" as strings)
        connection.search(HOSTS, "(sysmonNodeNumber>=9)", attributes=["cn"])
        self.assertEqual(sorted(e["attributes"]["cn"][0] for e in connection.response),
                         ["node01", "node02"])

    def test_modifyAndDelete(self) -> None:
        """
        The fixture's modifyHost replaces and removes attributes (by field
        or LDAP name) and deleteHost removes the entry.
        """
        self.slapd.addHost("node01", "10.1.0.1", node=1, magic=1)
        self.slapd.modifyHost("node01", address=["10.1.0.1", "10.1.0.9"], node=None,
                              netdumpMagic="00000000000000ff")
        connection = self.slapd.connect()
        self.addCleanup(connection.unbind)
        connection.search(self.slapd.hostDN("node01"), "(objectClass=*)",
                          ldap3.BASE, attributes=["*"])
        [entry] = connection.response
        self.assertEqual(sorted(entry["attributes"]["ipHostNumber"]), ["10.1.0.1", "10.1.0.9"])
        self.assertEqual(entry["attributes"]["netdumpMagic"], ["00000000000000ff"])
        self.assertNotIn("sysmonNodeNumber", entry["attributes"])
        self.slapd.deleteHost("node01")
        connection.search(HOSTS, "(cn=node01)")
        self.assertEqual(connection.response, [])

    def test_nodeNumberMustBeInteger(self) -> None:
        """
        The server refuses a sysmonNodeNumber that is not an integer
        (invalidAttributeSyntax), and nothing is added.
        """
        for bad in ("one", "1.5", ""):
            error = self.assertRaises(LDAPInvalidAttributeSyntaxResult,
                                      self.slapd.addHost, "node01", "10.1.0.1", node=bad)
            self.assertEqual(error.result, 21)
        connection = self.slapd.connect()
        self.addCleanup(connection.unbind)
        connection.search(HOSTS, "(cn=node01)")
        self.assertEqual(connection.response, [])

    def test_magicSingleValued(self) -> None:
        """
        The server refuses a second netdumpMagic value, on add and on
        modify (constraintViolation); the first value stays.
        """
        error = self.assertRaises(LDAPConstraintViolationResult, self.slapd.addHost,
                                  "node01", "10.1.0.1", magic=["0000000000000001",
                                                               "0000000000000002"])
        self.assertEqual(error.result, 19)
        self.slapd.addHost("node01", "10.1.0.1", magic=1)
        connection = self.slapd.connect()
        self.addCleanup(connection.unbind)
        self.assertRaises(
            LDAPConstraintViolationResult, connection.modify, self.slapd.hostDN("node01"),
            {"netdumpMagic": [(ldap3.MODIFY_ADD, ["0000000000000002"])]},
        )
        connection.search(HOSTS, "(cn=node01)", attributes=["netdumpMagic"])
        self.assertEqual(connection.response[0]["attributes"]["netdumpMagic"],
                         ["0000000000000001"])

    def test_nodeNeedsAuxiliaryClass(self) -> None:
        """
        sysmonNodeNumber on an ipHost entry without the sysmonHost class is
        refused (objectClassViolation): the class is what allows it.
        """
        error = self.assertRaises(LDAPObjectClassViolationResult, self.slapd.addHost,
                                  "node01", "10.1.0.1", node=1, aux=False)
        self.assertEqual(error.result, 65)
        self.slapd.addHost("plain", "10.1.0.2", aux=False)

    def test_schemaFilesAgree(self) -> None:
        """
        sysmon.schema (slapd.conf format), included after core, cosine and
        nis as its header says, is converted by slaptest into exactly the
        definitions that slapd made from sysmon.ldif for the running
        server.
        """
        slaptest = "/usr/sbin/slaptest"
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "slapd.d"))
        conf = os.path.join(directory, "slapd.conf")
        with open(conf, "w") as f:
            for name in ("core", "cosine", "nis"):
                f.write(f"include /etc/ldap/schema/{name}.schema\n")
            f.write(f"include {os.path.join(CONF, 'sysmon.schema')}\n")
            f.write(f"pidfile {directory}/slapd.pid\n")
        result = subprocess.run(
            [slaptest, "-f", conf, "-F", os.path.join(directory, "slapd.d")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
            env=dict(os.environ, LDAPNOINIT="1"),
        )
        self.assertEqual(result.returncode, 0, result.stdout.decode("utf-8", "replace"))
        fromSchema = _definitions(
            os.path.join(directory, "slapd.d", "cn=config", "cn=schema", "cn={3}sysmon.ldif"))
        fromLDIF = _definitions(
            os.path.join(self.slapd.directory, "slapd.d", "cn=config", "cn=schema",
                         "cn={4}sysmon.ldif"))
        self.assertEqual(len(fromSchema["olcAttributeTypes"]), 2)
        self.assertEqual(len(fromSchema["olcObjectClasses"]), 1)
        self.assertEqual(fromSchema, fromLDIF)

    def test_sampleHosts(self) -> None:
        """
        conf/ldap/hosts.ldif, with its suffix replaced by the test's, loads
        with ldapadd (its ou=hosts and two hosts) and the hosts read back
        with node numbers and magics.
        """
        ldapadd = "/usr/bin/ldapadd"
        if not os.access(ldapadd, os.X_OK):
            raise SkipTest(f"{ldapadd} is not installed (Debian package ldap-utils)")
        with open(os.path.join(CONF, "hosts.ldif"), encoding="utf-8") as f:
            sample = f.read().replace("dc=example,dc=org", SUFFIX)
        path = os.path.abspath(self.mktemp())
        with open(path, "w", encoding="utf-8") as f:
            f.write(sample)
        connection = self.slapd.connect()
        self.addCleanup(connection.unbind)
        connection.delete(HOSTS)  # the sample brings its own
        result = subprocess.run(
            [ldapadd, "-x", "-H", self.slapd.url, "-D", ADMIN,
             "-y", self.slapd.passwordFile(ADMIN_PASSWORD, newline=False), "-f", path],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
            env=dict(os.environ, LDAPNOINIT="1"),
        )
        self.assertEqual(result.returncode, 0, result.stdout.decode("utf-8", "replace"))
        connection.search(HOSTS, "(objectClass=sysmonHost)",
                          attributes=["cn", "ipHostNumber", "sysmonNodeNumber",
                                      "netdumpMagic"])
        found = sorted(
            (e["attributes"]["cn"], e["attributes"]["ipHostNumber"],
             e["attributes"]["sysmonNodeNumber"], e["attributes"]["netdumpMagic"])
            for e in connection.response
        )
        self.assertEqual(found, [
            (["node01"], ["192.0.2.11"], ["1"], ["0123456789abcdef"]),
            (["node02"], ["192.0.2.12"], ["2"], ["fedcba9876543210"]),
        ])


class AccessTests(SynchronousTestCase):
    """
    Who sees what: anonymous nothing, the reader everything but passwords,
    a wrong password nothing.
    """

    def setUp(self) -> None:
        self.slapd = Slapd(self)
        self.slapd.start()
        self.slapd.addHost("node01", "10.1.0.1", node=1, magic=1)

    def test_anonymousSeesNoHosts(self) -> None:
        """
        An anonymous bind succeeds, but a search under the suffix finds
        nothing: slapd answers noSuchObject, as for a base that does not
        exist.
        """
        connection = _connection(self.slapd.url, None, None)
        self.assertTrue(connection.bind())
        self.addCleanup(connection.unbind)
        for base in (HOSTS, SUFFIX):
            connection.search(base, "(objectClass=*)")
            self.assertEqual(connection.response, [])
            self.assertEqual(connection.result["description"], "noSuchObject")

    def test_readerSeesHostsNotPasswords(self) -> None:
        """
        The reader finds the host and its own entry, but no userPassword.
        """
        connection = _connection(self.slapd.url)
        self.assertTrue(connection.bind())
        self.addCleanup(connection.unbind)
        connection.search(SUFFIX, "(objectClass=*)", attributes=["*"])
        dns = {e["dn"]: e["attributes"] for e in connection.response}
        self.assertIn(self.slapd.hostDN("node01"), dns)
        self.assertIn(READER, dns)
        self.assertNotIn("userPassword", dns[READER])

    def test_wrongPassword(self) -> None:
        """
        The reader with a wrong password gets invalidCredentials (49).
        """
        connection = _connection(self.slapd.url, READER, "not-" + READER_PASSWORD)
        self.assertFalse(connection.bind())
        self.addCleanup(connection.unbind)
        self.assertEqual((connection.result["result"], connection.result["description"]),
                         (49, "invalidCredentials"))

    def test_passwordFile(self) -> None:
        """
        passwordFile writes the password and a newline (or not, if asked),
        mode 0600, a new file each call.
        """
        first = self.slapd.passwordFile()
        second = self.slapd.passwordFile("other", newline=False)
        self.assertNotEqual(first, second)
        with open(first) as f:
            self.assertEqual(f.read(), READER_PASSWORD + "\n")
        with open(second) as f:
            self.assertEqual(f.read(), "other")
        self.assertEqual(os.stat(first).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(second).st_mode & 0o777, 0o600)


class TLSTests(SynchronousTestCase):
    """
    ldaps:// and StartTLS with the test CA's certificate for 127.0.0.1.
    """

    def setUp(self) -> None:
        self.slapd = Slapd(self)
        self.slapd.start()

    def _whoAmI(self, connection: ldap3.Connection) -> str:
        self.assertTrue(connection.bind(), connection.result)
        self.addCleanup(connection.unbind)
        self.assertIsInstance(connection.socket, ssl.SSLSocket)
        return connection.extend.standard.who_am_i()

    def test_ldaps(self) -> None:
        """
        ldaps:// with the test CA as the trust root verifies the server's
        certificate, including its IP address entry 127.0.0.1 (the URL's
        host), and the bind goes over TLS.
        """
        self.assertTrue(self.slapd.ldapsURL.startswith("ldaps://127.0.0.1:"))
        with _ldap3TLS():
            connection = _connection(self.slapd.ldapsURL, caFile=self.slapd.caFile)
            self.assertEqual(self._whoAmI(connection), "dn:" + READER)

    def test_ldapsUnknownCA(self) -> None:
        """
        ldaps:// trusting another CA fails when the socket opens with
        CERTIFICATE_VERIFY_FAILED; nothing is sent in clear.
        """
        other = makeTestCA(os.path.abspath(self.mktemp()))
        with _ldap3TLS():
            connection = _connection(self.slapd.ldapsURL, caFile=other.caCert)
            error = self.assertRaises(LDAPSocketOpenError, connection.bind)
        self.assertIn("CERTIFICATE_VERIFY_FAILED", str(error))

    def test_startTLS(self) -> None:
        """
        StartTLS on the ldap:// port with the test CA works, and the bind
        after it goes over TLS.
        """
        with _ldap3TLS():
            connection = _connection(self.slapd.url, caFile=self.slapd.caFile)
            connection.open()
            self.assertTrue(connection.start_tls())
            self.assertEqual(self._whoAmI(connection), "dn:" + READER)

    def test_startTLSUnknownCA(self) -> None:
        """
        StartTLS trusting another CA fails with LDAPStartTLSError.
        """
        other = makeTestCA(os.path.abspath(self.mktemp()))
        with _ldap3TLS():
            connection = _connection(self.slapd.url, caFile=other.caCert)
            connection.open()
            # (ldap3 closes the socket; unbind() would raise)
            error = self.assertRaises(LDAPStartTLSError, connection.start_tls)
        self.assertIn("CERTIFICATE_VERIFY_FAILED", str(error))

    def test_wrongName(self) -> None:
        """
        A certificate from the right CA that names neither 127.0.0.1 nor
        localhost is refused by ldap3's own name check (ldap3 turns off
        the ssl module's and checks after the handshake).
        """
        self.slapd.stop()
        self.slapd.ca.issue("server", ["ldap.example.org"])  # overwrites the files slapd uses
        self.slapd.start()
        with _ldap3TLS():
            connection = _connection(self.slapd.ldapsURL, caFile=self.slapd.caFile)
            error = self.assertRaises(LDAPSocketOpenError, connection.bind)
        self.assertIn("doesn't match", str(error))

    def test_withoutTLS(self) -> None:
        """
        With tls=False there is no ldaps:// URL and StartTLS is refused by
        the server (protocolError: slapd has no certificate).
        """
        plain = Slapd(self, tls=False)
        plain.start()
        self.assertIsNone(plain.ldapsURL)
        self.assertIsNone(plain.caFile)
        connection = _connection(plain.url, caFile=self.slapd.caFile)
        connection.open()
        self.addCleanup(connection.unbind)
        self.assertRaises(LDAPStartTLSError, connection.start_tls)
        self.assertEqual(connection.result["description"], "protocolError")


class ProcessTests(SynchronousTestCase):
    """
    The fixture's process: its pid is slapd's, stop/start keeps URLs and
    data, pause makes a hung server, and cleanup stops it in any state.
    """

    def setUp(self) -> None:
        self.slapd = Slapd(self)
        self.slapd.start()

    def test_pidIsSlapd(self) -> None:
        """
        pid is the slapd process itself (foreground, not a shell or a
        forked daemon), listening only on 127.0.0.1; the start is recorded.
        """
        command = processes.commandLine(self.slapd.pid)
        self.assertEqual(command[0], SLAPD)
        self.assertIn(f"ldap://127.0.0.1:{self.slapd.port}/", command[command.index("-h") + 1])
        self.assertEqual(self.slapd.url, f"ldap://127.0.0.1:{self.slapd.port}")
        self.assertNotEqual(self.slapd.port, self.slapd.tlsPort)
        self.assertIsInstance(self.slapd.startSeconds, float)

    def test_stopStart(self) -> None:
        """
        stop() ends the process (its pid is gone, the port refuses);
        start() comes back at the same URLs with the same entries, with a
        new pid.
        """
        self.slapd.addHost("node01", "10.1.0.1", node=1)
        url, ldapsURL, pid = self.slapd.url, self.slapd.ldapsURL, self.slapd.pid
        self.slapd.stop()
        self.assertIsNone(self.slapd.pid)
        self.assertFalse(processAlive(pid))
        connection = _connection(url, timeout=2)
        self.assertRaises(LDAPSocketOpenError, connection.open)
        self.slapd.start()
        self.assertEqual((self.slapd.url, self.slapd.ldapsURL), (url, ldapsURL))
        self.assertNotEqual(self.slapd.pid, pid)
        connection = _connection(url)
        connection.bind()
        self.addCleanup(connection.unbind)
        connection.search(HOSTS, "(cn=node01)", attributes=["sysmonNodeNumber"])
        self.assertEqual(connection.response[0]["attributes"]["sysmonNodeNumber"], ["1"])

    def test_pauseResume(self) -> None:
        """
        While paused, a bound connection's search and a new connection's
        bind both time out after receive_timeout (1 s): the TCP connect
        itself succeeds.  After resume() a new connection works again.
        """
        bound = _connection(self.slapd.url, timeout=1)
        self.assertTrue(bound.bind())
        self.slapd.pause()
        self.assertEqual(processes.state(self.slapd.pid), "T")
        began = time.monotonic()
        self.assertRaises(LDAPSocketReceiveError, bound.search, HOSTS, "(objectClass=*)")
        waited = time.monotonic() - began
        self.assertTrue(0.9 <= waited < 5, waited)
        self.assertTrue(bound.closed)
        fresh = _connection(self.slapd.url, timeout=1)
        fresh.open()  # the kernel completes the handshake for the stopped slapd
        self.assertRaises(LDAPSocketReceiveError, fresh.bind)
        self.slapd.resume()
        self.assertFalse(self.slapd.paused)
        again = _connection(self.slapd.url, timeout=1)
        self.assertTrue(again.bind())
        self.addCleanup(again.unbind)
        self.assertTrue(again.search(HOSTS, "(objectClass=organizationalUnit)"))

    def test_cleanupStopsPausedSlapd(self) -> None:
        """
        A test that fails while its slapd is paused still has it stopped by
        the cleanup (SIGCONT, SIGTERM), by pid.
        """
        seen: list[Slapd] = []
        pids: list[int] = []

        class Inner(SynchronousTestCase):
            """
            A test whose slapd is paused when it fails.
            """

            def test_fails(inner) -> None:
                """
                Start, pause, fail.
                """
                slapd = Slapd(inner)
                slapd.start()
                seen.append(slapd)
                pids.append(slapd.pid)
                slapd.pause()
                inner.fail("on purpose")

        result = TestResult()
        Inner("test_fails").run(result)
        self.assertEqual((len(result.failures), len(result.errors)), (1, 0), result.errors)
        [slapd] = seen
        self.assertIsNone(slapd.pid)
        self.assertFalse(processAlive(pids[0]))
        self.assertIn("slapd stopped", slapd.log())

    def test_startFailure(self) -> None:
        """
        A slapd that cannot start (its port is taken by another slapd)
        raises SlapdError with the end of its log, and leaves no process.
        """
        other = Slapd(self)
        other.port, other.tlsPort = self.slapd.port, self.slapd.tlsPort
        error = self.assertRaises(SlapdError, other.start)
        self.assertIn("Address already in use", str(error))
        self.assertIsNone(other.pid)
        self.assertIsNone(other.process)
