"""
watchdog.conf: the Linux watchdog daemon's configuration file, read with
the same values the original (5.16) takes.

The file is C{key = value} lines read by the shared L{sysmon.config.Schema}
with the C reader's rules (see L{SCHEMA}):

  - only whole lines are comments: a C{#} after a value is part of the
    value (C{interval = 5 # five} is 5 because integers are read like
    C{atoi}; C{admin = root # me} mails C{"root # me"});
  - quotes are kept; only space, tab, CR, LF and backspace are trimmed; a
    NUL byte ends the line, as it ends the C string;
  - integers must start with a digit, C{+} or C{-} and are then read by
    C{atoi} (C{10s} is 10); otherwise "expected a number", old value kept;
  - yes/no values in any case; keys are case-sensitive;
  - unknown keys and lines without C{=} are warnings with the line number;
  - list keys (C{file}, C{pidfile}, C{ping}, C{interface}, C{test-binary},
    C{temperature-sensor}) append, other keys: the last one wins;
  - C{change} applies to the most recent C{file};
  - an empty text value disables the feature (C{admin =}: no mail).

After the file: C{interval <= 0} is fatal (L{ConfigError}); max-load-5 and
max-load-15 default to 3/4 and 1/2 of max-load-1; C{softboot-option = yes}
makes retry-timeout 0.  The checks that C{--force} skips are in
L{sanityErrors}; L{describe} gives the start-up summary.

sysmon adds keys of its own (mail transport and the file-check time limit):
see L{SYSMON_KEYS} and conf/watchdog.conf.

This module only reads text; it logs nothing.  The daemon logs
L{WatchdogConfig.warnings}.
"""

from __future__ import annotations

import mmap
from typing import Any, Iterable, Mapping

import attrs

from sysmon import config
from sysmon.config import Coercer, ConfigError, ConfigWarning, Key, Schema

__all__ = [
    "ConfigError",
    "ConfigWarning",
    "DEFAULT_CONFIG",
    "FileCheck",
    "LIST_KEYS",
    "MIN_LOAD",
    "SCHEMA",
    "SYSMON_KEYS",
    "WatchdogConfig",
    "describe",
    "load",
    "parse",
    "sanityErrors",
]

DEFAULT_CONFIG = "/etc/watchdog.conf"

# The original's configure --with-minload: smaller max-load-1 values are
# refused without --force.
MIN_LOAD = 2

# The characters the C reader (read-conf.c is_white) trims.
_C_WHITESPACE = " \t\r\n\b"

LIST_KEYS = ("file", "pidfile", "ping", "interface", "test-binary", "temperature-sensor")
"""
Keys whose every line adds an entry.
"""

SYSMON_KEYS = (
    "smtp-host",
    "smtp-port",
    "smtp-ca-file",
    "mail-from",
    "sendmail",
    "file-timeout",
)
"""
Keys the original does not have (it would warn about them and go on).
"""


def _yesNo(text: str) -> bool:
    lowered = text.lower()
    if lowered == "yes":
        return True
    if lowered == "no":
        return False
    raise ValueError(text)


yesNo = Coercer(_yesNo, "yes or no (any case)")


def _yesNoAuto(text: str) -> str:
    lowered = text.lower()
    if lowered not in ("yes", "no", "auto"):
        raise ValueError(text)
    return lowered


yesNoAuto = Coercer(_yesNoAuto, "auto, yes or no (any case)")


@attrs.frozen
class _NotANumber:
    """
    The value of a C{change} line whose text is not a number.  The original
    warns and still applies 0 to the last file, so C{change} cannot simply
    be refused like other integers.
    """

    text: str


def _changeValue(text: str) -> int | _NotANumber:
    try:
        return config.cInteger(text)
    except ValueError:
        return _NotANumber(text)


changeValue = Coercer(_changeValue, "a number")


def _seconds(text: str) -> float:
    value = config.number(0.0).convert(text)
    if value <= 0:
        raise ValueError(text)
    return value


seconds = Coercer(_seconds, "a number of seconds > 0")

def _key(
    field: str | None, name: str, coerce: Coercer, default: Any = None, help: str = "", **kw: Any
) -> tuple[Key, str | None]:
    return Key(name, coerce, default, help=help, **kw), field


