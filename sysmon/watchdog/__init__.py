"""
watchdog: keep the hardware watchdog fed while the system is healthy.

A drop-in for the Linux watchdog daemon (5.x): the same watchdog.conf, the
same checks, error codes, retry and repair rules, the same test and repair
program conventions.  Unlike the original, every check runs asynchronously
with a timeout of its own and the device is fed from its own timer, so a
hung NFS stat or test program never delays the refresh.

Modules: L{codes} (error numbers), L{config} (watchdog.conf), L{checks}
(the health checks), L{icmp} (ping), L{device} (/dev/watchdog and the
heartbeat file), L{shutdown} (the shutdown action and the mail to the
admin), L{service} (rounds, retry timers, repairs, the decision), L{tap}
(C{twistd watchdog}).
"""
