"""
Tell systemd (or any service manager speaking the same protocol) how the
daemon is doing: C{READY=1} when it has started, C{WATCHDOG=1} while it is
healthy, C{STOPPING=1}, C{STATUS=...}.

The protocol is C{sd_notify(3)}: newline-separated C{KEY=value} lines in
one datagram, sent to the C{AF_UNIX} datagram socket named by
C{$NOTIFY_SOCKET} (a path, or C{@name} for the abstract namespace).
Sending never blocks and never raises: a service manager that is gone must
not stop the daemon.  L{watchdogInterval} reads C{$WATCHDOG_USEC}, the
C{WatchdogSec=} of the unit.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Callable, Mapping

from twisted.logger import Logger

from sysmon.ratelimit import Once

__all__ = ["Notifier", "watchdogInterval"]


class Notifier:
    """
    Sends notifications to the service manager named by C{$NOTIFY_SOCKET}.

    @ivar address: the socket address (a path, or a C{str} starting with
        NUL for the abstract namespace), or L{None} when notifications are
        off.
    """

    log = Logger()

    #: Seconds between two log lines about the same failure.
    COMPLAIN_EVERY = 60.0

    def __init__(
        self,
        environ: Mapping[str, str] = os.environ,
        *,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        @param environ: the environment to read C{NOTIFY_SOCKET} from.
        @param now: monotonic clock, for rate-limiting complaints.
        """
        self._now = now
        self._sock: socket.socket | None = None
        self._complain = Once(self.COMPLAIN_EVERY)
        self.address: str | None = None
        raw = environ.get("NOTIFY_SOCKET", "")
        if raw.startswith("/"):
            self.address = raw
        elif raw.startswith("@") and len(raw) > 1:
            self.address = "\0" + raw[1:]
        elif raw:
            self.log.warn(
                "NOTIFY_SOCKET={value} is neither an absolute path nor an @abstract "
                "name; not notifying the service manager",
                value=raw,
            )

    @property
    def enabled(self) -> bool:
        """
        Whether there is a service manager to notify.
        """
        return self.address is not None

    def _describe(self) -> str:
        assert self.address is not None
        return "@" + self.address[1:] if self.address.startswith("\0") else self.address

    def send(self, *fields: str) -> bool:
        """
        Send C{fields} (C{"READY=1"}, C{"WATCHDOG=1"}, C{"STATUS=..."}) in one
        datagram.  A newline inside a field is sent as a space, so a field
        cannot add assignments of its own.

        @return: whether the datagram was sent; L{False} when notifications
            are off or the send failed (logged, rate-limited; never raises).
        """
        if self.address is None or not fields:
            return False
        data = "\n".join(f.replace("\n", " ") for f in fields).encode("utf-8", "replace")
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(data, self.address)
        except OSError as e:
            if self._complain(e.errno, self._now()):
                self.log.warn(
                    "cannot notify the service manager at {address}: {why}",
                    address=self._describe(), why=e.strerror or str(e),
                )
            return False
        return True

    def close(self) -> None:
        """
        Close the socket.  A later L{send} opens a new one.
        """
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def watchdogInterval(
    environ: Mapping[str, str] = os.environ, pid: int | None = None
) -> float | None:
    """
    The service watchdog timeout systemd asks us to honour (C{WatchdogSec=},
    passed as C{$WATCHDOG_USEC}), in seconds.  Send C{WATCHDOG=1} more often
    than that (systemd recommends every half of it).

    @param environ: the environment.
    @param pid: our process id (default: C{os.getpid()}); when
        C{$WATCHDOG_PID} is set and names another process, the timeout is not
        ours.
    @return: the timeout in seconds, or L{None} when there is none for us
        (unset, not a positive integer, or meant for another process).
    """
    usec = environ.get("WATCHDOG_USEC", "")
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner:
        try:
            ownerPid = int(owner)
        except ValueError:
            return None
        if ownerPid != (os.getpid() if pid is None else pid):
            return None
    return value / 1_000_000