_text = config.string
_int = config.cInteger
_list: dict[str, Any] = {"multiple": True}
_blank: dict[str, Any] = {"allowEmpty": True}

# (key, WatchdogConfig field); field None: assembled by parse() itself.
_PAIRS: list[tuple[Key, str | None]] = [
    _key("interval", "interval", _int, 1, "seconds between check rounds"),
    _key("logtick", "logtick", _int, 1, "verbose 'still alive' every N rounds"),
    _key("maxLoad1", "max-load-1", _int, 0, "1-minute load average limit"),
    _key("maxLoad5", "max-load-5", _int, 0, "5-minute load average limit"),
    _key("maxLoad15", "max-load-15", _int, 0, "15-minute load average limit"),
    _key("minMemory", "min-memory", _int, 0, "pages that must be available"),
    _key("allocatableMemory", "allocatable-memory", _int, 0, "pages that must be allocatable"),
    _key("maxSwap", "max-swap", _int, 0, "pages of swap that may be in use"),
    _key("device", "watchdog-device", _text, None, "device to feed", **_blank),
    _key("deviceTimeout", "watchdog-timeout", _int, 60, "hardware time-out in seconds"),
    _key(
        "refreshUseSettimeout",
        "watchdog-refresh-use-settimeout",
        yesNoAuto,
        "auto",
        "refresh with WDIOC_SETTIMEOUT instead of a write",
    ),
    _key(
        "refreshIgnoreErrors",
        "watchdog-refresh-ignore-errors",
        yesNo,
        False,
        "refresh errors are not faults",
    ),
    _key(None, "temperature-sensor", _text, None, "sysfs file in milli-degrees C", **_list),
    _key(None, "temperature-device", _text, None, "obsolete (5.14): a sensor", **_list),
    _key("maxTemperature", "max-temperature", _int, 90, "degrees C"),
    _key("tempPowerOff", "temp-power-off", yesNo, True, "when too hot: power off, else halt"),
    _key(None, "file", _text, None, "file that must stat()", **_list),
    _key(None, "change", changeValue, None, "seconds the last file's mtime may age", **_blank),
    _key("pidfiles", "pidfile", _text, None, "pid file of a process that must live", **_list),
    _key("pings", "ping", _text, None, "IPv4 address to ping", **_list),
    _key("pingCount", "ping-count", _int, 3, "ping attempts per round"),
    _key("interfaces", "interface", _text, None, "interface that must receive", **_list),
    _key("testBinaries", "test-binary", _text, None, "V0 test program", **_list),
    _key("testTimeout", "test-timeout", _int, 60, "seconds a test may run"),
    _key("testDirectory", "test-directory", _text, "/etc/watchdog.d", "V1 programs", **_blank),
    _key("repairBinary", "repair-binary", _text, None, "repair program", **_blank),
    _key("repairTimeout", "repair-timeout", _int, 60, "seconds a repair may run"),
    _key("retryTimeout", "retry-timeout", _int, 60, "seconds a fault may last"),
    _key("repairMaximum", "repair-maximum", _int, 1, "repairs that leave the fault"),
    _key("softboot", "softboot-option", yesNo, False, "act at the first fault"),
    _key("admin", "admin", _text, "root", "mail recipient", **_blank),
    _key("sigtermDelay", "sigterm-delay", _int, 5, "seconds from TERM to KILL"),
    _key("realtime", "realtime", yesNo, False, "lock memory, run SCHED_RR"),
    _key("priority", "priority", _int, 1, "SCHED_RR priority"),
    _key("logDir", "log-dir", _text, "/var/log/watchdog", "program output files", **_blank),
    _key("heartbeatFile", "heartbeat-file", _text, None, "ring of refresh times", **_blank),
    _key("heartbeatStamps", "heartbeat-stamps", _int, 300, "records in the ring"),
    _key("verbose", "verbose", _int, 0, "log detail"),
    _key("logKilledPids", "log-killed-pids", yesNo, False, "log the PIDs killed at shutdown"),
    # sysmon's own keys
    _key("smtpHost", "smtp-host", _text, "localhost", "mail server"),
    _key("smtpPort", "smtp-port", config.integer(1, 65535), 25, "mail server port"),
    _key("smtpCAFile", "smtp-ca-file", _text, None, "CA certificates (PEM)", **_blank),
    _key("mailFrom", "mail-from", _text, None, "sender address", **_blank),
    _key("sendmail", "sendmail", _text, None, "sendmail program instead of SMTP", **_blank),
    _key("fileTimeout", "file-timeout", seconds, 5, "seconds a file check may take"),
]

