"""
keepalive: monitors the processes registered with C{spawndaemon} and
restarts them when they die (restart limits, restart scripts, log files, a
table that survives keepalive's own restart).  C{spawndaemon} is its
command line (L{sysmon.keepalive.cli}).
"""
