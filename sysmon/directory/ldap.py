"""
The LDAP backend of the host directory.

Sites keep their hosts in LDAP as RFC 2307 C{ipHost} entries (C{cn},
C{ipHostNumber}); sysmon's auxiliary class C{sysmonHost}
(conf/ldap/sysmon.schema) adds C{sysmonNodeNumber} and C{netdumpMagic}.
The settings live in a C{key = value} file (conf/ldap/directory.conf,
L{SCHEMA}); the server's URL may also be given alone::

    url = ldaps://ldap.example.org/ou=hosts,dc=example,dc=org
    bind_dn = cn=sysmon,ou=services,dc=example,dc=org
    password_file = /etc/sysmon/ldap.secret
    ca_file = /etc/ssl/certs/site-ca.pem

Three layers:

  - L{recordsFromEntry} and L{searchFilter}: entries to L{HostRecord}s and
    questions to filters, no I/O.
  - L{LDAPClient}: one synchronous ldap3 connection (ldap3 has no Twisted
    transport), for a thread of its own or for the C{sysmon-hosts} tool.
  - L{LDAPHostDirectory}: the L{IHostDirectory} daemons use.  Every
    question goes to one worker thread, so the reactor never waits for the
    server; answers are cached for C{ttl} seconds.  When the server cannot
    be reached or does not answer within C{timeout}, lookups are answered
    from the cache, stale or not, one warning is logged for the whole
    outage, the server is tried again every C{retry} seconds, and a host
    the cache does not know fails at once with L{DirectoryUnavailable}
    ("unknown host"): a caller never waits longer than C{timeout}.
"""

from __future__ import annotations

import ast
import collections
import math
import os
import stat
import time
import urllib.parse
from typing import Any, Callable, Iterable, Mapping

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sysmon import config
from sysmon.config import ConfigError, Key, Schema
from sysmon.directory import (
    DirectoryError,
    DirectoryUnavailable,
    HostRecord,
    IHostDirectory,
    normalizeAddress,
)

__all__ = [
    "BadEntry",
    "Check",
    "DEFAULT_CONFIG",
    "DEFAULT_FILTER",
    "DEFAULT_MAP",
    "LDAPClient",
    "LDAPHostDirectory",
    "LDAPSettings",
    "SCHEMA",
    "loadSettings",
    "recordsFromEntry",
    "searchFilter",
    "verify",
]

DEFAULT_CONFIG = "/etc/sysmon/directory.conf"
DEFAULT_FILTER = "(objectClass=ipHost)"
DEFAULT_MAP: Mapping[str, str] = {
    "name": "cn",
    "address": "ipHostNumber",
    "node": "sysmonNodeNumber",
    "magic": "netdumpMagic",
}
FIELDS = ("name", "address", "node", "magic")
_PAGE = 500
_MAX_CACHED = 65536

_node = config.integer(0, 2**31 - 1)
_magic = config.hexInteger(16)


def _filterText(text: str) -> str:
    text = text.strip()
    if not text.startswith("(") or not text.endswith(")") or text.count("(") != text.count(")"):
        raise ValueError(text)
    return text


SCHEMA = Schema(
    [
        Key("url", config.string, None, help="ldap://host[:port][/base] or ldaps://..."),
        Key("base", config.string, None, help="where the hosts are (a DN)"),
        Key("bind_dn", config.string, None, allowEmpty=True,
            help="DN to bind as (anonymous if not given)"),
        Key("password_file", config.string, None, allowEmpty=True,
            help="file holding the bind password (one line)"),
        Key("starttls", config.boolean, False, help="StartTLS on an ldap:// URL"),
        Key("ca_file", config.string, None, allowEmpty=True,
            help="CA certificates (PEM) trusted for the server [default: the system's]"),
        Key("filter", config.Coercer(_filterText, "an LDAP filter in parentheses"),
            DEFAULT_FILTER, help="which entries are hosts"),
        Key("map.", config.string, None, prefix=True,
            help="attribute for a host field: map.name, map.address, map.node, map.magic"),
        Key("ttl", config.number(0, 86400 * 7), 300.0, help="seconds an answer is cached"),
        Key("timeout", config.number(0.1, 600), 5.0,
            help="seconds a lookup may take before the server counts as unreachable"),
        Key("retry", config.number(0.1, 3600), 10.0,
            help="seconds between tries while the server is unreachable"),
    ]
)


