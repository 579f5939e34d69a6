"""
recvstats and sendstats: cluster node status over UDP into a shared-memory
file, read through a libbeostat-style API (L{sysmon.beostat.reader}) and the
C{beostat} command.  Wire format: docs/beostat-wire.md; file layout:
docs/beostat-shm.md.
"""
