"""
The daemons an application runs, as their plugins built them: what the
metrics and the status page read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from sysmon.beostat.recv import RecvstatsService
    from sysmon.beostat.send import SendstatsService
    from sysmon.keepalive.supervisor import Supervisor
    from sysmon.netdump.tap import NetdumpService
    from sysmon.statd.tap import StatdService
    from sysmon.watchdog.service import WatchdogService

__all__ = ["Daemons"]


@attrs.define
class Daemons:
    """
    Each enabled daemon's service, exactly as its plugin's C{makeService}
    returned it; L{None} for a daemon that is not enabled.
    """

    netdump: NetdumpService | None = None
    statd: StatdService | None = None
    recvstats: RecvstatsService | None = None
    sendstats: SendstatsService | None = None
    watchdog: WatchdogService | None = None
    keepalive: Any = None  # the MultiService of sysmon.keepalive.tap.makeService

    def supervisor(self) -> Supervisor | None:
        """
        keepalive's supervisor, found among the children of its service.
        """
        from sysmon.keepalive.supervisor import Supervisor

        if self.keepalive is None:
            return None
        for child in self.keepalive:
            if isinstance(child, Supervisor):
                return child
        return None