@attrs.frozen
class LDAPSettings:
    """
    How to reach the directory and read hosts from it.

    @ivar url: C{ldap://host[:port]} or C{ldaps://host[:port]}, no path.
    @ivar base: the DN searched (subtree).
    @ivar bindDN: the DN bound as, or L{None} for an anonymous bind.
    @ivar password: the bind password (never shown by C{repr}).
    @ivar passwordFile: where it was read from.
    @ivar startTLS: send StartTLS before binding (C{ldap://} only).
    @ivar caFile: PEM file of trusted CAs, or L{None} for the system's.
    @ivar filter: which entries are hosts.
    @ivar attributes: host field (L{FIELDS}) -> LDAP attribute.
    @ivar ttl: seconds an answer is cached.
    @ivar timeout: seconds a lookup may take.
    @ivar retry: seconds between tries while the server is unreachable.
    """

    url: str
    base: str
    bindDN: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    passwordFile: str | None = None
    startTLS: bool = False
    caFile: str | None = None
    filter: str = DEFAULT_FILTER
    attributes: Mapping[str, str] = attrs.field(factory=lambda: dict(DEFAULT_MAP))
    ttl: float = 300.0
    timeout: float = 5.0
    retry: float = 10.0

    @property
    def security(self) -> str:
        """
        C{"ldaps"}, C{"StartTLS"} or C{"none"}.
        """
        if self.url.startswith("ldaps:"):
            return "ldaps"
        return "StartTLS" if self.startTLS else "none"


def _splitURL(url: str, where: str) -> tuple[str, str | None]:
    """
    C{ldap[s]://host[:port]} and the base DN of its path, if any.
    """
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme.lower() not in ("ldap", "ldaps") or not parts.netloc:
        raise DirectoryError(f"{where}: {url!r} is not an ldap:// or ldaps:// URL")
    if parts.query or parts.fragment:
        raise DirectoryError(
            f"{where}: {url!r}: only ldap[s]://host[:port]/base is understood; "
            "give the filter as 'filter =' in the settings file")
    try:
        parts.port
    except ValueError:
        raise DirectoryError(f"{where}: {url!r} has a bad port") from None
    if parts.username is not None or not parts.hostname:
        raise DirectoryError(f"{where}: {url!r} must name a host (no user part)")
    base = urllib.parse.unquote(parts.path.lstrip("/")) or None
    return f"{parts.scheme.lower()}://{parts.netloc}", base


