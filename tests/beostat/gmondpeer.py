"""
A real Ganglia gmond (Debian's C{ganglia-monitor}, gmond 3.7.2) as a peer in
live tests: it writes its own C{gmond.conf} under the test's temporary
directory, sends to one unicast port on 127.0.0.1, and is stopped by pid
when the test ends.

The configuration is made so a test sees every standard metric within a
few seconds and the peer touches nothing else on the machine:

  - C{deaf = yes}, no C{udp_recv_channel} and no C{tcp_accept_channel}: it
    binds no port, so it cannot collide with a system gmond on 8649 or with
    another test;
  - C{setuid = no}, C{daemonize = no} and C{gmond -f}: it stays our child,
    as the user running the tests;
  - C{send_metadata_interval} small, and collection groups with
    C{collect_every = 1} and short C{time_threshold}s (the stock ones are
    20 to 3600 s).

Debian's package enables a C{ganglia-monitor} service that runs a
multicast gmond with C{/etc/ganglia/gmond.conf}; where the package was
installed under a running systemd, stop it (C{systemctl disable --now
ganglia-monitor}).  It does not disturb these tests, which only listen on
their own unicast port.
"""

from __future__ import annotations

import glob
import os
import subprocess
from typing import Any

from sysmon.testing import stopProcess

__all__ = ["GMOND", "GmondPeer", "moduleDirectory", "unavailable"]

#: Where Debian installs gmond.
GMOND = "/usr/sbin/gmond"

#: The metric modules the peer loads (C{core_metrics} is built in).
MODULES = (
    ("cpu_module", "modcpu.so"),
    ("disk_module", "moddisk.so"),
    ("load_module", "modload.so"),
    ("mem_module", "modmem.so"),
    ("net_module", "modnet.so"),
    ("proc_module", "modproc.so"),
    ("sys_module", "modsys.so"),
)

#: Collection groups: C{(collect_once, collect_every, time_threshold,
#: metric names)}.
GROUPS = (
    (True, 0, 5, ("heartbeat",)),
    (True, 0, 5, ("cpu_num", "cpu_speed", "mem_total", "swap_total", "boottime",
                  "machine_type", "os_name", "os_release", "location")),
    (False, 1, 2, ("cpu_user", "cpu_system", "cpu_idle", "cpu_nice", "cpu_aidle", "cpu_wio")),
    (False, 1, 2, ("load_one", "load_five", "load_fifteen")),
    (False, 1, 2, ("proc_run", "proc_total")),
    (False, 1, 2, ("mem_free", "mem_shared", "mem_buffers", "mem_cached", "swap_free")),
    (False, 1, 2, ("bytes_out", "bytes_in", "pkts_in", "pkts_out")),
    (False, 1, 5, ("disk_total", "disk_free", "part_max_used")),
)


def moduleDirectory() -> str | None:
    """
    The directory of gmond's metric modules (C{/usr/lib/<triplet>/ganglia}
    on Debian), or L{None} when it is not found.  gmond resolves a relative
    module path against nothing useful, so the configuration needs it.
    """
    candidates = sorted(glob.glob("/usr/lib/*/ganglia/modcpu.so"))
    candidates += ["/usr/lib64/ganglia/modcpu.so", "/usr/lib/ganglia/modcpu.so"]
    for path in candidates:
        if os.path.isfile(path):
            return os.path.dirname(path)
    return None


def unavailable() -> str | None:
    """
    Why no gmond peer can run here, or L{None} when one can.
    """
    if not os.access(GMOND, os.X_OK):
        return f"{GMOND} is missing: install Debian's ganglia-monitor"
    if moduleDirectory() is None:
        return "gmond's metric modules (modcpu.so, ...) are missing"
    return None


def _quote(text: str) -> str:
    if '"' in text or "\\" in text or "\n" in text:
        raise ValueError(f"cannot quote {text!r} for gmond.conf")
    return f'"{text}"'


class GmondPeer:
    """
    C{gmond -f -c <conf>} sending to C{127.0.0.1:<port>}.

    @ivar conf: the path of the configuration written by L{start}.
    @ivar logfile: gmond's standard output and error.
    @ivar process: the L{subprocess.Popen}, once started.
    """

    def __init__(self, case: Any, port: int, hostname: str | None = None,
                 ip: str | None = None, metadataInterval: int = 2,
                 host: str = "127.0.0.1") -> None:
        """
        @param case: the test; the peer is stopped in its cleanup.
        @param port: the UDP port to send to.
        @param hostname: C{override_hostname}; gmond then sends every
            metric spoofed as C{"<ip>:<hostname>"}.
        @param ip: C{override_ip}, the IP part of that spoof string (gmond
            uses the host name there when it is not given).
        @param metadataInterval: C{send_metadata_interval}, seconds.
        @param host: the address to send to.
        """
        base = os.path.abspath(case.mktemp())
        os.makedirs(base, exist_ok=True)
        self.conf = os.path.join(base, "gmond.conf")
        self.logfile = os.path.join(base, "gmond.log")
        self.port = port
        self.host = host
        self.hostname = hostname
        self.ip = ip
        self.metadataInterval = metadataInterval
        self.process: subprocess.Popen | None = None
        case.addCleanup(self.stop)

    def config(self) -> str:
        """
        The text of the peer's C{gmond.conf}.
        """
        modules = moduleDirectory() or "/usr/lib/ganglia"
        lines = [
            "globals {",
            "  daemonize = no",
            "  setuid = no",
            "  debug_level = 0",
            "  max_udp_msg_len = 1472",
            "  mute = no",
            "  deaf = yes",
            "  allow_extra_data = yes",
            "  host_dmax = 0",
            "  host_tmax = 20",
            "  cleanup_threshold = 300",
            "  gexec = no",
            f"  send_metadata_interval = {int(self.metadataInterval)}",
        ]
        if self.hostname is not None:
            lines.append(f"  override_hostname = {_quote(self.hostname)}")
        if self.ip is not None:
            lines.append(f"  override_ip = {_quote(self.ip)}")
        lines += [
            "}",
            'cluster {\n  name = "sysmon-test"\n}',
            'host {\n  location = "0,0,0"\n}',
            "udp_send_channel {",
            f"  host = {self.host}",
            f"  port = {int(self.port)}",
            "}",
            "modules {",
            '  module {\n    name = "core_metrics"\n  }',
        ]
        for name, library in MODULES:
            path = os.path.join(modules, library)
            lines.append(f"  module {{\n    name = {_quote(name)}\n    path = {_quote(path)}\n  }}")
        lines.append("}")
        for once, every, threshold, metrics in GROUPS:
            lines.append("collection_group {")
            lines.append("  collect_once = yes" if once else f"  collect_every = {every}")
            lines.append(f"  time_threshold = {threshold}")
            for metric in metrics:
                lines.append(f"  metric {{\n    name = {_quote(metric)}\n  }}")
            lines.append("}")
        return "\n".join(lines) + "\n"

    def start(self) -> subprocess.Popen:
        """
        Write the configuration and start gmond in the foreground.
        """
        with open(self.conf, "w", encoding="utf-8") as f:
            f.write(self.config())
        with open(self.logfile, "wb") as log:
            self.process = subprocess.Popen([GMOND, "-f", "-c", self.conf],
                                            stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT)
        return self.process

    def log(self) -> str:
        """
        What gmond wrote so far.
        """
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """
        SIGTERM gmond (by pid) and reap it; nothing when it is not running.
        """
        stopProcess(self.process, grace=10)
