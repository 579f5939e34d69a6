"""
statd RPC benchmark: sysmon's statd against Linux rpc.statd, in one run.

A load generator keeps N calls outstanding over UDP (N = 1 and 64) and
measures calls/s for SM_STAT, and pairs/s for durable SM_MON + SM_UNMON
pairs (each slot sends MON with a new 16-byte cookie, so that every MON is
a write, waits for its answer, then UNMON; the names are "localhost" and
"127.0.0.1", which Linux rpc.statd resolves without DNS — unanswered
reverse lookups otherwise drop it to a few calls a second here); then it runs
100 000 MON/UNMON pairs against sysmon's statd and reports its RSS.  Both
daemons (and rpcbind, which rpc.statd needs) are started by the benchmark on
loopback and stopped by pid.  The load generator is C, so that the client
is never what limits a server; the figure of a plain Python client is
printed beside it for comparison.

Run as root from the repository root:  python bench/statd_rpc.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sysmon.rpc import message as m  # noqa: E402
from sysmon.rpc.xdr import Packer  # noqa: E402
from sysmon.statd import nsm  # noqa: E402
from sysmon.testing import processUsage  # noqa: E402

LOAD_C = r"""
#include <arpa/inet.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* usage: load PORT stat|pair SLOTS SECONDS
   Prints: completed-operations seconds retransmissions */
static double now(void) { struct timeval tv; gettimeofday(&tv, 0); return tv.tv_sec + tv.tv_usec / 1e6; }
static int put32(unsigned char *p, uint32_t v) { v = htonl(v); memcpy(p, &v, 4); return 4; }
static int putstr(unsigned char *p, const char *s) {
    int n = strlen(s), k = put32(p, n); memcpy(p + k, s, n); k += n;
    while (k % 4) p[k++] = 0; return k; }

