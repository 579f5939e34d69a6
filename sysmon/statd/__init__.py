"""
statd: the NSM host-status monitor (ONC RPC program 100024 v1) that NFS
locking relies on, with its notify mode (C{twistd statd -n}) and the
C{sysmon-statd} listing tool.
"""
