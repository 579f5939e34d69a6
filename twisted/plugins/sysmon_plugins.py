"""
twistd plugins for sysmon's daemons: one L{ServiceMaker} per daemon.

This file is found by Twisted's plugin system (it lives in the
C{twisted.plugins} namespace, which has no C{__init__.py} of ours); it must
import nothing heavy, since every C{twistd} run imports it.  Each maker
points at C{sysmon.<daemon>.tap}, which is only imported when that daemon
is started.
"""

from twisted.application.service import ServiceMaker

netdump = ServiceMaker(
    "sysmon netdump",
    "sysmon.netdump.tap",
    "Crash-dump server: receives crashed Linux kernels' memory (netdump) and netconsole text",
    "netdump",
)

statd = ServiceMaker(
    "sysmon statd",
    "sysmon.statd.tap",
    "NSM host-status monitor (ONC RPC 100024) for NFS locking; -n: notify peers and exit",
    "statd",
)

recvstats = ServiceMaker(
    "sysmon recvstats",
    "sysmon.beostat.tap.recvstats",
    "Cluster status receiver: nodes' sendstats (and Ganglia gmond) reports into a shared-memory file",
    "recvstats",
)

sendstats = ServiceMaker(
    "sysmon sendstats",
    "sysmon.beostat.tap.sendstats",
    "Cluster status sender: this node's /proc figures to the recvstats masters",
    "sendstats",
)

watchdog = ServiceMaker(
    "sysmon watchdog",
    "sysmon.watchdog.tap",
    "Feeds /dev/watchdog while the system is healthy (Linux watchdog daemon's watchdog.conf)",
    "watchdog",
)

keepalive = ServiceMaker(
    "sysmon keepalive",
    "sysmon.keepalive.tap",
    "Monitors the processes registered with spawndaemon and restarts them when they die",
    "keepalive",
)
