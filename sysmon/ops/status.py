"""
What the status page shows, as one JSON-able dictionary: the cluster's
nodes (recvstats), crash dumps in progress and finished (netdump), the
hosts statd monitors, keepalive's processes, and which daemons run.

L{snapshot} reads the daemons' live state, in the reactor thread (their
state is only ever changed there, so it is consistent without locks), and
never touches the disk, except for the finished dumps, which come from the
dump directory: L{finishedDumps} reads them (one C{stat} per crash
directory, then at most L{FINISHED_LIMIT} small C{dump.json} files) and is
safe to run in a thread, which is what L{sysmon.ops.web} does.

Shape (every daemon's part is L{None} when that daemon is not enabled)::

    {"generated": 1700000000.0,            # seconds since the epoch
     "enabled": {"netdump": true, "statd": true, "recvstats": true,
                 "sendstats": false, "watchdog": false, "keepalive": true},
     "nodes": [{"node": 3, "name": "n3", "address": "10.0.0.3",
                "state": "up" | "stale" | "down", "age": 1.5, "interval": 5.0,
                "cpu": 12.5 | null, "cpus": 2,           # percent of all CPUs
                "memory": {"used": bytes, "total": bytes} | null,
                "load": [1.0, 0.5, 0.25] | null,
                "net": {"rx": bytes/s, "tx": bytes/s} | null,
                "origin": "sender" | "directory" | "ip-base" | "assigned",
                "source": "sendstats" | "gmond"}],
     "dumps": {"active": [{"client": ip, "port": 6666, "directory": name | null,
                           "state": "memory", "pages_done": 10, "pages_total": 512,
                           "bytes": 40960, "started": t, "log": url | null}],
               "finished": [{"directory": name, "client": ip, "time": t,
                             "started": t, "outcome": "complete", "complete": true,
                             "reason": "", "size": bytes, "pages": 500,
                             "pages_total": 512, "log": url | null}],
               "finished_count": 1},
     "statd": {"state": 3,
               "hosts": [{"name": "client1", "monitored": true, "state": 5 | null,
                          "notify_pending": false,
                          "callbacks": [{"my_name": "me", "prog": 100021, "vers": 3,
                                         "proc": 16}]}]},
     "keepalive": {"processes": [{"slot": 1, "name": "sleep", "path": "/bin/sleep",
                                  "args": ["1000"], "pid": 1234, "state": "ok",
                                  "restarts": 0, "group": null, "last_exit": ""}]},
     "watchdog": {"rounds": 12, "feeding": true, "no_action": true},
     "sendstats": {"interval": 5.0, "masters": ["10.0.0.1:3040"]}}

A node is C{stale} when recvstats still counts it up but it has been silent
for more than L{STALE_INTERVALS} of its reporting intervals (recvstats
marks it down after four).
"""

from __future__ import annotations

import json
import math
import os
import time
import urllib.parse
from typing import Any, Callable, Iterable

import attrs

from sysmon.ops.daemons import Daemons

__all__ = [
    "FINISHED_LIMIT",
    "Finished",
    "STALE_INTERVALS",
    "DAEMON_NAMES",
    "finishedDumps",
    "logURL",
    "snapshot",
]

#: Finished dumps listed, newest first.
FINISHED_LIMIT = 50
#: A node silent for more than this many of its intervals is stale.
STALE_INTERVALS = 2.0
#: The daemons, in the order the page lists them.
DAEMON_NAMES = ("netdump", "statd", "recvstats", "sendstats", "watchdog", "keepalive")

#: Entries of the dump directory that are not crash directories.
_NOT_DUMPS = frozenset({"console", "magic", "scripts"})
#: dump.json is a few hundred bytes; read no more than this of it.
_MAX_INFO = 64 * 1024
_ORIGINS = {0: "sender", 1: "directory", 2: "ip-base", 3: "assigned"}


def logURL(directory: str) -> str:
    """
    The status site's URL of a crash directory's console log.
    """
    return "/dumps/" + urllib.parse.quote(directory, safe="") + "/log"


