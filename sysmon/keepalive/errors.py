"""
The errors keepalive answers with.  Each class crosses the control socket
as itself (L{sysmon.keepalive.control} maps them to AMP errors), and its
C{str()} is the message for the operator.
"""

from __future__ import annotations

__all__ = [
    "AlreadyRegistered",
    "BadConfig",
    "BadRequest",
    "KeepaliveError",
    "KeepaliveNotRunning",
    "NoSuchProcess",
    "NotRegistered",
    "Refused",
]


class KeepaliveError(Exception):
    """
    A request keepalive could not carry out; the message says why.
    """


class BadRequest(KeepaliveError):
    """
    The request itself is malformed (no selector, two selectors, …).
    """


class NotRegistered(KeepaliveError):
    """
    No table entry matches the request.
    """


class AlreadyRegistered(KeepaliveError):
    """
    The process is already registered and running.
    """


class NoSuchProcess(KeepaliveError):
    """
    A pid given to adopt is not running, or is not the program named.
    """


class Refused(KeepaliveError):
    """
    keepalive will not do it: an unsafe restart script, an option that
    belongs to a cluster.
    """


class BadConfig(KeepaliveError):
    """
    A process or group config file cannot be used; the message names the
    file and line.
    """


class KeepaliveNotRunning(KeepaliveError):
    """
    Nothing answers on the control socket.
    """
