"""
The application of C{conf/sysmon.tac}: every daemon enabled in the ini
file, built by its own twistd plugin, under one application, with the
HTTP port (status page and C{/metrics}), the log observers and the
service manager's notifications.

Each daemon section is turned into that daemon's command line: C{key =
value} becomes C{--key=value}, a flag key set to C{yes} becomes C{--key}
(C{no} leaves it out), and a repeated key is repeated.  The command line is
parsed by the plugin's own C{Options} and the service made by the
plugin's own C{makeService}: exactly what C{twistd <daemon> --key=value}
does, so the ini accepts what the command line accepts, with the same
checks and defaults, and there is no second way to configure a daemon.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Callable, Sequence

import attrs
from twisted.application import internet, service
from twisted.application.service import IServiceMaker
from twisted.internet import task
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.python import usage

from sysmon.ops import ini
from sysmon.ops.daemons import Daemons
from sysmon.ops.ini import Entry, IniError, Section

__all__ = ["DAEMONS", "HttpSettings", "LogSettings", "Ready", "buildDaemon", "daemonArgv",
           "findMaker", "makeApplication"]

log = Logger(namespace="sysmon.ops")

#: The daemon sections, in the order they start (the watchdog last, so
#: that it only starts feeding once the others are up).
DAEMONS = ("netdump", "statd", "recvstats", "sendstats", "keepalive", "watchdog")

#: Options that belong to twistd, not to the daemon: in a tac, twistd's own
#: command line decides them.
_TWISTD_OWN = {"daemon": "give twistd -n or leave it out", "pidfile": "give twistd --pidfile",
               "help": "run twistd DAEMON --help", "version": "run twistd --version"}

DEFAULT_HTTP_PORT = 8080


def findMaker(tapname: str) -> IServiceMaker:
    """
    The twistd plugin (L{IServiceMaker}) whose C{tapname} is C{tapname}.

    @raise LookupError: no such plugin is installed.
    """
    from twisted import plugin, plugins

    for maker in plugin.getPlugins(IServiceMaker, plugins):
        if maker.tapname == tapname:
            return maker
    raise LookupError(f"no twistd plugin named {tapname!r} is installed")


def _optionKinds(options: usage.Options) -> tuple[set[str], set[str]]:
    """
    The long flag names and the long parameter names of C{options}.
    """
    flags = {name for name in options.longOpt if not name.endswith("=")}
    params = {name[:-1] for name in options.longOpt if name.endswith("=")}
    return flags, params


def daemonArgv(section: Section, options: usage.Options) -> list[tuple[Entry, list[str]]]:
    """
    Each line of C{section} with the command-line arguments it stands for,
    as C{options} (an instance of the daemon's C{Options}) takes them.

    @raise IniError: a key that is not one of the daemon's long options, a
        flag whose value is not yes or no, or one of twistd's own options.
    """
    flags, params = _optionKinds(options)
    out: list[tuple[Entry, list[str]]] = []
    for entry in section.entries:
        if entry.key in _TWISTD_OWN:
            raise section.error(f"twistd's own option, not {section.name}'s: "
                                f"{_TWISTD_OWN[entry.key]}", entry)
        if entry.key in flags:
            try:
                on = ini.truth(entry.value)
            except ValueError as e:
                raise section.error(f"a flag: {e}", entry)
            out.append((entry, [f"--{entry.key}"] if on else []))
        elif entry.key in params:
            out.append((entry, [f"--{entry.key}={entry.value}"]))
        else:
            close = difflib.get_close_matches(entry.key, sorted(flags | params), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise section.error(f"{section.name} has no option --{entry.key}{hint}; "
                                f"see twistd {section.name} --help", entry)
    return out


def _blame(section: Section, message: str) -> Entry | None:
    """
    The line an error message of the whole command line is about: the last
    line whose key the message names (C{--key} or C{key}), if any.
    """
    for entry in reversed(section.entries):
        if re.search(rf"(?:^|--|[^\w-]){re.escape(entry.key)}(?![\w-])", message):
            return entry
    for entry in reversed(section.entries):
        if len(entry.value) > 1 and entry.value in message:
            return entry
    return None


def _parse(maker: IServiceMaker, argv: Sequence[str], whole: bool) -> usage.Options:
    options = maker.options()
    if not whole:
        # One option alone: its own coercion and checks, not the cross-checks
        # (which need the other options).
        options.postOptions = lambda: None  # type: ignore[method-assign]
    options.parseOptions(list(argv))
    return options


def buildDaemon(section: Section, maker: IServiceMaker | None = None) -> service.IService:
    """
    The daemon of C{section}, built as twistd builds it: the plugin's
    C{Options} parse the section's command line and the plugin's
    C{makeService} makes the service.

    @raise IniError: the section's line that the daemon refused, or its
        header when the refusal names no key.
    """
    maker = maker or findMaker(section.name)
    lines = daemonArgv(section, maker.options())
    for entry, argv in lines:
        try:
            _parse(maker, argv, whole=False)
        except usage.UsageError as e:
            raise section.error(str(e), entry)
    argv = [arg for _, args in lines for arg in args]
    try:
        options = _parse(maker, argv, whole=True)
        return maker.makeService(options)
    except usage.UsageError as e:
        raise section.error(str(e), _blame(section, str(e)))


@attrs.frozen
class HttpSettings:
    """
    The C{[http]} section: the status page and C{/metrics}.
    """

    port: int = DEFAULT_HTTP_PORT
    interface: str = "127.0.0.1"
    accessLog: str | None = None

    @classmethod
    def fromSection(cls, section: Section) -> HttpSettings:
        values: dict[str, Any] = {}
        for entry in section.entries:
            if entry.key == "port":
                try:
                    values["port"] = usage.portCoerce(entry.value)
                except ValueError as e:
                    raise section.error(f"{entry.value!r}: {e}", entry)
            elif entry.key == "interface":
                values["interface"] = entry.value
            elif entry.key == "access-log":
                values["accessLog"] = entry.value or None
            else:
                raise section.error("not a key of [http] (enabled, port, interface, "
                                    "access-log)", entry)
        return cls(**values)


@attrs.frozen
class LogSettings:
    """
    The C{[log]} section: log observers added to twistd's own.

    @ivar journal: C{"yes"}, C{"no"} or C{"auto"} (when started by systemd).
    """

    journal: str = "auto"
    syslog: bool = False
    json: str | None = None
    level: LogLevel = LogLevel.info

    @classmethod
    def fromSection(cls, section: Section) -> LogSettings:
        values: dict[str, Any] = {}
        for entry in section.entries:
            try:
                if entry.key == "journal":
                    value = entry.value.lower()
                    if value != "auto":
                        value = "yes" if ini.truth(value) else "no"
                    values["journal"] = value
                elif entry.key == "syslog":
                    values["syslog"] = ini.truth(entry.value)
                elif entry.key == "json":
                    values["json"] = entry.value or None
                elif entry.key == "level":
                    try:
                        values["level"] = LogLevel.levelWithName(entry.value.lower())
                    except Exception:
                        raise ValueError(f"{entry.value!r} is not one of debug, info, warn, "
                                         "error, critical")
                else:
                    raise ValueError("not a key of [log] (journal, syslog, json, level)")
            except ValueError as e:
                raise section.error(str(e), entry)
        return cls(**values)


class _QuietSite:
    """
    Builds the twisted.web site: with no access log configured, requests
    are not logged (the status page polls every few seconds).
    """

    @staticmethod
    def make(resource: Any, accessLog: str | None) -> Any:
        from twisted.web import server

        if accessLog:
            return server.Site(resource, logPath=accessLog)

        class Site(server.Site):
            def log(self, request: Any) -> None:
                pass

        return Site(resource)


class Ready(service.Service):
    """
    Tells the service manager (C{$NOTIFY_SOCKET}) that the application is
    up once every daemon has started (C{READY=1}), and, when the unit has
    C{WatchdogSec=} and the watchdog daemon is not enabled (it sends its
    own C{WATCHDOG=1} at each refresh, until it stops feeding), that the
    reactor is alive, at half the interval.
    """

    log = Logger()

    def __init__(self, names: Sequence[str], notifier: Any, interval: float | None,
                 reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor  # noqa: PLW0621
        self.reactor = reactor
        self.names = list(names)
        self.notifier = notifier
        self.interval = interval
        self.loop: task.LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        status = "running " + ", ".join(self.names) if self.names else "no daemon enabled"
        self.log.info("sysmon started: {status}", status=status)
        self.notifier.send("READY=1", f"STATUS={status}")
        if self.interval:
            self.loop = task.LoopingCall(self.notifier.send, "WATCHDOG=1")
            self.loop.clock = self.reactor
            self.loop.start(self.interval / 2, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        self.loop = None
        self.notifier.send("STOPPING=1")


def _sections(path: str) -> dict[str, Section]:
    sections = ini.read(path)
    known = (*DAEMONS, "http", "log")
    for section in sections:
        if section.name not in known:
            raise section.error("not a section sysmon knows; the sections are "
                                + ", ".join(f"[{name}]" for name in known))
    return {section.name: section for section in sections}


def makeApplication(path: str, reactor: Any = None,
                    addObserver: Callable[[Any], None] = globalLogPublisher.addObserver,
                    environ: Any = None) -> service.Application:
    """
    The application the ini file at C{path} describes.

    @param addObserver: where the C{[log]} section's observers go.
    @param environ: the environment (C{os.environ}) for the service
        manager's variables.
    @raise IniError: anything wrong in the file, naming the line.
    """
    import os

    from sysmon import sdnotify
    from sysmon.ops import logs, metrics, web

    if reactor is None:
        from twisted.internet import reactor  # noqa: PLW0621
    environ = os.environ if environ is None else environ
    sections = _sections(path)
    logSettings = LogSettings.fromSection(sections["log"]) if "log" in sections else LogSettings()
    daemons = Daemons()
    application = service.Application("sysmon")
    built: list[tuple[str, service.IService]] = []
    for name in DAEMONS:
        section = sections.get(name)
        if section is None or not section.flag("enabled", True):
            continue
        daemon = buildDaemon(section)
        setattr(daemons, name, daemon)
        built.append((name, daemon))
    httpSection = sections.get("http")
    http: HttpSettings | None = None
    if httpSection is not None and httpSection.flag("enabled", True):
        http = HttpSettings.fromSection(httpSection)
    for observer in logs.observers(journal=logSettings.journal, syslog=logSettings.syslog,
                                   json=logSettings.json, level=logSettings.level):
        addObserver(observer)
    for name, daemon in built:
        daemon.setName(name)
        daemon.setServiceParent(application)
    if http is not None:
        registry = metrics.makeRegistry(daemons)
        site = _QuietSite.make(web.makeResource(daemons, registry, reactor), http.accessLog)
        server = internet.TCPServer(http.port, site, interface=http.interface,
                                    reactor=reactor)
        server.setName("http")
        server.setServiceParent(application)
    interval = None if daemons.watchdog is not None else sdnotify.watchdogInterval(environ)
    names = [name for name, _ in built] + (["http"] if http else [])
    Ready(names, sdnotify.Notifier(environ), interval, reactor).setServiceParent(application)
    return application


def load(path: str) -> service.Application:
    """
    What C{conf/sysmon.tac} calls: L{makeApplication}, with an ini error
    turned into a one-line exit message (twistd would print a traceback).
    """
    try:
        return makeApplication(path)
    except IniError as e:
        raise SystemExit(f"sysmon: {e}")