int main(int argc, char **argv) {
    int port = atoi(argv[1]); int pair = !strcmp(argv[2], "pair");
    int slots = atoi(argv[3]); double seconds = atof(argv[4]);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = {0}; to.sin_family = AF_INET; to.sin_port = htons(port);
    to.sin_addr.s_addr = htonl(0x7f000001);
    connect(fd, (void *)&to, sizeof to);
    long *pairNo = calloc(slots, sizeof(long)); int *phase = calloc(slots, sizeof(int));
    double *sent = calloc(slots, sizeof(double)); uint32_t *seq = calloc(slots, 4);
    long done = 0, retrans = 0, nextPair = 0;
    unsigned char buf[2048], in[2048];
    #define SEND(s) do { \
        int k = 0; uint32_t xid = ((uint32_t)(s) << 16) | (seq[s] & 0xffff); \
        k += put32(buf + k, xid); k += put32(buf + k, 0); k += put32(buf + k, 2); \
        k += put32(buf + k, 100024); k += put32(buf + k, 1); \
        k += put32(buf + k, pair ? (phase[s] ? 3 : 2) : 1); \
        k += put32(buf + k, 0); k += put32(buf + k, 0); k += put32(buf + k, 0); k += put32(buf + k, 0); \
        if (!pair) k += putstr(buf + k, "localhost"); \
        else { k += putstr(buf + k, "localhost"); k += putstr(buf + k, "127.0.0.1"); \
               k += put32(buf + k, 100021); k += put32(buf + k, 3); k += put32(buf + k, 16); \
               if (!phase[s]) { memset(buf + k, 'P', 8); k += 8; \
                                k += put32(buf + k, s); k += put32(buf + k, pairNo[s]); } } \
        send(fd, buf, k, 0); sent[s] = now(); } while (0)
    for (int s = 0; s < slots; s++) { pairNo[s] = nextPair++; SEND(s); }
    double t0 = now(), end = t0 + seconds;
    struct pollfd pfd = { fd, POLLIN, 0 };
    while (now() < end) {
        if (poll(&pfd, 1, 100) <= 0) {
            double t = now();
            for (int s = 0; s < slots; s++) if (t - sent[s] > 1.0) { retrans++; SEND(s); }
            continue;
        }
        ssize_t n = recv(fd, in, sizeof in, MSG_DONTWAIT);
        if (n < 24) continue;
        uint32_t xid; memcpy(&xid, in, 4); xid = ntohl(xid);
        int s = xid >> 16;
        if (s >= slots || (xid & 0xffff) != (seq[s] & 0xffff)) continue;
        seq[s]++;
        if (pair) {
            if (phase[s] == 0) { phase[s] = 1; SEND(s); continue; }
            phase[s] = 0; pairNo[s] = nextPair++;
        }
        done++;
        SEND(s);
    }
    printf("%ld %f %ld\n", done, now() - t0, retrans);
    return 0;
}
"""


def freePort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc(pid: int) -> tuple[float, int]:
    """
    CPU seconds and current RSS (bytes) of C{pid}.
    """
    usage = processUsage(pid)
    return usage.cpu, usage.rss


def waitUDP(port: int, proc_: int = 1) -> None:
    call = m.encodeCall(1, nsm.PROG, nsm.VERS, nsm.STAT, Packer().string(b"localhost").bytes())
    deadline = time.monotonic() + 30
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            s.sendto(call, ("127.0.0.1", port))
            try:
                s.recv(100)
                return
            except OSError:
                continue
    raise SystemExit(f"no statd answers on {port}")


def load(exe: str, pid: int, port: int, mode: str, slots: int, seconds: float) -> dict:
    cpu0, _ = proc(pid)
    out = subprocess.run([exe, str(port), mode, str(slots), str(seconds)], capture_output=True,
                         text=True, check=True).stdout.split()
    cpu1, rss = proc(pid)
    done, elapsed, retrans = int(out[0]), float(out[1]), int(out[2])
    return {"rate": done / elapsed, "cpu": (cpu1 - cpu0) / elapsed, "rss": rss,
            "retrans": retrans}


def pythonClient(port: int, seconds: float) -> float:
    """
    The best a simple Python client does (64 outstanding SM_STATs).
    """
    call = m.encodeCall(1, nsm.PROG, nsm.VERS, nsm.STAT, Packer().string(b"localhost").bytes())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", port))
        for _ in range(64):
            s.send(call)
        done, end = 0, time.monotonic() + seconds
        start = time.monotonic()
        s.settimeout(1)
        while time.monotonic() < end:
            try:
                s.recv(100)
            except OSError:
                for _ in range(64):
                    s.send(call)
                continue
            done += 1
            s.send(call)
    return done / (time.monotonic() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pairs", type=int, default=100_000,
                        help="MON/UNMON pairs for the RSS figure")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: rpc.statd and rpcbind need it")
    for tool in ("gcc", "rpc.statd", "rpcbind"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed")
    work = tempfile.mkdtemp(prefix="statd-bench-")
    procs: list[subprocess.Popen] = []
    try:
        exe = os.path.join(work, "load")
        with open(exe + ".c", "w") as f:
            f.write(LOAD_C)
        subprocess.run(["gcc", "-O2", "-o", exe, exe + ".c"], check=True)
        os.makedirs("/run/rpcbind", exist_ok=True)
        procs.append(subprocess.Popen(["rpcbind", "-w", "-f"]))
        time.sleep(0.5)
        linuxPort, oursPort = freePort(), freePort()
        linuxDir = os.path.join(work, "linux")
        os.makedirs(os.path.join(linuxDir, "sm"))
        os.makedirs(os.path.join(linuxDir, "sm.bak"))
        linux = subprocess.Popen(["rpc.statd", "--no-notify", "-F", "-P", linuxDir, "-p",
                                  str(linuxPort)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        procs.append(linux)
        ours = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
             "--pidfile=", f"--logfile={work}/statd.log", "statd", "--port", str(oursPort),
             "--addr", "127.0.0.1", "--no-notify", "--state-file", f"{work}/status.db",
             "--name", "bench.example.org"], cwd=ROOT)
        procs.append(ours)
        waitUDP(linuxPort)
        waitUDP(oursPort)
        print(f"(a plain Python client, 64 outstanding SM_STAT against rpc.statd: "
              f"{pythonClient(linuxPort, 2):,.0f} calls/s)")
        for mode, label in (("stat", "SM_STAT calls/s"), ("pair", "durable MON+UNMON pairs/s")):
            for slots in (1, 64):
                a = load(exe, linux.pid, linuxPort, mode, slots, args.seconds)
                b = load(exe, ours.pid, oursPort, mode, slots, args.seconds)
                print(f"{label:<28} N={slots:<3} rpc.statd {a['rate']:>9,.0f} "
                      f"(CPU {a['cpu']:.0%}, RSS {a['rss'] / 2**20:.1f} MiB)   sysmon "
                      f"{b['rate']:>9,.0f} (CPU {b['cpu']:.0%}, RSS {b['rss'] / 2**20:.1f} MiB)"
                      f"   ratio {b['rate'] / max(a['rate'], 1e-9):.2f}")
        start = time.monotonic()
        per = max(1, args.pairs)
        done = 0
        while done < per:
            r = load(exe, ours.pid, oursPort, "pair", 64, 5)
            done += int(r["rate"] * 5)
        _, rss = proc(ours.pid)
        print(f"sysmon statd RSS after {done:,} MON/UNMON pairs: {rss / 2**20:.1f} MiB "
              f"({time.monotonic() - start:.0f} s)")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
        for name in ("portmap.xdr", "rpcbind.xdr"):
            try:
                os.unlink(os.path.join("/run/rpcbind", name))
            except FileNotFoundError:
                pass
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