def snapshot(daemons: Daemons, now: Callable[[], float] = time.time,
             finished: Finished | None = None) -> dict[str, Any]:
    """
    The status of every enabled daemon (see the module docstring).

    @param now: the wall clock (node ages are measured with it).
    @param finished: the finished dumps as L{finishedDumps} read them (in
        a thread); L{None} reads them here, blocking.
    """
    when = now()
    return {
        "generated": when,
        "enabled": {name: getattr(daemons, name) is not None for name in DAEMON_NAMES},
        "nodes": _nodes(daemons.recvstats, when),
        "dumps": _dumps(daemons.netdump, finished),
        "statd": _statd(daemons.statd),
        "keepalive": _keepalive(daemons),
        "watchdog": _watchdog(daemons.watchdog),
        "sendstats": _sendstats(daemons.sendstats),
    }


# -- recvstats ----------------------------------------------------------------


def _nodes(service: Any, now: float) -> list[dict[str, Any]] | None:
    if service is None:
        return None
    from sysmon.beostat import shm

    controller = getattr(service, "controller", None)
    if controller is None:
        return []
    nodes = []
    for number in sorted(controller.nodes):
        record = controller.nodes[number].record
        if record.state == shm.EMPTY:
            continue
        age = max(0.0, now - record.updated)
        if record.state == shm.DOWN:
            state = "down"
        elif age > STALE_INTERVALS * max(record.interval, 0.1):
            state = "stale"
        else:
            state = "up"
        nodes.append({
            "node": number,
            "name": record.hostname or f"node {number}",
            "address": record.address,
            "state": state,
            "age": _finite(age, 1),
            "interval": _finite(record.interval, 3),
            "cpu": None if record.cpuUsage is None else _finite(record.cpuUsage * 100, 1),
            "cpus": record.cpuCount,
            "memory": _memory(record.memory),
            "load": None if record.load is None else [
                _finite(record.load.one, 2), _finite(record.load.five, 2),
                _finite(record.load.fifteen, 2)],
            "net": None if record.rates is None else {
                "rx": _finite(record.rates[0], 1), "tx": _finite(record.rates[1], 1)},
            "origin": _ORIGINS.get(record.origin, str(record.origin)),
            "source": shm.SOURCE_NAMES.get(record.source, "-"),
        })
    return nodes


def _finite(value: float | None, digits: int) -> float | None:
    """
    C{value} rounded, or L{None} when it is not a finite number (a node
    can send anything: JSON has no NaN or infinity).
    """
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def _memory(memory: Any) -> dict[str, int] | None:
    """
    Used and total bytes: used is what is not available (recvstats
    estimates C{available} where the node's kernel does not give it).
    """
    if memory is None or not memory.total:
        return None
    return {"used": max(0, memory.total - memory.available), "total": memory.total}


# -- netdump --------------------------------------------------------------------


def _dumps(service: Any, finished: Finished | None) -> dict[str, Any] | None:
    if service is None:
        return None
    server = service.server
    active = []
    for session in sorted(server.sessions.values(), key=lambda s: (s.startedAt, s.ip)):
        directory = os.path.basename(session.directory) if session.directory else None
        journal = session.journal
        done = journal.done if journal is not None and session.nrPages else 0
        active.append({
            "client": session.ip,
            "port": session.port,
            "directory": directory,
            "state": session.state,
            "pages_done": done,
            "pages_total": session.nrPages,
            "bytes": session.written * session.pageSize,
            "started": session.startedAt,
            "log": logURL(directory) if directory else None,
        })
    if finished is None:
        finished = finishedDumps(server.store.root)
    # A dump read from disk as it was starting is listed as active only.
    busy = {a["directory"] for a in active}
    shown = [f for f in finished.dumps if f["directory"] not in busy]
    return {
        "active": active,
        "finished": shown,
        "finished_count": finished.count - (len(finished.dumps) - len(shown)),
    }


@attrs.frozen
class Finished:
    """
    Finished dumps as read from the dump directory.

    @ivar dumps: the newest, newest first (dictionaries as in the module
        docstring).
    @ivar count: how many crash directories there are in all.
    """

    dumps: list[dict[str, Any]]
    count: int


