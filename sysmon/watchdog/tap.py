"""
C{twistd watchdog}: the Linux watchdog daemon's command line on top of
L{sysmon.watchdog.service.WatchdogService}.

C{twistd -n watchdog -c /etc/watchdog.conf} reads the same file as the
original and takes the same options (C{-f -v -s -b -q -X}); C{-F} is
accepted for compatibility (twistd's C{-n} is what keeps it in the
foreground), and the options the original retired long ago (C{-d -i -n -p
-t -l -m -a -r}) give its message.
"""

from __future__ import annotations

import ipaddress
import os
import time
from typing import Any

import attrs
from twisted.python import usage

from sysmon.children import ChildRunner, UnsafeScript, checkScript
from sysmon.config import ConfigError
from sysmon.watchdog import checks as _checks
from sysmon.watchdog import config as _config
from sysmon.watchdog.service import WatchdogService, bootClock

__all__ = ["DEFAULT_CONFIG", "Options", "buildChecks", "makeService"]

DEFAULT_CONFIG = "/etc/watchdog.conf"

#: Options the original dropped in 5.x; they now live in the file.
_RETIRED = "dinptlmar"


class Options(usage.Options):
    """
    C{twistd watchdog} options.
    """

    synopsis = "[-c FILE] [-f] [-v] [-s] [-b] [-q] [-X N]"
    longdesc = (
        "Feed the hardware watchdog (watchdog-device in the configuration file, e.g. "
        "/dev/watchdog) while the system is healthy: every interval the checks of "
        "watchdog.conf run (load, memory, temperature, files, pid files, interfaces, "
        "ping, test programs and test-directory programs); a failure that lasts longer "
        "than retry-timeout is repaired by repair-binary, or the system is shut down "
        "(mail to admin, then the init system; if it does not go down, the device is "
        "left to expire).  Unlike the classic daemon, checks run in the background with "
        "time limits of their own, so a hung check never delays the refresh.  Result "
        "codes, test and repair program conventions are the classic daemon's."
    )
    optFlags = [
        ["force", "f", "Skip the sanity checks of the configuration "
                       "(interval vs watchdog-timeout, max-load-1 below 2)."],
        ["sync", "s", "Sync the file systems every round."],
        ["softboot", "b", "Act on the first failure (retry-timeout 0)."],
        ["no-action", "q", "Run every check and repair, but never open the device and "
                           "never shut down: log 'Shutdown blocked by --no-action'."],
        ["foreground", "F", "Accepted for compatibility; use twistd's -n."],
    ]
    optParameters = [
        ["config-file", "c", DEFAULT_CONFIG, "Configuration file."],
        ["loop-exit", "X", 0, "Exit (as on SIGTERM) after this many rounds; 0: never.", int],
        ["proc-root", None, "/proc", "Where /proc is (tests use fixture trees)."],
        ["sys-root", None, "/sys", "Where /sys is (tests use fixture trees)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["verbose"] = 0

    def opt_verbose(self) -> None:
        """
        More log lines: per-check details; repeat for more.
        """
        self["verbose"] += 1

    opt_v = opt_verbose

    def postOptions(self) -> None:
        if self["loop-exit"] < 0:
            raise usage.UsageError("--loop-exit must be 0 or more")
        path = self["config-file"]
        try:
            cfg = _config.load(path)
        except ConfigError as e:
            raise usage.UsageError(str(e))
        if self["softboot"]:
            cfg = attrs.evolve(cfg, retryTimeout=0, softboot=True)
        if self["verbose"]:
            cfg = attrs.evolve(cfg, verbose=max(cfg.verbose, self["verbose"]))
        if not self["force"]:
            errors = _config.sanityErrors(cfg)
            if errors:
                raise usage.UsageError(
                    "\n".join(str(e) for e in errors)
                    + "\nTo force parameter(s) use the --force command line option.")
        self.watchdogConfig = cfg


def _retired(letter: str) -> Any:
    def retired(self: Options, value: str) -> None:
        raise usage.UsageError(
            f"Option -{letter} is no longer valid, please specify it in "
            f"{self['config-file']}.")

    retired.__doc__ = "No longer valid: set it in the configuration file."
    return retired


for _letter in _RETIRED:
    setattr(Options, "opt_" + _letter, _retired(_letter))


def _safe(path: str, what: str) -> None:
    try:
        checkScript(path)
    except UnsafeScript as e:
        raise usage.UsageError(f"{what} {path}: {e.reason}")


def buildChecks(cfg: _config.WatchdogConfig, reactor: Any, *, proc: str = "/proc",
                sys: str = "/sys", now: Any = time.monotonic, pinger: Any = None,
                runner: ChildRunner | None = None) -> list[_checks.Check]:
    """
    The checks of C{cfg}, in the original's order: file table, load,
    memory, allocatable memory, temperatures, files, pid files, interfaces,
    ping targets, test programs (or the fork test when there are none).

    @raise usage.UsageError: a configured test program is unsafe to run.
    """
    runner = runner or ChildRunner(reactor, killGrace=0.0)
    made: list[_checks.Check] = [_checks.FileTableCheck(proc)]
    if cfg.maxLoad1 or cfg.maxLoad5 or cfg.maxLoad15:
        made.append(_checks.LoadCheck((cfg.maxLoad1, cfg.maxLoad5, cfg.maxLoad15), proc))
    if cfg.minMemory or cfg.maxSwap:
        made.append(_checks.MemoryCheck(cfg.minMemory, cfg.maxSwap, proc))
    if cfg.allocatableMemory:
        made.append(_checks.AllocatableMemoryCheck(
            cfg.allocatableMemory, _checks.ThreadRunner(reactor)))
    made += [_checks.TemperatureCheck(s, cfg.maxTemperature, sys)
             for s in cfg.temperatureSensors]
    made += [_checks.FileCheck(f.path, f.change, _checks.ThreadRunner(reactor), now,
                               cfg.fileTimeout) for f in cfg.files]
    made += [_checks.PidfileCheck(p) for p in cfg.pidfiles]
    made += [_checks.InterfaceCheck(i, proc) for i in cfg.interfaces]
    if cfg.pings and cfg.pingCount < 1:
        raise usage.UsageError(f"ping-count must be at least 1, not {cfg.pingCount}")
    for address in cfg.pings:
        try:
            ipaddress.ip_address(address.partition("%")[0])
        except ValueError:
            raise usage.UsageError(f"ping {address}: not an IPv4 or IPv6 address")
        made.append(_checks.PingCheck(address, pinger, cfg.pingCount,
                                      cfg.interval / cfg.pingCount))
    programs: list[_checks.Check] = []
    for binary in cfg.testBinaries:
        _safe(binary, "test-binary")
        programs.append(_checks.TestProgramCheck(binary, runner, cfg.logDir,
                                                 cfg.testTimeout, version=0))
    for program in _checks.testDirectoryPrograms(cfg.testDirectory):
        programs.append(_checks.TestProgramCheck(program, runner, cfg.logDir,
                                                 cfg.testTimeout, version=1))
    made += programs or [_checks.ForkCheck(runner)]
    return made


def makeService(options: Options, reactor: Any = None) -> WatchdogService:
    """
    The watchdog service for C{options}.
    """
    from twisted.logger import Logger

    from sysmon.sdnotify import Notifier
    from sysmon.watchdog.device import Heartbeat, WatchdogDevice
    from sysmon.watchdog.shutdown import InitSystemShutdown, Mailer

    if reactor is None:
        from twisted.internet import reactor  # noqa: PLW0621
    cfg = options.watchdogConfig
    noAction = bool(options["no-action"])
    log = Logger(namespace="sysmon.watchdog")
    for warning in cfg.warnings:
        log.warn("{warning}", warning=str(warning))
    try:
        os.makedirs(cfg.logDir, 0o750, exist_ok=True)
    except OSError as e:
        raise usage.UsageError(f"Cannot create directory {cfg.logDir} ({e.strerror})")
    if cfg.repairBinary:
        _safe(cfg.repairBinary, "repair-binary")
    pinger = None
    if cfg.pings:
        from sysmon.watchdog.icmp import Pinger

        pinger = Pinger(reactor)
    now = bootClock
    checks = buildChecks(cfg, reactor, proc=options["proc-root"], sys=options["sys-root"],
                         now=now, pinger=pinger)
    heartbeat = Heartbeat(cfg.heartbeatFile, cfg.heartbeatStamps) if cfg.heartbeatFile else None
    device = None
    if cfg.device and not noAction:
        device = WatchdogDevice(cfg.device, cfg.deviceTimeout, interval=cfg.interval,
                                refreshUseSettimeout=cfg.refreshUseSettimeout,
                                ignoreErrors=cfg.refreshIgnoreErrors, heartbeat=heartbeat)
    notifier = Notifier()
    mailer = None
    if cfg.admin:
        try:
            mailer = Mailer(reactor, admin=cfg.admin, host=cfg.smtpHost, port=cfg.smtpPort,
                            caFile=cfg.smtpCAFile, sender=cfg.mailFrom, sendmail=cfg.sendmail)
        except ValueError as e:
            raise usage.UsageError(str(e))
    log.info("starting daemon (sysmon watchdog, config {path}):", path=cfg.path)
    for line in _config.describe(cfg):
        log.info("{line}", line=line)
    log.info(" sync={sync} no_act={noAction} force={force} checks={names}",
             sync="yes" if options["sync"] else "no", noAction="yes" if noAction else "no",
             force="yes" if options["force"] else "no",
             names=", ".join(c.name for c in checks))
    return WatchdogService(
        cfg, checks,
        action=InitSystemShutdown(reactor=reactor),
        device=device,
        heartbeat=heartbeat,
        notifier=notifier if notifier.enabled else None,
        mailer=mailer,
        pinger=pinger,
        reactor=reactor,
        now=now,
        noAction=noAction,
        sync=bool(options["sync"]),
        tuneProcess=True,
        loopExit=int(options["loop-exit"]),
    )

