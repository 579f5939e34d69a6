"""
sysmon: classic Unix system daemons (netdump, recvstats/sendstats, statd,
watchdog, keepalive) as Twisted services.

Each daemon is a subpackage with the same rooms: C{wire} (codec), C{protocol}
(transport glue), C{server} (policy and state), C{store} (disk) and C{tap}
(command line and service).  The modules at this level are the parts that
several daemons share.
"""

__version__ = "0.1.0"