def finishedDumps(root: str, limit: int = FINISHED_LIMIT) -> Finished:
    """
    The crash directories of C{root} that have a C{dump.json}, newest first
    (by when their C{dump.json} was last written), at most C{limit}.
    Blocking file-system reads: safe to call from a thread.
    """
    candidates: list[tuple[float, str]] = []
    try:
        entries = os.scandir(root)
    except OSError:
        return Finished([], 0)
    with entries:
        for entry in entries:
            if entry.name in _NOT_DUMPS or entry.name.startswith("."):
                continue
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                info = os.stat(os.path.join(entry.path, "dump.json"), follow_symlinks=False)
            except OSError:
                continue
            candidates.append((info.st_mtime, entry.name))
    candidates.sort(reverse=True)
    return Finished([_finished(root, name, mtime) for mtime, name in candidates[:limit]],
                    len(candidates))


def _finished(root: str, name: str, mtime: float) -> dict[str, Any]:
    path = os.path.join(root, name)
    try:
        with open(os.path.join(path, "dump.json"), "rb") as f:
            info = json.loads(f.read(_MAX_INFO))
        if not isinstance(info, dict):
            raise ValueError("not an object")
    except (OSError, ValueError):
        info = {}
    client = info.get("client")
    ip = client.get("ip") if isinstance(client, dict) else None
    if not isinstance(ip, str):
        ip = name.rsplit("-", 4)[0]
    outcome = info.get("outcome")
    outcome = outcome if isinstance(outcome, str) else "unknown"
    size = 0
    for vmcore in ("vmcore", "vmcore-incomplete"):
        try:
            size = os.stat(os.path.join(path, vmcore), follow_symlinks=False).st_size
            break
        except OSError:
            pass
    try:
        hasLog = os.path.isfile(os.path.join(path, "log")) and not os.path.islink(
            os.path.join(path, "log"))
    except OSError:
        hasLog = False
    return {
        "directory": name,
        "client": ip,
        "time": _number(info.get("end_time")) or _number(info.get("start_time")) or mtime,
        "started": _number(info.get("start_time")),
        "outcome": outcome,
        "complete": outcome == "complete",
        "reason": info.get("reason") if isinstance(info.get("reason"), str) else "",
        "size": size,
        "pages": _number(info.get("ram_pages_received")),
        "pages_total": _number(info.get("nr_pages")),
        "log": logURL(name) if hasLog else None,
    }


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


# -- statd ----------------------------------------------------------------------


def _statd(service: Any) -> dict[str, Any] | None:
    if service is None:
        return None
    store = getattr(service, "store", None)
    if store is None:
        return {"state": None, "hosts": []}
    callbacks: dict[str, list[dict[str, Any]]] = {}
    for entry in sorted(store.entries.values(), key=lambda e: e.key):
        callbacks.setdefault(entry.monName, []).append(
            {"my_name": entry.myName, "prog": entry.prog, "vers": entry.vers,
             "proc": entry.proc})
    hosts = []
    for name in sorted(set(callbacks) | set(store.hosts)):
        state, notify = store.hosts.get(name, (None, False))
        hosts.append({
            "name": name,
            "monitored": name in callbacks,
            "state": state,
            "notify_pending": bool(notify),
            "callbacks": callbacks.get(name, []),
        })
    return {"state": store.state, "hosts": hosts}


# -- keepalive, watchdog, sendstats ---------------------------------------------


def _keepalive(daemons: Daemons) -> dict[str, Any] | None:
    if daemons.keepalive is None:
        return None
    supervisor = daemons.supervisor()
    if supervisor is None:
        return {"processes": []}
    processes = []
    for slot in sorted(supervisor.entries):
        record = supervisor.entries[slot].record
        processes.append({
            "slot": record.slot,
            "name": os.path.basename(record.config.path),
            "path": record.config.path,
            "args": list(record.config.args),
            "pid": record.pid,
            "state": getattr(record.state, "value", str(record.state)),
            "restarts": record.restarts,
            "group": record.group,
            "last_exit": record.lastExit,
        })
    return {"processes": processes}


def _watchdog(service: Any) -> dict[str, Any] | None:
    if service is None:
        return None
    return {
        "rounds": service.rounds,
        "feeding": bool(service.feeding),
        "no_action": bool(service.noAction),
    }


def _sendstats(service: Any) -> dict[str, Any] | None:
    if service is None:
        return None
    return {
        "interval": service.interval,
        "masters": [f"{host}:{port}" for host, port in _pairs(service.masters)],
    }


def _pairs(masters: Iterable[Any]) -> list[tuple[str, int]]:
    return [(str(m[0]), int(m[1])) for m in masters]