SCHEMA = Schema(
    [key for key, _ in _PAIRS], badValue="warn", unquote=False, whitespace=_C_WHITESPACE
)
"""
The keys of watchdog.conf: the original's (5.16, plus the 5.14
C{temperature-device}) and L{SYSMON_KEYS}.
"""

_FIELDS = {key.name: field for key, field in _PAIRS if field is not None}


def _defaultSources() -> dict[str, str]:
    return {key.name: "default" for key, _ in _PAIRS}


@attrs.frozen
class FileCheck:
    """
    One C{file} line of watchdog.conf.

    @ivar path: the file that must be C{stat()}-able.
    @ivar change: with a value other than 0, the file's modification time
        must be less than this many seconds old (ENOCHANGE otherwise).
    """

    path: str
    change: int = 0


@attrs.frozen
class WatchdogConfig:
    """
    The watchdog's settings, as read from watchdog.conf.

    Field names follow the keys (C{max-load-1} is C{maxLoad1}); the
    defaults are the original's.  Command-line options apply with
    C{attrs.evolve}.

    @ivar interval: seconds between check rounds.
    @ivar logtick: with verbose, the "still alive" message every N rounds.
    @ivar maxLoad1: 1-minute load average above which the system reboots
        (EMAXLOAD); 0: not checked.  Likewise C{maxLoad5}, C{maxLoad15}.
    @ivar minMemory: pages that must be available; 0: not checked.
    @ivar allocatableMemory: pages that must be allocatable; 0: not checked.
    @ivar maxSwap: pages of swap that may be in use; 0: not checked.
    @ivar device: the watchdog device, or L{None}: no device is fed.
    @ivar deviceTimeout: seconds set with WDIOC_SETTIMEOUT at open.
    @ivar refreshUseSettimeout: C{"auto"}, C{"yes"} or C{"no"}.
    @ivar refreshIgnoreErrors: refresh errors are not faults.
    @ivar temperatureSensors: sysfs files holding milli-degrees C.
    @ivar maxTemperature: degrees C from which the system shuts down.
    @ivar tempPowerOff: when too hot, power off (else halt).
    @ivar files: the files to check, each with its C{change}.
    @ivar pidfiles: pid files of processes that must be running.
    @ivar pings: addresses to ping; C{pingCount} attempts per round.
    @ivar interfaces: network interfaces whose RX count must change.
    @ivar testBinaries: V0 test programs.
    @ivar testTimeout: seconds a test program may run.
    @ivar testDirectory: directory of V1 test/repair programs, or L{None}.
    @ivar repairBinary: the repair program, or L{None}.
    @ivar repairTimeout: seconds a repair program may run.
    @ivar retryTimeout: seconds a fault must last before repair or
        shutdown; 0: act at once.
    @ivar repairMaximum: repairs that leave the fault before shutting down;
        0: unlimited.
    @ivar softboot: C{softboot-option} (retryTimeout is already 0 then).
    @ivar admin: mail recipient, or L{None}: no mail.
    @ivar sigtermDelay: seconds between TERM and KILL at shutdown.
    @ivar realtime: lock memory and run SCHED_RR at C{priority}.
    @ivar logDir: directory for the programs' output files.
    @ivar heartbeatFile: file of refresh times, or L{None}.
    @ivar heartbeatStamps: records in C{heartbeatFile}.
    @ivar verbose: log detail (the file's value; C{-v} adds).
    @ivar logKilledPids: log the PIDs killed at shutdown.
    @ivar smtpHost: (sysmon) mail server.
    @ivar smtpPort: (sysmon) mail server port.
    @ivar smtpCAFile: (sysmon) CA certificates for STARTTLS, or L{None}:
        the system's trust store.
    @ivar mailFrom: (sysmon) sender address, or L{None}: the mailer's
        default.
    @ivar sendmail: (sysmon) a sendmail program to use instead of SMTP.
    @ivar fileTimeout: (sysmon) seconds one file check may take.
    @ivar path: the file read.
    @ivar sources: key name (as in the file) -> C{"path:line"} of the line
        that set it, or C{"default"}.
    @ivar warnings: what was ignored, in line order.
    """

    interval: int = 1
    logtick: int = 1
    maxLoad1: int = 0
    maxLoad5: int = 0
    maxLoad15: int = 0
    minMemory: int = 0
    allocatableMemory: int = 0
    maxSwap: int = 0
    device: str | None = None
    deviceTimeout: int = 60
    refreshUseSettimeout: str = "auto"
    refreshIgnoreErrors: bool = False
    temperatureSensors: tuple[str, ...] = ()
    maxTemperature: int = 90
    tempPowerOff: bool = True
    files: tuple[FileCheck, ...] = ()
    pidfiles: tuple[str, ...] = ()
    pings: tuple[str, ...] = ()
    pingCount: int = 3
    interfaces: tuple[str, ...] = ()
    testBinaries: tuple[str, ...] = ()
    testTimeout: int = 60
    testDirectory: str | None = "/etc/watchdog.d"
    repairBinary: str | None = None
    repairTimeout: int = 60
    retryTimeout: int = 60
    repairMaximum: int = 1
    softboot: bool = False
    admin: str | None = "root"
    sigtermDelay: int = 5
    realtime: bool = False
    priority: int = 1
    logDir: str = "/var/log/watchdog"
    heartbeatFile: str | None = None
    heartbeatStamps: int = 300
    verbose: int = 0
    logKilledPids: bool = False
    smtpHost: str = "localhost"
    smtpPort: int = 25
    smtpCAFile: str | None = None
    mailFrom: str | None = None
    sendmail: str | None = None
    fileTimeout: float = 5
    path: str = "<defaults>"
    sources: Mapping[str, str] = attrs.field(factory=_defaultSources)
    warnings: tuple[ConfigWarning, ...] = ()


