"""
Prometheus metrics of the daemons an application runs.

L{makeRegistry} builds a registry of its own (never C{prometheus_client}'s
global one) with one collector per enabled daemon.  The collectors hold no
figures: at each scrape they read the daemons' live state and the plain
counters the daemons keep for this (no daemon calls C{prometheus_client}).
Counters start at zero when the process starts, as Prometheus expects.

Where each figure comes from, and what it means where the name leaves a
choice:

netdump (L{sysmon.netdump.server.NetdumpServer}, C{service.server}):
  - C{sysmon_netdump_dumps_in_progress}: sessions being dumped (admitted,
    from the netdump-crash script to the end of SHOW_STATE; resumed dumps
    included), L{Session.dumping<sysmon.netdump.server.Session.dumping>}.
  - C{sysmon_netdump_dumps_completed_total}: C{finished["complete"]}.
  - C{sysmon_netdump_dumps_incomplete_total}: every other finished dump,
    whatever the reason (client gone, no space, write error, bad client,
    refused by netdump-crash, too many dumps at once, internal error): a
    crash whose memory did not all reach a vmcore.  The breakdown is
    C{sysmon_netdump_dumps_finished_total{outcome="..."}}.  Dumps left by a
    stop resume at the next start and are not counted as finished.
  - C{sysmon_netdump_received_pages_total}, C{..._received_bytes_total}:
    C{pagesReceived}, C{bytesReceived}: memory pages that reached a vmcore
    (written, or all zeros and left as a hole of the sparse file, as
    dump.json's C{ram_pages_received} counts them), and their bytes.
  - C{sysmon_netdump_console_lines_total}: C{consoleLines}, newlines of the
    console text (netconsole, netdump's console/oops stream) written to
    the console logs.

statd (C{service.rpc}, an L{sysmon.rpc.server.RPCServer}, and
C{service.store}):
  - C{sysmon_statd_calls_total{procedure, result}}: L{RPCServer.calls
    <sysmon.rpc.server.RPCServer.calls>} (statd's serves program 100024
    only).  C{procedure}
    is C{SM_NULL}, C{SM_STAT}, C{SM_MON}, C{SM_UNMON}, C{SM_UNMON_ALL},
    C{SM_SIMU_CRASH}, C{SM_NOTIFY}; another number (an unknown procedure,
    or any procedure of a version other than 1) is given as the number;
    unknown procedures beyond the first 16 count together as C{other}.
    C{result}: for calls answered SUCCESS, C{stat_succ} or C{stat_fail}
    (the NSM result of SM_STAT and SM_MON: a refused SM_MON is
    C{stat_fail}) or C{success} (the other procedures, refusals of
    SM_UNMON, SM_UNMON_ALL and SM_SIMU_CRASH included: their replies carry
    no result code); for RPC error answers C{garbage_args},
    C{system_err}, C{proc_unavail} or C{prog_mismatch}.
  - C{sysmon_statd_rejected_total{reason}}: messages that never reached an
    NSM procedure (RPCServer.counters): C{not_a_call} (dropped),
    C{rpc_mismatch}, C{auth_error} (a credential that does not decode),
    C{prog_unavail} (a call to another program), C{record_too_large} (TCP
    connection closed).
  - C{sysmon_statd_monitored_hosts}: distinct C{mon_name}s of the monitor
    list (C{store.entries}).
  - C{sysmon_statd_notifications_pending}: hosts still to be sent our
    SM_NOTIFY (C{store.toNotify()}: the host table's notify flag; with
    C{--no-notify} they stay pending until C{statd -n} runs).

recvstats (L{sysmon.beostat.recv.Recvstats}, C{service.controller}):
  - C{sysmon_recvstats_nodes{state="up"|"down"}}: the nodes' records by
    state (node -1, this machine with C{--master-interval}, included).
  - C{sysmon_recvstats_packets_total{result}}: C{good} = status reports
    taken (C{counters["status"]}); C{bad} = malformed, unsigned, badly
    signed, or naming a node above the limit (C{bad}, C{unsigned},
    C{bad_signature}).  Requests seen on the socket (ours looped back by
    multicast, or another master's) are neither.
  - C{sysmon_recvstats_gmond_packets_total{result}}: C{counters["gmond"]}
    and C{counters["gmond_bad"]}.

sendstats (L{sysmon.beostat.send.SendstatsService}):
  - C{sysmon_sendstats_reports_total}: C{counters["reports"]}: reports that
    went out (one a report, however many parts and masters).

watchdog (L{sysmon.watchdog.service.WatchdogService}):
  - C{sysmon_watchdog_rounds_total}: C{rounds}.
  - C{sysmon_watchdog_check_failures_total{check}}: C{failures}, with every
    configured check present (zero until it fails); C{<no object>} counts
    the failures without a check (device refresh, sync).
  - C{sysmon_watchdog_seconds_since_refresh}: now minus C{lastRefresh},
    on the watchdog's own clock.  C{lastRefresh} is stamped each time the
    refresh timer fires and the device, if one is open, took the keepalive:
    with no device (C{-q}, or none configured) it is the time since the
    refresh timer last fired.  It grows when a refresh fails and after a
    decided shutdown stopped the feeding.  No sample before the first
    refresh.
  - C{sysmon_watchdog_repairs_total}: C{repairsRun}, repair programs
    started.

keepalive (L{sysmon.keepalive.supervisor.Supervisor}):
  - C{sysmon_keepalive_processes{state}}: registered processes by their
    record's state, one sample for every L{State
    <sysmon.keepalive.policy.State>} (zeros included).
  - C{sysmon_keepalive_restarts_total}: C{restarts}, restarts this
    supervisor began.

Threads: C{prometheus_client.twisted.MetricsResource} is a WSGI resource,
so C{collect} runs in the reactor's thread pool while the reactor thread
changes the daemons' state.  The collectors only read, and copy each dict
in one C-level step (C{dict(d)}, C{list(d.values())}) before iterating, so
a concurrent change cannot break a scrape; the figures of one scrape may be
microseconds apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from sysmon.ops.daemons import Daemons

__all__ = [
    "KeepaliveCollector",
    "NetdumpCollector",
    "RecvstatsCollector",
    "SendstatsCollector",
    "StatdCollector",
    "WatchdogCollector",
    "makeRegistry",
]


def _byLabel(kind: type[Metric], name: str, documentation: str, label: str,
             values: dict[str, float]) -> Metric:
    """
    A metric family with one sample per C{values} item, labelled C{label}
    (in the mapping's order).
    """
    family = kind(name, documentation, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


class _Collector(Collector):
    """
    A collector whose C{describe} is its C{collect}: the registry learns
    its metric names (and refuses duplicates) when it is registered.
    """

    def describe(self) -> list[Metric]:
        return list(self.collect())


class NetdumpCollector(_Collector):
    """
    netdump's metrics, read from its L{NetdumpServer
    <sysmon.netdump.server.NetdumpServer>}.

    @ivar service: the L{NetdumpService<sysmon.netdump.tap.NetdumpService>}.
    """

    def __init__(self, service: Any) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        server = self.service.server
        sessions = list(server.sessions.values())
        finished = dict(server.finished)
        yield GaugeMetricFamily(
            "sysmon_netdump_dumps_in_progress",
            "Crash dumps being received now (resumed ones included).",
            value=sum(1 for s in sessions if s.dumping))
        yield CounterMetricFamily(
            "sysmon_netdump_dumps_completed_total",
            "Crash dumps that ended with a complete vmcore.",
            value=finished.get("complete", 0))
        yield CounterMetricFamily(
            "sysmon_netdump_dumps_incomplete_total",
            "Crash dumps that ended without all their pages (client gone, no space, "
            "write error, refused, too many at once...).",
            value=sum(n for outcome, n in finished.items() if outcome != "complete"))
        yield _byLabel(CounterMetricFamily, "sysmon_netdump_dumps_finished_total",
                       "Crash dumps that ended, by outcome.", "outcome",
                       {outcome: finished[outcome] for outcome in sorted(finished)})
        yield CounterMetricFamily(
            "sysmon_netdump_received_bytes_total",
            "Bytes of memory pages received into vmcores (zero pages included).",
            value=server.bytesReceived)
        yield CounterMetricFamily(
            "sysmon_netdump_received_pages_total",
            "Memory pages received into vmcores (zero pages included).",
            value=server.pagesReceived)
        yield CounterMetricFamily(
            "sysmon_netdump_console_lines_total",
            "Lines of console text (netconsole, netdump console and oops text) logged.",
            value=server.consoleLines)


#: NSM procedure numbers (version 1) -> their names.
NSM_PROCEDURES = {0: "SM_NULL", 1: "SM_STAT", 2: "SM_MON", 3: "SM_UNMON", 4: "SM_UNMON_ALL",
                  5: "SM_SIMU_CRASH", 6: "SM_NOTIFY"}
#: statd_rejected_total's reasons -> the RPC server's counter names.
_REJECTED = {"not_a_call": "not_a_call", "rpc_mismatch": "rpc_mismatch",
             "auth_error": "bad_credentials", "prog_unavail": "prog_unavail",
             "record_too_large": "record_too_large"}


def _procedure(vers: int, proc: int | None) -> str:
    if proc is None:
        return "other"
    if vers == 1 and proc in NSM_PROCEDURES:
        return NSM_PROCEDURES[proc]
    return str(proc)


class StatdCollector(_Collector):
    """
    statd's metrics, read from its RPC server and status store (which
    exist once the service has started; before, only zeros).

    @ivar service: the L{StatdService<sysmon.statd.tap.StatdService>}.
    """

    def __init__(self, service: Any) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        rpc = getattr(self.service, "rpc", None)
        store = self.service.store
        calls = CounterMetricFamily(
            "sysmon_statd_calls_total", "NSM calls by procedure and result.",
            labels=["procedure", "result"])
        counters: dict[str, int] = dict(rpc.counters) if rpc is not None else {}
        if rpc is not None:
            totals: dict[tuple[str, str], int] = {}
            # statd's RPC server serves the NSM program only.
            for (prog, vers, proc, result), n in dict(rpc.calls).items():
                key = (_procedure(vers, proc), result)
                totals[key] = totals.get(key, 0) + n
            for key in sorted(totals):
                calls.add_metric(list(key), totals[key])
        yield calls
        yield _byLabel(CounterMetricFamily, "sysmon_statd_rejected_total",
                       "RPC messages that reached no NSM procedure, by reason.", "reason",
                       {reason: counters.get(counter, 0) for reason, counter in _REJECTED.items()})
        entries = list(store.entries.values()) if store is not None else []
        hosts = list(store.hosts.values()) if store is not None else []
        yield GaugeMetricFamily(
            "sysmon_statd_monitored_hosts", "Distinct hosts on the monitor list.",
            value=len({e.monName for e in entries}))
        yield GaugeMetricFamily(
            "sysmon_statd_notifications_pending",
            "Hosts still to be sent our SM_NOTIFY (our reboot).",
            value=sum(1 for _, notify in hosts if notify))


class RecvstatsCollector(_Collector):
    """
    recvstats' metrics, read from its L{Recvstats
    <sysmon.beostat.recv.Recvstats>} (once started; before, only zeros).

    @ivar service: the L{RecvstatsService<sysmon.beostat.recv.RecvstatsService>}.
    """

    def __init__(self, service: Any) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        from sysmon.beostat import shm

        controller = self.service.controller
        states = ([s.record.state for s in list(controller.nodes.values())]
                  if controller is not None else [])
        counters: dict[str, int] = dict(controller.counters) if controller is not None else {}
        yield _byLabel(GaugeMetricFamily, "sysmon_recvstats_nodes", "Cluster nodes by state.",
                       "state", {"up": states.count(shm.UP), "down": states.count(shm.DOWN)})
        yield _byLabel(
            CounterMetricFamily, "sysmon_recvstats_packets_total",
            "Status datagrams: good (reports taken) or bad (malformed, unsigned, badly "
            "signed, node out of range).", "result",
            {"good": counters.get("status", 0),
             "bad": counters.get("bad", 0) + counters.get("unsigned", 0)
             + counters.get("bad_signature", 0)})
        yield _byLabel(CounterMetricFamily, "sysmon_recvstats_gmond_packets_total",
                       "Ganglia gmond packets: good or malformed.", "result",
                       {"good": counters.get("gmond", 0), "bad": counters.get("gmond_bad", 0)})


class SendstatsCollector(_Collector):
    """
    sendstats' metrics.

    @ivar service: the L{SendstatsService<sysmon.beostat.send.SendstatsService>}.
    """

    def __init__(self, service: Any) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "sysmon_sendstats_reports_total", "Status reports sent.",
            value=self.service.counters.get("reports", 0))


class WatchdogCollector(_Collector):
    """
    The watchdog's metrics.

    @ivar service: the L{WatchdogService<sysmon.watchdog.service.WatchdogService>}.
    @ivar now: the clock of C{seconds_since_refresh}; L{None} for the
        service's own (C{service.now}, the clock C{lastRefresh} is stamped
        with).
    """

    def __init__(self, service: Any, now: Callable[[], float] | None = None) -> None:
        self.service = service
        self.now = now

    def collect(self) -> Iterator[Metric]:
        service = self.service
        yield CounterMetricFamily("sysmon_watchdog_rounds_total", "Rounds of checks started.",
                                  value=service.rounds)
        failures = {check.name: 0 for check in service.checks}
        failures.update(dict(service.failures))
        yield _byLabel(CounterMetricFamily, "sysmon_watchdog_check_failures_total",
                       "Failed results, by check.", "check",
                       {name: failures[name] for name in sorted(failures)})
        refreshed = GaugeMetricFamily(
            "sysmon_watchdog_seconds_since_refresh",
            "Seconds since the device was last refreshed (with no device: since the "
            "refresh timer last fired).")
        last = service.lastRefresh
        if last is not None:
            now = self.now or service.now
            refreshed.add_metric([], max(now() - last, 0.0))
        yield refreshed
        yield CounterMetricFamily("sysmon_watchdog_repairs_total", "Repair programs started.",
                                  value=service.repairsRun)


class KeepaliveCollector(_Collector):
    """
    keepalive's metrics.

    @ivar supervisor: the L{Supervisor<sysmon.keepalive.supervisor.Supervisor>}.
    """

    def __init__(self, supervisor: Any) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        from sysmon.keepalive.policy import State

        states = [e.record.state for e in list(self.supervisor.entries.values())]
        yield _byLabel(GaugeMetricFamily, "sysmon_keepalive_processes",
                       "Registered processes by state.", "state",
                       {state.value: states.count(state) for state in State})
        yield CounterMetricFamily("sysmon_keepalive_restarts_total",
                                  "Restarts of registered processes.",
                                  value=self.supervisor.restarts)


def makeRegistry(daemons: Daemons, now: Callable[[], float] | None = None) -> CollectorRegistry:
    """
    A registry of its own with one collector per enabled daemon of
    C{daemons}.

    @param now: the clock for C{sysmon_watchdog_seconds_since_refresh};
        L{None} (the default) for the watchdog service's own clock, the one
        its C{lastRefresh} is stamped with (CLOCK_BOOTTIME under twistd):
        another clock only makes sense if the watchdog was built with it.
    """
    registry = CollectorRegistry()
    if daemons.netdump is not None:
        registry.register(NetdumpCollector(daemons.netdump))
    if daemons.statd is not None:
        registry.register(StatdCollector(daemons.statd))
    if daemons.recvstats is not None:
        registry.register(RecvstatsCollector(daemons.recvstats))
    if daemons.sendstats is not None:
        registry.register(SendstatsCollector(daemons.sendstats))
    if daemons.watchdog is not None:
        registry.register(WatchdogCollector(daemons.watchdog, now))
    supervisor = daemons.supervisor()
    if supervisor is not None:
        registry.register(KeepaliveCollector(supervisor))
    return registry
