"""
C{twistd keepalive}: the keepalive daemon's command line
(C{keepalive [-i] [-t interval]}) on top of
L{sysmon.keepalive.supervisor.Supervisor} and its control socket
(L{sysmon.keepalive.control.ControlServer}).
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application import service
from twisted.python import usage

from sysmon.keepalive.cli import DEFAULT_SCRIPT_DIR, DEFAULT_TABLE
from sysmon.keepalive.control import DEFAULT_CONTROL, ControlServer
from sysmon.keepalive.supervisor import Supervisor, pidfdSupported

__all__ = ["DEFAULT_LOG_DIR", "Options", "makeService"]

DEFAULT_LOG_DIR = "/var/log/keepalive"

#: keepalive(1M)'s cluster options: where keepalive itself runs.
_CLUSTER = {"P": "primary node", "S": "secondary node"}


def _interval(text: str) -> float:
    value = float(text)
    if not 0.1 <= value <= 3600:
        raise ValueError("the interval must be between 0.1 and 3600 seconds")
    return value


_interval.coerceDoc = "Seconds, 0.1 to 3600."  # type: ignore[attr-defined]


class Options(usage.Options):
    """
    C{twistd keepalive} options.
    """

    synopsis = "[-i] [-t interval] [--table FILE] [--control SOCKET] [--log-dir DIR] " \
               "[--script-dir DIR] [--no-pidfd]"
    longdesc = (
        "Monitor the processes registered with spawndaemon(1) and restart them when they "
        "die: at once, or after their respawn time if they died sooner than that after "
        "starting; a process that fails error-limit times within its probation period is "
        "marked down and left alone until it is registered again.  A process with a "
        "restart script is restarted by running the script.  Each process's output goes "
        "to LOG-DIR/<basename>.<pid>.  The table of processes survives keepalive: stopping "
        "keepalive (SIGTERM) leaves its processes running and the next keepalive takes "
        "them over; 'spawndaemon -Q' stops keepalive for good together with the processes "
        "it started.  Deaths are noticed through pidfds (no polling); processes that are "
        "not keepalive's children are polled every -t seconds only where pidfds are "
        "unavailable (or with --no-pidfd)."
    )
    optFlags = [
        ["clean", "i", "Start with a clean table: forget every registered process and "
                       "delete the old log files."],
        ["no-pidfd", None, "Do not use pidfds: reap children on SIGCHLD and poll the other "
                           "processes every -t seconds (as on kernels before Linux 5.3)."],
    ]
    optParameters = [
        ["interval", "t", 5.0, "Seconds between polls of processes that are not "
                               "keepalive's children, where pidfds are unavailable.",
         _interval],
        ["table", None, DEFAULT_TABLE, "The monitored process table (SQLite)."],
        ["control", None, DEFAULT_CONTROL, "The control socket spawndaemon talks to "
                                           "(created mode 0600)."],
        ["log-dir", None, DEFAULT_LOG_DIR, "Where each process's output goes, as "
                                           "<basename>.<pid>."],
        ["script-dir", None, DEFAULT_SCRIPT_DIR, "Where restart scripts named without a "
                                                 "directory are found."],
    ]

    def _cluster(self, letter: str) -> None:
        raise usage.UsageError(
            f"-{letter} ({_CLUSTER[letter]}) places keepalive on a single-system-image "
            "cluster node; sysmon keepalive supervises this host only"
        )

    def opt_P(self, node: str) -> None:
        """
        Refused: keepalive's primary node on a cluster (not supported).
        """
        self._cluster("P")

    def opt_S(self, node: str) -> None:
        """
        Refused: keepalive's secondary node on a cluster (not supported).
        """
        self._cluster("S")

    def postOptions(self) -> None:
        for name in ("table", "control", "log-dir", "script-dir"):
            self[name] = os.path.abspath(self[name])
        if len(self["control"].encode()) > 107:
            raise usage.UsageError(f"--control {self['control']}: a UNIX socket path "
                                   "must be at most 107 bytes")


def makeService(options: Options, reactor: Any = None) -> service.MultiService:
    """
    The supervisor and its control socket, as one service.
    """
    supervisor = Supervisor(
        options["table"],
        logDir=options["log-dir"],
        scriptDir=options["script-dir"],
        controlPath=options["control"],
        interval=options["interval"],
        clean=bool(options["clean"]),
        usePidfd=False if options["no-pidfd"] else pidfdSupported(),
        reactor=reactor,
    )
    top = service.MultiService()
    supervisor.setServiceParent(top)
    ControlServer(supervisor, options["control"], reactor=reactor).setServiceParent(top)
    return top