def _readPassword(path: str, where: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise DirectoryError(f"{where}: cannot read password file {path}: {reason}") from None
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith("\r"):
        text = text[:-1]
    if not text:
        raise DirectoryError(f"{where}: password file {path} is empty")
    return text


def loadSettings(url: str | None = None, configFile: str | None = None) -> LDAPSettings:
    """
    The directory settings: C{configFile} first, then C{url} (and the base
    DN in its path) overriding the file's.

    @raise DirectoryError: the file has a bad line (named file:line), or the
        settings are incomplete or inconsistent.
    """
    if configFile is not None:
        try:
            conf = SCHEMA.load(configFile)
        except ConfigError as e:
            raise DirectoryError(str(e)) from None
        for warning in conf.warnings:
            raise DirectoryError(str(warning))
    else:
        conf = SCHEMA.defaults()
    where = configFile or "--directory"
    if url is not None:
        conf.override("url", url)
    if conf["url"] is None:
        raise DirectoryError(f"{where}: no LDAP server: give url = ldap[s]://host/base")
    server, pathBase = _splitURL(conf["url"], conf.sources["url"])
    base = pathBase if pathBase is not None else conf["base"]
    if not base:
        raise DirectoryError(f"{where}: no base DN: give it as base = or as the URL's path")
    unknown = sorted(set(conf["map."]) - set(FIELDS))
    if unknown:
        raise DirectoryError(
            f"{where}: unknown map key(s) {', '.join('map.' + k for k in unknown)}: "
            f"expected {', '.join('map.' + f for f in FIELDS)}")
    attributes = {**DEFAULT_MAP, **conf["map."]}
    bindDN, passwordFile = conf["bind_dn"], conf["password_file"]
    if bindDN and not passwordFile:
        raise DirectoryError(f"{where}: bind_dn is given but no password_file")
    if passwordFile and not bindDN:
        raise DirectoryError(f"{where}: password_file is given but no bind_dn")
    if passwordFile and configFile and not os.path.isabs(passwordFile):
        passwordFile = os.path.join(os.path.dirname(os.path.abspath(configFile)), passwordFile)
    password = _readPassword(passwordFile, where) if passwordFile else None
    if conf["starttls"] and server.startswith("ldaps:"):
        raise DirectoryError(f"{where}: starttls is for ldap:// URLs; {server} is TLS already")
    caFile = conf["ca_file"]
    if caFile is not None and not os.path.isfile(caFile):
        raise DirectoryError(f"{where}: CA file {caFile} does not exist")
    return LDAPSettings(
        url=server, base=base, bindDN=bindDN or None, password=password,
        passwordFile=passwordFile, startTLS=conf["starttls"], caFile=caFile,
        filter=conf["filter"], attributes=attributes, ttl=conf["ttl"],
        timeout=conf["timeout"], retry=conf["retry"])


# -- entries and filters (no I/O) -----------------------------------------


class BadEntry(DirectoryError):
    """
    An entry that matched the host filter but cannot be a host (no
    address, a bad magic...); the message names its DN.
    """


def _escape(value: str) -> str:
    """
    C{value} escaped for an LDAP filter (RFC 4515).
    """
    out = []
    for ch in value:
        if ch in "*()\\\0":
            out.append(f"\\{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def searchFilter(settings: LDAPSettings, field: str | None = None,
                 value: str | int | None = None) -> str:
    """
    The filter for hosts whose C{field} is C{value}, or for all hosts.
    """
    if field is None:
        return settings.filter
    if field not in ("name", "address", "node"):
        raise ValueError(field)
    attribute = settings.attributes[field]
    return f"(&{settings.filter}({attribute}={_escape(str(value))}))"


def _values(attributes: Mapping[str, Any], name: str) -> list[str]:
    """
    The values of attribute C{name} (case-insensitive), as text.
    """
    lowered = name.lower()
    for key, values in attributes.items():
        if key.lower() == lowered:
            if isinstance(values, (bytes, str)):
                values = [values]
            return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                    for v in values]
    return []


def _rdnValue(dn: str, attribute: str) -> str | None:
    first = dn.split(",", 1)[0]
    key, sep, value = first.partition("=")
    if sep and key.strip().lower() == attribute.lower() and "\\" not in value:
        return value.strip()
    return None


def recordsFromEntry(dn: str, attributes: Mapping[str, Any],
                     settings: LDAPSettings) -> list[HostRecord]:
    """
    The host records of one entry: one per address it has.  The name is
    the entry's RDN value when that is among the names, else the first.
    The entry's DN is in the records' C{attributes["dn"]}.

    @raise BadEntry: the entry cannot be a host; the message names the DN,
        the attribute and the value.
    """
    fields = settings.attributes
    names = _values(attributes, fields["name"])
    if not names:
        raise BadEntry(f"{dn}: no {fields['name']}")
    rdn = _rdnValue(dn, fields["name"])
    name = rdn if rdn in names else names[0]
    addresses = []
    for text in _values(attributes, fields["address"]):
        try:
            addresses.append(normalizeAddress(text))
        except ValueError:
            raise BadEntry(
                f"{dn}: {fields['address']} {text!r} is not an IP address") from None
    if not addresses:
        raise BadEntry(f"{dn}: no {fields['address']}")

    def single(field: str, coerce: config.Coercer) -> int | None:
        values = _values(attributes, fields[field])
        if not values:
            return None
        if len(values) > 1:
            raise BadEntry(f"{dn}: {fields[field]} has {len(values)} values, expected one")
        try:
            return coerce(values[0])
        except ValueError:
            raise BadEntry(
                f"{dn}: {fields[field]} {values[0]!r} is not {coerce.accepted}") from None

    node = single("node", _node)
    magic = single("magic", _magic)
    return [HostRecord(name, address, node, magic, {"dn": dn}) for address in addresses]


