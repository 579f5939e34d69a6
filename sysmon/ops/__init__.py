"""
Running sysmon's daemons as one application: the C{.tac} file's ini
(L{sysmon.ops.ini}), the application it builds (L{sysmon.ops.app}),
Prometheus metrics (L{sysmon.ops.metrics}), the status page
(L{sysmon.ops.status}, L{sysmon.ops.web}) and log observers
(L{sysmon.ops.logs}).
"""
