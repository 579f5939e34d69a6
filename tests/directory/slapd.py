"""
A real OpenLDAP C{slapd} for tests: its own configuration (cn=config, made
with C{slapadd -n0}) and database in the test's temporary directory, the
nis and sysmon schemas loaded, listening on 127.0.0.1 only, stopped by pid
when the test ends.

Nothing under C{/etc/ldap} is used but the schema files in
C{/etc/ldap/schema}; the system's slapd is never touched.  C{LDAPNOINIT=1}
keeps libldap from reading C{/etc/ldap/ldap.conf}.

The directory holds L{SUFFIX} with L{HOSTS} and the entry L{READER}.  Access:
anonymous may bind and read the root DSE and the subschema but sees no entry
under L{SUFFIX}; L{READER} reads everything but passwords; L{ADMIN} is the
database's root DN (writes; L{Slapd.addHost} uses it).
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import subprocess
import time
import unittest
from typing import Any, Sequence

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.dn import escape_rdn

from sysmon import processes
from sysmon.testing import TestCA, freePort, makeTestCA

__all__ = [
    "SLAPD",
    "SLAPADD",
    "SCHEMA_LDIF",
    "SUFFIX",
    "HOSTS",
    "ADMIN",
    "ADMIN_PASSWORD",
    "READER",
    "READER_PASSWORD",
    "SlapdError",
    "Slapd",
]

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
MODULES = "/usr/lib/ldap"
SYSTEM_SCHEMAS = "/etc/ldap/schema"

#: sysmon's schema in cn=config form, as operators load it.
SCHEMA_LDIF = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "conf", "ldap", "sysmon.ldif",
)

SUFFIX = "dc=sysmon,dc=test"
HOSTS = "ou=hosts," + SUFFIX
ADMIN = "cn=admin," + SUFFIX
ADMIN_PASSWORD = "admin-secret"
READER = "cn=reader," + SUFFIX
READER_PASSWORD = "reader-secret"

#: How long L{Slapd.start} waits for slapd to answer.
START_TIMEOUT = 20.0

#: What L{Slapd.modifyHost} takes besides LDAP attribute names.
_FIELDS = {"address": "ipHostNumber", "node": "sysmonNodeNumber", "magic": "netdumpMagic"}


class SlapdError(Exception):
    """
    slapd could not be set up or started; the message has the end of its log.
    """


def _ssha(password: str) -> str:
    """
    C{password} as an RFC 2307 C{{SSHA}} userPassword value.
    """
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def _magicValue(magic: int | str) -> str:
    """
    A netdump magic as the directory holds it: an integer as 16 hex digits,
    a string as given (so that a test can store a bad one).
    """
    if isinstance(magic, int):
        return f"{magic:016x}"
    return magic


def _value(attribute: str, value: Any) -> list[str]:
    if attribute == "netdumpMagic":
        return [_magicValue(value)]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


class Slapd:
    """
    One slapd for one test.  Nothing runs until L{start}; the process is
    stopped by pid when the test ends (C{case.addCleanup}), even if it fails
    or the server is paused.

    @ivar directory: the absolute temporary directory: C{slapd.d/} (the
        configuration), C{db/} (the database), C{tls/} (the test CA's files),
        C{slapd.log} (slapd's output, all starts), password files.
    @ivar tls: whether slapd has a certificate and an C{ldaps://} listener.
    @ivar port: the C{ldap://} port, once started (kept across restarts).
    @ivar tlsPort: the C{ldaps://} port, or L{None} without TLS.
    @ivar url: C{ldap://127.0.0.1:PORT}, once started.
    @ivar ldapsURL: C{ldaps://127.0.0.1:TLSPORT}, or L{None} without TLS.
    @ivar ca: the test CA whose server certificate (for C{localhost} and
        C{127.0.0.1}) slapd presents, or L{None} without TLS.
    @ivar caFile: the CA certificate to trust, or L{None} without TLS.
    @ivar logFile: the path of slapd's log.
    @ivar process: the running slapd, or L{None}.
    @ivar paused: whether it is stopped with C{SIGSTOP} just now.
    @ivar startSeconds: how long the last L{start} took.
    """

    def __init__(self, case: Any, tls: bool = True) -> None:
        """
        @param case: the test; its C{mktemp} gives the directory and its
            C{addCleanup} stops slapd.
        @param tls: give slapd a certificate from a new test CA and an
            C{ldaps://} listener (StartTLS on C{ldap://} then works too).
        @raise unittest.SkipTest: there is no C{/usr/sbin/slapd}.
        """
        if not os.access(SLAPD, os.X_OK):
            raise unittest.SkipTest(f"{SLAPD} is not installed (Debian package slapd)")
        self.tls = tls
        self.directory = os.path.abspath(case.mktemp())
        self.logFile = os.path.join(self.directory, "slapd.log")
        self.port: int | None = None
        self.tlsPort: int | None = None
        self.url: str | None = None
        self.ldapsURL: str | None = None
        self.ca: TestCA | None = None
        self.caFile: str | None = None
        self.process: subprocess.Popen | None = None
        self.paused = False
        self.startSeconds: float | None = None
        self._configured = False
        self._passwordFiles = 0
        case.addCleanup(self._cleanup)

    @property
    def pid(self) -> int | None:
        """
        slapd's process id while it runs, else L{None}.
        """
        if self.process is None or self.process.poll() is not None:
            return None
        return self.process.pid

    # -- configuration -----------------------------------------------------

    def _env(self) -> dict[str, str]:
        return dict(os.environ, LDAPNOINIT="1")

    def _configLDIF(self) -> str:
        d = self.directory
        tls = ""
        if self.tls:
            assert self.ca is not None
            tls = (
                f"olcTLSCACertificateFile: {self.ca.caCert}\n"
                f"olcTLSCertificateFile: {self.ca.serverCert}\n"
                f"olcTLSCertificateKeyFile: {self.ca.serverKey}\n"
            )
        parts = [
            "dn: cn=config\n"
            "objectClass: olcGlobal\n"
            "cn: config\n"
            f"olcPidFile: {d}/slapd.pid\n"
            f"olcArgsFile: {d}/slapd.args\n"
            "olcLogLevel: 0\n"
            + tls,
            "dn: cn=module{0},cn=config\n"
            "objectClass: olcModuleList\n"
            "cn: module{0}\n"
            f"olcModulePath: {MODULES}\n"
            "olcModuleLoad: back_mdb\n",
            "dn: cn=schema,cn=config\n"
            "objectClass: olcSchemaConfig\n"
            "cn: schema\n",
        ]
        for name in ("core", "cosine", "nis", "inetorgperson"):
            with open(os.path.join(SYSTEM_SCHEMAS, name + ".ldif"), encoding="utf-8") as f:
                parts.append(f.read())
        with open(SCHEMA_LDIF, encoding="utf-8") as f:
            parts.append(f.read())
        parts += [
            "dn: olcDatabase={-1}frontend,cn=config\n"
            "objectClass: olcDatabaseConfig\n"
            "objectClass: olcFrontendConfig\n"
            "olcDatabase: {-1}frontend\n",
            "dn: olcDatabase={0}config,cn=config\n"
            "objectClass: olcDatabaseConfig\n"
            "olcDatabase: {0}config\n"
            "olcAccess: {0}to * by * none\n",
            "dn: olcDatabase={1}mdb,cn=config\n"
            "objectClass: olcDatabaseConfig\n"
            "objectClass: olcMdbConfig\n"
            "olcDatabase: {1}mdb\n"
            f"olcSuffix: {SUFFIX}\n"
            f"olcRootDN: {ADMIN}\n"
            f"olcRootPW: {_ssha(ADMIN_PASSWORD)}\n"
            f"olcDbDirectory: {d}/db\n"
            "olcDbNoSync: TRUE\n"
            "olcDbIndex: objectClass eq\n"
            "olcDbIndex: cn,ipHostNumber eq\n"
            "olcDbIndex: sysmonNodeNumber eq\n"
            "olcAccess: {0}to attrs=userPassword by anonymous auth by * none\n"
            f'olcAccess: {{1}}to * by dn.exact="{READER}" read by * none\n',
        ]
        # Entries are separated by blank lines; the schema files end with one
        # or not, and comments between entries are allowed.
        return "\n".join(p.rstrip("\n") + "\n" for p in parts)

    def _baseLDIF(self) -> str:
        return (
            f"dn: {SUFFIX}\n"
            "objectClass: dcObject\n"
            "objectClass: organization\n"
            "dc: sysmon\n"
            "o: sysmon tests\n"
            "\n"
            f"dn: {HOSTS}\n"
            "objectClass: organizationalUnit\n"
            "ou: hosts\n"
            "\n"
            f"dn: {READER}\n"
            "objectClass: organizationalRole\n"
            "objectClass: simpleSecurityObject\n"
            "cn: reader\n"
            f"userPassword: {_ssha(READER_PASSWORD)}\n"
        )

    def _slapadd(self, database: str, ldif: str, name: str) -> None:
        path = os.path.join(self.directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(ldif)
        result = subprocess.run(
            [SLAPADD, "-n", database, "-F", os.path.join(self.directory, "slapd.d"),
             "-l", path],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self._env(),
            timeout=60,
        )
        if result.returncode != 0:
            raise SlapdError(
                f"slapadd -n{database} -l {path} exited {result.returncode}:\n"
                + result.stdout.decode("utf-8", "replace")[-3000:]
            )

    def _configure(self) -> None:
        os.makedirs(os.path.join(self.directory, "slapd.d"))
        os.makedirs(os.path.join(self.directory, "db"))
        if self.tls:
            self.ca = makeTestCA(os.path.join(self.directory, "tls"))
            self.caFile = self.ca.caCert
        self._slapadd("0", self._configLDIF(), "config.ldif")
        self._slapadd("1", self._baseLDIF(), "base.ldif")
        self._configured = True

    # -- the process -------------------------------------------------------

    def log(self) -> str:
        """
        Everything slapd wrote, all starts.
        """
        try:
            with open(self.logFile, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        """
        Start slapd and return when it answers an anonymous bind.  The first
        call makes the configuration, the database (L{SUFFIX}, L{HOSTS},
        L{READER}) and the ports; later calls (after L{stop}) come back on
        the same ports with the same data.

        @raise SlapdError: it did not start, or did not answer within
            L{START_TIMEOUT} seconds; the message has the end of its log.
        """
        if self.pid is not None:
            raise SlapdError(f"slapd is already running (pid {self.pid})")
        began = time.monotonic()
        if not self._configured:
            self._configure()
        if self.port is not None:
            self._run()
        else:
            # A port picked by freePort may be taken before slapd binds it.
            for attempt in range(3):
                self.port = freePort()
                self.tlsPort = freePort() if self.tls else None
                while self.tlsPort == self.port:
                    self.tlsPort = freePort()
                try:
                    self._run()
                    break
                except SlapdError as e:
                    if attempt == 2 or "Address already in use" not in str(e):
                        self.port = self.tlsPort = None
                        raise
            self.url = f"ldap://127.0.0.1:{self.port}"
            if self.tls:
                self.ldapsURL = f"ldaps://127.0.0.1:{self.tlsPort}"
        self.startSeconds = time.monotonic() - began

    def _run(self) -> None:
        listen = f"ldap://127.0.0.1:{self.port}/"
        if self.tls:
            listen += f" ldaps://127.0.0.1:{self.tlsPort}/"
        logStart = len(self.log())
        with open(self.logFile, "ab") as log:
            # -d keeps slapd in the foreground (the Popen pid is slapd's);
            # "stats" logs each connection and operation, and errors.
            self.process = subprocess.Popen(
                [SLAPD, "-d", "stats", "-h", listen,
                 "-F", os.path.join(self.directory, "slapd.d")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self._env(), cwd=self.directory,
            )
        try:
            self._waitAnswer(logStart)
        except BaseException:
            self._kill()
            raise

    def _waitAnswer(self, logStart: int) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        delay = 0.005
        while True:
            if self.process.poll() is not None:
                raise SlapdError(
                    f"slapd exited with status {self.process.returncode}:\n"
                    + self.log()[logStart:][-3000:]
                )
            # "slapd starting" means this slapd has its ports (another
            # process on them would answer the probe too).
            if "slapd starting" in self.log()[logStart:] and self._answers():
                return
            if time.monotonic() > deadline:
                raise SlapdError(
                    f"slapd did not answer on port {self.port} within"
                    f" {START_TIMEOUT:g}s:\n" + self.log()[logStart:][-3000:]
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        server = ldap3.Server(f"ldap://127.0.0.1:{self.port}", get_info=ldap3.NONE,
                              connect_timeout=2)
        connection = ldap3.Connection(server, receive_timeout=2)
        try:
            return bool(connection.bind())
        except LDAPException:
            return False
        finally:
            try:
                connection.unbind()
            except LDAPException:
                pass

    def _kill(self) -> None:
        """
        Stop the process by pid: continue it if paused, SIGTERM, SIGKILL if
        it is still there after 10 seconds, and reap it.
        """
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            try:
                os.kill(process.pid, signal.SIGCONT)
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.paused = False
        self.process = None

    def stop(self) -> None:
        """
        Stop slapd (SIGTERM) and return when it is gone.  L{start} brings it
        back at the same URLs with the same entries.
        """
        self._kill()

    def _cleanup(self) -> None:
        self._kill()

    def pause(self) -> None:
        """
        Stop slapd with SIGSTOP: a hung server.  The kernel still completes
        TCP connections to its ports, but nothing is read or answered.
        Returns when the process is stopped.
        """
        pid = self.pid
        if pid is None:
            raise SlapdError("slapd is not running")
        os.kill(pid, signal.SIGSTOP)
        self.paused = True
        deadline = time.monotonic() + 10
        while processes.state(pid) not in ("T", "t"):
            if time.monotonic() > deadline:
                raise SlapdError(f"slapd (pid {pid}) did not stop on SIGSTOP")
            time.sleep(0.002)

    def resume(self) -> None:
        """
        Let a paused slapd go on (SIGCONT).
        """
        pid = self.pid
        if pid is None:
            raise SlapdError("slapd is not running")
        os.kill(pid, signal.SIGCONT)
        self.paused = False

    # -- clients and data --------------------------------------------------

    def passwordFile(self, password: str = READER_PASSWORD, *, newline: bool = True) -> str:
        """
        A new file (mode 0600) in the directory holding C{password}.

        @param newline: end it with a newline, as C{echo secret > file}
            does (OpenLDAP's own C{ldapsearch -y} would take the newline as
            part of the password; give L{False} for it).
        @return: its path.
        """
        os.makedirs(self.directory, exist_ok=True)
        self._passwordFiles += 1
        path = os.path.join(self.directory, f"password-{self._passwordFiles}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(password + ("\n" if newline else ""))
        return path

    def connect(self, bindDN: str | None = ADMIN, password: str | None = ADMIN_PASSWORD,
                *, timeout: int = 10) -> Any:
        """
        An ldap3 connection to L{url}, bound (anonymously if C{bindDN} is
        L{None}), that raises L{ldap3.core.exceptions.LDAPOperationResult}
        subclasses when the server refuses an operation.  The caller unbinds
        it.

        @param timeout: seconds for the connect and for each answer (ldap3
            wants an integer for the latter).
        """
        if self.url is None:
            raise SlapdError("slapd was never started")
        server = ldap3.Server(self.url, get_info=ldap3.NONE, connect_timeout=timeout)
        return ldap3.Connection(server, bindDN, password, auto_bind=True,
                                raise_exceptions=True, receive_timeout=timeout)

    @staticmethod
    def hostDN(name: str) -> str:
        """
        The DN of host C{name} under L{HOSTS}.
        """
        return f"cn={escape_rdn(name)},{HOSTS}"

    def addHost(self, name: str, address: str | Sequence[str], node: int | str | None = None,
                magic: int | str | None = None, aux: bool = True) -> str:
        """
        Add a host under L{HOSTS} as L{ADMIN}: objectClass C{device} and
        C{ipHost}, plus C{sysmonHost} if C{aux}.

        @param address: its C{ipHostNumber} value(s).
        @param node: its C{sysmonNodeNumber}, if any.
        @param magic: its C{netdumpMagic}: an integer (written as 16 hex
            digits) or a string written as given.
        @param aux: add the C{sysmonHost} class; without it, a C{node} or
            C{magic} makes the server refuse the entry.
        @return: its DN.
        @raise ldap3.core.exceptions.LDAPOperationResult: the server refused.
        """
        classes = ["top", "device", "ipHost"] + (["sysmonHost"] if aux else [])
        attributes: dict[str, Any] = {"cn": name, "ipHostNumber": _value("ipHostNumber", address)}
        if node is not None:
            attributes["sysmonNodeNumber"] = str(node)
        if magic is not None:
            attributes["netdumpMagic"] = _magicValue(magic)
        dn = self.hostDN(name)
        connection = self.connect()
        try:
            connection.add(dn, classes, attributes)
        finally:
            connection.unbind()
        return dn

    def modifyHost(self, name: str, **changes: Any) -> None:
        """
        Change host C{name} as L{ADMIN}: each keyword is an LDAP attribute
        name or one of C{address}, C{node}, C{magic}; a value replaces the
        attribute's values (a list gives several), L{None} removes it.

        @raise ldap3.core.exceptions.LDAPOperationResult: the server refused.
        """
        modifications: dict[str, list[tuple[Any, list[str]]]] = {}
        for key, value in changes.items():
            attribute = _FIELDS.get(key, key)
            if value is None:
                modifications[attribute] = [(ldap3.MODIFY_DELETE, [])]
            else:
                modifications[attribute] = [(ldap3.MODIFY_REPLACE, _value(attribute, value))]
        connection = self.connect()
        try:
            connection.modify(self.hostDN(name), modifications)
        finally:
            connection.unbind()

    def deleteHost(self, name: str) -> None:
        """
        Delete host C{name} as L{ADMIN}.

        @raise ldap3.core.exceptions.LDAPOperationResult: the server refused
            (e.g. there is no such host).
        """
        connection = self.connect()
        try:
            connection.delete(self.hostDN(name))
        finally:
            connection.unbind()