def _pick(records: list[HostRecord], field: str, value: str | int) -> HostRecord | None:
    for record in records:
        if field == "address" and record.address == value:
            return record
        if field == "name" and record.name == value:
            return record
        if field == "node" and record.node == value:
            return record
    return records[0] if records and field != "address" else None


# -- one synchronous connection --------------------------------------------


@attrs.frozen
class Check:
    """
    What L{LDAPClient.check} found.

    @ivar url: the server.
    @ivar security: C{"ldaps"}, C{"StartTLS"} or C{"none"}.
    @ivar boundAs: C{"anonymous"} or the bind DN.
    @ivar base: the base DN.
    @ivar hosts: host records readable under the base.
    @ivar skipped: entries that could not be read, with why.
    @ivar seconds: time taken, connection and bind included.
    """

    url: str
    security: str
    boundAs: str
    base: str
    hosts: int
    skipped: list[str]
    seconds: float


def _tlsProblem(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in (
        "certificate verify failed", "certificate_verify_failed",
        "doesn't match any name", "unknown ca", "self signed", "self-signed",
        "wrong version number", "sslv3 alert", "tlsv1 alert"))


def _unwrap(text: str) -> str:
    """
    ldap3 re-raises errors as C{type(e)(str(e))}, so a message can arrive
    as the repr of a tuple of one string, nested: C{"('reason',)"}.
    """
    while text.startswith("(") and text.endswith(",)"):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            break
        if not (isinstance(value, tuple) and len(value) == 1 and isinstance(value[0], str)):
            break
        text = value[0]
    return text


def _describe(error: BaseException) -> str:
    """
    The text of an ldap3 error: the reason for each address tried.
    """
    text = _unwrap(str(error))
    history = error.args[1] if len(error.args) > 1 and isinstance(error.args[1], list) else None
    if history:
        text = "; ".join(f"{address[0]}: {_unwrap(str(exc))}" for exc, address in history
                         if isinstance(address, tuple) and address) or text
    return text