def _cInt(value: int) -> int:
    """
    Wrap to a 32-bit C C{int}, as the original's arithmetic does.
    """
    return (value + 2**31) % 2**32 - 2**31


def _cDiv(numerator: int, denominator: int) -> int:
    """
    C integer division: the quotient is truncated towards zero.
    """
    quotient = abs(numerator) // abs(denominator)
    return quotient if (numerator < 0) == (denominator < 0) else -quotient


def _where(source: str) -> tuple[str | None, int | None]:
    """
    Split a C{"path:line"} source into path and line.
    """
    path, sep, line = source.rpartition(":")
    if sep and line.isdigit():
        return path, int(line)
    return None, None


def parse(lines: Iterable[str], path: str = "<config>") -> WatchdogConfig:
    """
    Read watchdog.conf text.

    @param lines: the lines of the file, with or without line ends.
    @param path: the file's name, for sources, warnings and errors.
    @return: the settings; what was ignored is in its C{warnings}.
    @raise ConfigError: the settings cannot be used (C{interval <= 0}, an
        empty C{log-dir}); the original refuses to start then too.
    """
    raw = SCHEMA.parseLines((line.split("\0", 1)[0] for line in lines), path)
    warnings = list(raw.warnings)
    files: list[list[Any]] = []
    temperatures: list[str] = []
    for entry in raw.entries:
        if entry.key == "file":
            files.append([entry.value, 0])
        elif entry.key == "temperature-sensor":
            temperatures.append(entry.value)
        elif entry.key == "temperature-device":
            temperatures.append(entry.value)
            warnings.append(
                ConfigWarning(
                    path,
                    entry.line,
                    "temperature-device is obsolete (watchdog 5.14 and older); "
                    f"{entry.value!r} is read as a temperature-sensor (a sysfs file "
                    "in milli-degrees C)",
                )
            )
        elif entry.key == "change":
            change = entry.value
            if not isinstance(change, int):
                # Like the original: a warning, and the last file's change
                # is still set, to 0.
                text = "" if change is None else change.text
                warnings.append(
                    ConfigWarning(
                        path,
                        entry.line,
                        f"bad value {text!r} for change: expected a number; "
                        "0 is used (no change check), as watchdog 5.16 does",
                    )
                )
                change = 0
            if not files:
                warnings.append(
                    ConfigWarning(path, entry.line, "change without a file before it; ignored")
                )
                continue
            last = files[-1]
            if last[1] != 0:
                warnings.append(
                    ConfigWarning(
                        path,
                        entry.line,
                        f"second change for file {last[0]!r}: {last[1]} replaced by {change}",
                    )
                )
            last[1] = change
    warnings.sort(key=lambda warning: warning.line or 0)

    values = dict(raw.values)
    sources = dict(raw.sources)

    interval = values["interval"]
    if interval <= 0:
        _, line = _where(sources["interval"])
        raise ConfigError(path, line, f"interval = {interval} must be > 0")
    if values["log-dir"] is None:
        _, line = _where(sources["log-dir"])
        raise ConfigError(
            path, line, "log-dir is empty: the output files need a directory"
        )

    load1 = values["max-load-1"]
    if load1 and not values["max-load-5"]:
        values["max-load-5"] = _cDiv(_cInt(load1 * 3), 4)
        sources["max-load-5"] = sources["max-load-1"]
    if load1 and not values["max-load-15"]:
        values["max-load-15"] = _cDiv(load1, 2)
        sources["max-load-15"] = sources["max-load-1"]

    if values["softboot-option"]:
        values["retry-timeout"] = 0
        sources["retry-timeout"] = sources["softboot-option"]

    fields: dict[str, Any] = {
        field: tuple(values[name]) if isinstance(values[name], list) else values[name]
        for name, field in _FIELDS.items()
    }
    return WatchdogConfig(
        temperatureSensors=tuple(temperatures),
        files=tuple(FileCheck(name, change) for name, change in files),
        path=path,
        sources=sources,
        warnings=tuple(warnings),
        **fields,
    )


