"""
netdump: the crash-dump server (Red Hat netdump protocol, v4 and v5) and
netconsole receiver, with its client simulator C{netdump-sim}.
"""