class LDAPClient:
    """
    One connection to the directory server, opened on first use and opened
    again after it broke.  Not thread-safe: use it from one thread.

    @ivar settings: the L{LDAPSettings}.
    @ivar skipped: entries the last L{hosts} call could not read, with why.
    """

    def __init__(self, settings: LDAPSettings) -> None:
        self.settings = settings
        self.skipped: list[str] = []
        self._connection: Any = None

    def _unreachable(self, error: BaseException) -> DirectoryUnavailable:
        text = _describe(error)
        if "timed out" in text.lower():
            return DirectoryUnavailable(
                f"LDAP server {self.settings.url} did not answer within "
                f"{self.settings.timeout:g}s ({text})")
        return DirectoryUnavailable(f"LDAP server {self.settings.url} unreachable: {text}")

    def connect(self) -> None:
        """
        Open the connection (with StartTLS when set) and bind.

        @raise DirectoryUnavailable: the server cannot be reached or does
            not answer within the timeout.
        @raise DirectoryError: the server refused the credentials or TLS
            cannot be trusted.
        """
        import ssl

        import ldap3
        from ldap3.core import exceptions as lx

        self.close()
        s = self.settings
        parts = urllib.parse.urlsplit(s.url)
        useSSL = parts.scheme == "ldaps"
        tls = None
        if useSSL or s.startTLS:
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=s.caFile)
        server = ldap3.Server(
            parts.hostname, port=parts.port or (636 if useSSL else 389), use_ssl=useSSL,
            tls=tls, get_info=ldap3.NONE, connect_timeout=s.timeout)
        connection = ldap3.Connection(
            server, user=s.bindDN, password=s.password, auto_bind=ldap3.AUTO_BIND_NONE,
            # ldap3 packs the receive timeout as whole seconds; callers are
            # answered after the exact timeout anyway (LDAPHostDirectory).
            read_only=True, raise_exceptions=True, receive_timeout=math.ceil(s.timeout),
            client_strategy=ldap3.SYNC, check_names=False)
        try:
            connection.open()
            if s.startTLS:
                connection.start_tls()
            connection.bind()
        except lx.LDAPInvalidCredentialsResult:
            connection.unbind()
            raise DirectoryError(
                f"LDAP server {s.url} refused the bind as {s.bindDN or 'anonymous'}: "
                f"invalid credentials (password from {s.passwordFile or 'nowhere'})") from None
        except lx.LDAPOperationResult as e:
            connection.unbind()
            raise DirectoryError(
                f"LDAP server {s.url} refused the bind as {s.bindDN or 'anonymous'}: "
                f"{e.description}: {e.message or ''}".rstrip(": ")) from None
        except (lx.LDAPCertificateError, lx.LDAPStartTLSError, lx.LDAPSSLConfigurationError) as e:
            self._drop(connection)
            raise DirectoryError(self._tlsMessage(e)) from None
        except lx.LDAPException as e:
            self._drop(connection)
            if _tlsProblem(_describe(e)):
                raise DirectoryError(self._tlsMessage(e)) from None
            raise self._unreachable(e) from None
        self._connection = connection

    def _tlsMessage(self, error: BaseException) -> str:
        trusted = f"the CAs in {self.settings.caFile}" if self.settings.caFile else "the system's CAs"
        return (f"LDAP server {self.settings.url}: TLS ({self.settings.security}) failed, "
                f"its certificate is not trusted by {trusted} or does not name the host: "
                f"{_describe(error)}")

    @staticmethod
    def _drop(connection: Any) -> None:
        try:
            connection.unbind()
        except Exception:
            pass

    def close(self) -> None:
        """
        Close the connection, if open.
        """
        if self._connection is not None:
            connection, self._connection = self._connection, None
            self._drop(connection)

    def _search(self, filterText: str, paged: bool) -> list[tuple[str, Mapping[str, Any]]]:
        """
        Every entry under the base matching C{filterText}, reconnecting
        once when a kept connection turns out to be broken.
        """
        from ldap3.core import exceptions as lx

        for attempt in (0, 1):
            fresh = self._connection is None
            if fresh:
                self.connect()
            try:
                return self._pages(filterText, paged)
            except lx.LDAPNoSuchObjectResult:
                raise DirectoryError(
                    f"LDAP server {self.settings.url}: base {self.settings.base!r} does not "
                    f"exist, or {self.settings.bindDN or 'an anonymous bind'} may not see "
                    "it") from None
            except lx.LDAPOperationResult as e:
                if e.result in (51, 52, 80):  # busy, unavailable, other
                    self.close()
                    raise self._unreachable(e) from None
                raise DirectoryError(
                    f"LDAP server {self.settings.url}: search under {self.settings.base!r} "
                    f"failed: {e.description}: {e.message or ''}".rstrip(": ")) from None
            except lx.LDAPException as e:
                self.close()
                if fresh or attempt:
                    raise self._unreachable(e) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _pages(self, filterText: str, paged: bool) -> list[tuple[str, Mapping[str, Any]]]:
        import ldap3

        connection = self._connection
        wanted = sorted(set(self.settings.attributes.values()))
        entries: list[tuple[str, Mapping[str, Any]]] = []
        cookie: Any = None
        while True:
            connection.search(
                self.settings.base, filterText, search_scope=ldap3.SUBTREE,
                attributes=wanted, time_limit=max(1, int(self.settings.timeout + 0.999)),
                paged_size=_PAGE if paged else None, paged_cookie=cookie)
            for item in connection.response or ():
                if item.get("type") == "searchResEntry":
                    entries.append((item["dn"], item.get("raw_attributes") or {}))
            if not paged:
                return entries
            controls = (connection.result or {}).get("controls") or {}
            paged = controls.get("1.2.840.113556.1.4.319")
            cookie = paged["value"]["cookie"] if paged else None
            if not cookie:
                return entries

    def lookup(self, field: str, value: str | int) -> HostRecord | None:
        """
        The host whose C{field} (C{address}, C{name} or C{node}) is
        C{value}, or L{None}.

        @raise DirectoryError: the server cannot answer (see L{connect}), or
            the host's entry cannot be read (the message names the DN).
        """
        if field == "address":
            try:
                value = normalizeAddress(str(value))
            except ValueError:
                return None
        entries = self._search(searchFilter(self.settings, field, value), paged=False)
        records: list[HostRecord] = []
        for dn, attributes in entries:
            records.extend(recordsFromEntry(dn, attributes, self.settings))
        return _pick(records, field, value)

    def hosts(self) -> list[HostRecord]:
        """
        Every host under the base, one record per address, in the server's
        order.  Entries that cannot be read are left out and listed in
        L{skipped}.
        """
        records: list[HostRecord] = []
        self.skipped = []
        for dn, attributes in self._search(searchFilter(self.settings), paged=True):
            try:
                records.extend(recordsFromEntry(dn, attributes, self.settings))
            except BadEntry as e:
                self.skipped.append(str(e))
        return records

    def check(self, clock: Callable[[], float] = time.monotonic) -> Check:
        """
        Connect, bind and read every host: what an operator asks first.
        """
        started = clock()
        self.connect()
        count = len(self.hosts())
        s = self.settings
        return Check(url=s.url, security=s.security, boundAs=s.bindDN or "anonymous",
                     base=s.base, hosts=count, skipped=list(self.skipped),
                     seconds=clock() - started)