def load(path: str, *, missingOk: bool = False) -> WatchdogConfig:
    """
    Read the file at C{path}.

    Lines end at LF only and bytes that are not UTF-8 are kept (as
    surrogate escapes, so paths in the file reach the system unchanged):
    the same lines, line numbers and values as the original's C{getline}.

    @param missingOk: a missing file gives the defaults (with a warning)
        instead of an error.
    @raise ConfigError: the file cannot be read, or holds settings that
        cannot be used (see L{parse}).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        if missingOk:
            return WatchdogConfig(
                path=path,
                warnings=(ConfigWarning(path, None, "no such file; the defaults are used"),),
            )
        raise ConfigError(path, None, "cannot open the configuration file: no such file") from None
    except OSError as e:
        raise ConfigError(
            path, None, f"cannot read the configuration file: {e.strerror}"
        ) from None
    return parse(data.decode("utf-8", "surrogateescape").split("\n"), path)


def _located(cfg: WatchdogConfig, key: str, message: str) -> ConfigError:
    """
    An error at the line that set C{key}, or naming it as the default.
    """
    where, line = _where(cfg.sources.get(key, "default"))
    if where is None:
        return ConfigError(cfg.path, None, f"{message} ({key} is the default)")
    return ConfigError(where, line, message)


def sanityErrors(cfg: WatchdogConfig) -> list[ConfigError]:
    """
    The checks the original skips with C{-f}/C{--force}: settings that
    would likely reboot the system for nothing.

    The daemon refuses to start when there are any (the original ends with
    "To force parameter(s) use the --force command line option.").

    @return: one L{ConfigError} per problem, at the line of the key
        involved; empty when the settings are fine.
    """
    errors = []
    if cfg.interval >= cfg.deviceTimeout - 1:
        # The original suggests timeout - 1, which this very test refuses.
        if cfg.deviceTimeout - 2 >= 1:
            hint = f"Try {cfg.deviceTimeout - 2} or less"
        else:
            hint = f"Try a watchdog-timeout of {cfg.interval + 2} or more"
        message = (
            f"This interval length ({cfg.interval}) might reboot the system while the "
            f"process sleeps! {hint}"
        )
        if _fromFile(cfg, "interval"):
            message += (
                f" (watchdog-timeout = {cfg.deviceTimeout}, {_origin(cfg, 'watchdog-timeout')})"
            )
            errors.append(_located(cfg, "interval", message))
        elif _fromFile(cfg, "watchdog-timeout"):
            message += " (interval is the default)"
            errors.append(_located(cfg, "watchdog-timeout", message))
        else:
            errors.append(
                ConfigError(
                    cfg.path, None, message + " (interval and watchdog-timeout: not from the file)"
                )
            )
    if 0 < cfg.maxLoad1 < MIN_LOAD:
        errors.append(
            _located(
                cfg,
                "max-load-1",
                f"Using this maximal load average ({cfg.maxLoad1}) might reboot the "
                "system too often!",
            )
        )
    return errors


def _fromFile(cfg: WatchdogConfig, key: str) -> bool:
    return _where(cfg.sources.get(key, "default"))[0] is not None


def _origin(cfg: WatchdogConfig, key: str) -> str:
    source = cfg.sources.get(key, "default")
    return "the default" if source == "default" else f"from {source}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def describe(cfg: WatchdogConfig) -> list[str]:
    """
    The start-up summary of the settings, as the original logs it
    (C{print_info}), without what the command line decides (sync,
    no-action, force): those are the caller's to add.

    @return: one text line per log message.
    """
    lines = [
        f"int={cfg.interval}s realtime={_yes(cfg.realtime)} "
        f"load={cfg.maxLoad1},{cfg.maxLoad5},{cfg.maxLoad15} soft={_yes(cfg.softboot)}"
    ]
    if cfg.minMemory == 0 and cfg.allocatableMemory == 0 and cfg.maxSwap == 0:
        lines.append("memory not checked")
    else:
        lines.append(
            f"memory: minimum pages = {cfg.minMemory} free, {cfg.allocatableMemory} "
            f"allocatable, maximum swap = {cfg.maxSwap} pages ({mmap.PAGESIZE} byte pages)"
        )
    if cfg.pings:
        lines.extend(f"ping: {target}" for target in cfg.pings)
        lines.append(f"ping: {cfg.pingCount} attempts per interval")
    else:
        lines.append("ping: no machine to check")
    if cfg.files:
        lines.extend(f"file: {check.path}:{check.change}" for check in cfg.files)
    else:
        lines.append("file: no file to check")
    if cfg.pidfiles:
        lines.extend(f"pidfile: {name}" for name in cfg.pidfiles)
    else:
        lines.append("pidfile: no server process to check")
    if cfg.interfaces:
        lines.extend(f"interface: {name}" for name in cfg.interfaces)
    else:
        lines.append("interface: no interface to check")
    if cfg.temperatureSensors:
        lines.append(f"temperature: maximum = {cfg.maxTemperature}")
        lines.extend(f"temperature: {name}" for name in cfg.temperatureSensors)
    else:
        lines.append("temperature: no sensors to check")
    if cfg.testBinaries or cfg.testDirectory is not None:
        lines.append(f"test binary time-out = {cfg.testTimeout}")
        lines.extend(f"test binary V0: {name}" for name in cfg.testBinaries)
        if cfg.testDirectory is not None:
            lines.append(f"test/repair V1: programs in {cfg.testDirectory}")
    else:
        lines.append("no test binary files")
    if cfg.repairBinary is None:
        lines.append("no repair binary files")
    else:
        lines.append(f"repair binary: time-out = {cfg.repairTimeout}")
        lines.append(f"repair binary: program = {cfg.repairBinary}")
    lines.append(f"error retry time-out = {cfg.retryTimeout} seconds")
    if cfg.repairMaximum > 0:
        lines.append(f"repair attempts = {cfg.repairMaximum}")
    else:
        lines.append("repair attempts = unlimited")
    lines.append(
        f"alive={cfg.device or '[none]'} heartbeat={cfg.heartbeatFile or '[none]'} "
        f"to={cfg.admin or '[none]'}"
    )
    if cfg.admin is not None:
        if cfg.sendmail is not None:
            via = f"sendmail program {cfg.sendmail}"
        else:
            via = f"SMTP {cfg.smtpHost}:{cfg.smtpPort}"
        lines.append(f"mail: via {via}, from {cfg.mailFrom or '[default]'}")
    lines.append(f"file check time-out = {cfg.fileTimeout:g} seconds")
    return lines
