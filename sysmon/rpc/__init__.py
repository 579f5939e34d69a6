"""
ONC RPC version 2 (RFC 5531) with XDR (RFC 4506): the codec, record
marking for TCP, a server that dispatches calls to programs, a UDP client,
and a portmapper (program 100000 v2) client.  Shared by the RPC daemons
(statd today).
"""