def verify(settings: LDAPSettings) -> str | None:
    """
    Connect, bind and search the base once, blocking: for start-up, before
    the reactor runs, so that a wrong password or an untrusted certificate
    stops the daemon with a clear message.

    @return: L{None} when it worked; why, when the server is out of reach
        (not an error at start: the daemon runs and tries again).
    @raise DirectoryError: the server refused the credentials, TLS cannot
        be trusted, or the base does not exist.
    """
    client = LDAPClient(settings)
    try:
        client.connect()
        client.lookup("name", "\0sysmon-verify")
    except DirectoryUnavailable as e:
        return str(e)
    finally:
        client.close()
    return None


# -- the directory daemons use ---------------------------------------------


@attrs.define
class _Cached:
    record: HostRecord | None
    expires: float


@attrs.define
class _Outage:
    since: float
    nextTry: float
    reason: str
    answered: int = 0


@implementer(IHostDirectory)
class LDAPHostDirectory:
    """
    Hosts from an LDAP server, asked from a worker thread, cached.

    @ivar settings: the L{LDAPSettings}.
    """

    log = Logger()

    def __init__(self, settings: LDAPSettings, reactor: Any = None,
                 runInThread: Callable[..., defer.Deferred[Any]] | None = None,
                 client: LDAPClient | None = None, unreachable: str | None = None) -> None:
        """
        @param unreachable: why the server could not be reached at start
            (L{verify}'s answer); the outage begins now.
        @param runInThread: C{runInThread(f, *args)} runs C{f} off the
            reactor thread and returns a Deferred of its result (tests give
            their own); by default a thread pool of one thread.
        @param client: the connection used in that thread.
        """
        if reactor is None:
            from twisted.internet import reactor  # noqa: PLW0621
        self.reactor = reactor
        self.settings = settings
        self._client = client if client is not None else LDAPClient(settings)
        self._runInThread = runInThread
        self._pool: Any = None
        self._trigger: Any = None
        self._cache: collections.OrderedDict[tuple[str, str | int], _Cached] = (
            collections.OrderedDict())
        self._asking: dict[tuple[str, str | int], list[defer.Deferred[Any]]] = {}
        self._outage: _Outage | None = None
        self._closed = False
        self._checkPasswordFile()
        self.log.info(
            "host directory {url} ({security}), bound as {who}, base {base}, "
            "answers cached {ttl:g}s, lookup timeout {timeout:g}s",
            url=settings.url, security=settings.security, who=settings.bindDN or "anonymous",
            base=settings.base, ttl=settings.ttl, timeout=settings.timeout)
        if unreachable is not None:
            self._enterOutage(unreachable)

    def _checkPasswordFile(self) -> None:
        path = self.settings.passwordFile
        if path is None:
            return
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            self.log.warn(
                "LDAP password file {path} can be read by others (mode {mode:04o}): chmod 600 it",
                path=path, mode=stat.S_IMODE(mode))

    # -- life --------------------------------------------------------------

    def _run(self, f: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        if self._runInThread is not None:
            return self._runInThread(f, *args)
        if self._pool is None:
            from twisted.python.threadpool import ThreadPool

            self._pool = ThreadPool(minthreads=0, maxthreads=1, name="sysmon-ldap")
            self._pool.start()
            self._trigger = self.reactor.addSystemEventTrigger("during", "shutdown", self.close)
        from twisted.internet.threads import deferToThreadPool

        return deferToThreadPool(self.reactor, self._pool, f, *args)

    def close(self) -> None:
        """
        Stop the worker thread (after its current question) and close the
        connection.
        """
        self._closed = True
        pool, self._pool = self._pool, None
        trigger, self._trigger = self._trigger, None
        if trigger is not None:
            try:
                self.reactor.removeSystemEventTrigger(trigger)
            except (ValueError, KeyError):
                pass  # running: the reactor is shutting down
        if pool is not None:
            pool.callInThread(self._client.close)
            pool.stop()
        else:
            self._client.close()

    # -- the cache ---------------------------------------------------------

    def _remember(self, key: tuple[str, str | int], record: HostRecord | None,
                  now: float) -> None:
        self._cache[key] = _Cached(record, now + self.settings.ttl)
        self._cache.move_to_end(key)
        while len(self._cache) > _MAX_CACHED:
            self._cache.popitem(last=False)

    def _rememberAll(self, records: Iterable[HostRecord], now: float) -> None:
        for record in records:
            self._remember(("address", record.address), record, now)
            self._remember(("name", record.name), record, now)
            if record.node is not None:
                self._remember(("node", record.node), record, now)

    def cached(self) -> int:
        """
        How many hosts the cache holds (known or not, fresh or stale).
        """
        return sum(1 for key, c in self._cache.items()
                   if key[0] == "address" and c.record is not None)

    # -- outages -----------------------------------------------------------

    def _enterOutage(self, reason: str) -> None:
        now = self.reactor.seconds()
        if self._outage is None:
            self._outage = _Outage(since=now, nextTry=now + self.settings.retry, reason=reason)
            self.log.warn(
                "host directory {url} cannot answer: {reason}; answering from the cache "
                "({cached} hosts) and trying again every {retry:g}s",
                url=self.settings.url, reason=reason, cached=self.cached(),
                retry=self.settings.retry)
        else:
            self._outage.nextTry = now + self.settings.retry
            self._outage.reason = reason

    def _leaveOutage(self) -> None:
        outage, self._outage = self._outage, None
        if outage is not None:
            self.log.info(
                "host directory {url} is back after {seconds:.1f}s; {answered} lookups "
                "were answered from the cache meanwhile",
                url=self.settings.url, seconds=self.reactor.seconds() - outage.since,
                answered=outage.answered)

    def _fromCache(self, key: tuple[str, str | int], reason: str) -> HostRecord | None:
        """
        The cached answer for C{key}, stale or not.

        @raise DirectoryUnavailable: the cache does not know C{key}.
        """
        cached = self._cache.get(key)
        if cached is None:
            field, value = key
            raise DirectoryUnavailable(f"unknown host ({field} {value}): {reason}")
        if self._outage is not None:
            self._outage.answered += 1
        return cached.record

    # -- lookups -----------------------------------------------------------

    def _lookup(self, field: str, value: str | int) -> defer.Deferred[HostRecord | None]:
        key = (field, value)
        now = self.reactor.seconds()
        cached = self._cache.get(key)
        if cached is not None and cached.expires > now:
            return defer.succeed(cached.record)
        if self._closed:
            return defer.fail(DirectoryUnavailable(f"host directory {self.settings.url} closed"))
        if self._outage is not None and now < self._outage.nextTry:
            return defer.maybeDeferred(self._fromCache, key, self._outage.reason)
        answer: defer.Deferred[HostRecord | None] = defer.Deferred()
        waiting = self._asking.get(key)
        if waiting is not None:
            waiting.append(answer)
            return answer
        self._asking[key] = [answer]
        if self._outage is not None:
            self._outage.nextTry = now + self.settings.retry
        asked = self._run(self._client.lookup, key[0], key[1])
        asked.addTimeout(self.settings.timeout, self.reactor)
        asked.addBoth(self._answered, key)
        return answer

    def _outageReason(self, failure: Failure) -> str | None:
        """
        Why C{failure} means the server cannot answer at all (so the cache
        answers), or L{None} when it is about one host (a bad entry).
        """
        if failure.check(defer.TimeoutError):
            return (f"LDAP server {self.settings.url} did not answer within "
                    f"{self.settings.timeout:g}s")
        if failure.check(BadEntry) or not failure.check(DirectoryError):
            return None
        return failure.getErrorMessage()

    def _answered(self, result: Any, key: tuple[str, str | int]) -> None:
        waiting = self._asking.pop(key, [])
        answer: Any = result
        if isinstance(result, Failure):
            reason = self._outageReason(result)
            if reason is not None:
                self._enterOutage(reason)
                try:
                    answer = self._fromCache(key, reason)
                except DirectoryUnavailable:
                    answer = Failure()
            elif not result.check(DirectoryError):
                self.log.failure("host directory lookup of {key} failed", result, key=key)
        else:
            self._leaveOutage()
            self._remember(key, result, self.reactor.seconds())
        for d in waiting:
            if isinstance(answer, Failure):
                d.errback(answer)
            else:
                d.callback(answer)

    def lookupAddress(self, address: str) -> defer.Deferred[HostRecord | None]:
        try:
            normalized = normalizeAddress(address)
        except ValueError:
            return defer.succeed(None)
        return self._lookup("address", normalized)

    def lookupName(self, name: str) -> defer.Deferred[HostRecord | None]:
        return self._lookup("name", name)

    def lookupNode(self, node: int) -> defer.Deferred[HostRecord | None]:
        return self._lookup("node", node)

    def hosts(self) -> defer.Deferred[list[HostRecord]]:
        """
        Every host, asked from the server (never from the cache, which may
        be partial); the answers refresh the cache.
        """
        if self._closed:
            return defer.fail(DirectoryUnavailable(f"host directory {self.settings.url} closed"))
        now = self.reactor.seconds()
        if self._outage is not None and now < self._outage.nextTry:
            return defer.fail(DirectoryUnavailable(
                f"cannot list hosts: {self._outage.reason}"))

        def ask() -> tuple[list[HostRecord], list[str]]:
            records = self._client.hosts()
            return records, list(self._client.skipped)

        asked = self._run(ask)
        asked.addTimeout(self.settings.timeout, self.reactor)

        def done(result: tuple[list[HostRecord], list[str]]) -> list[HostRecord]:
            records, skipped = result
            self._leaveOutage()
            self._rememberAll(records, self.reactor.seconds())
            for why in skipped:
                self.log.warn("host directory entry skipped: {why}", why=why)
            return records

        def failed(f: Failure) -> Failure:
            reason = self._outageReason(f)
            if reason is None:
                return f
            self._enterOutage(reason)
            return Failure(DirectoryUnavailable(f"cannot list hosts: {reason}"))

        return asked.addCallbacks(done, failed)
