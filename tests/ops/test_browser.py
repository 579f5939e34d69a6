"""
The status page in a real browser: Debian's C{chromium}, headless, loads
the page from a running C{conf/sysmon.tac} (L{tests.ops.tac}) after the
test made nodes report to its recvstats, made one emulated machine dump
its memory to its netdump completely and another stop half way, had statd
monitor hosts and keepalive run a process; the DOM after the page's script
ran must show them all, and a screenshot is saved for a person to look at.

Without C{/usr/bin/chromium} the test is skipped, unless C{$CI} is
C{true}, where it fails.
"""

from __future__ import annotations

import html.parser
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Any, Callable

from twisted.internet import defer, protocol, task, threads
from twisted.trial.unittest import SkipTest, TestCase

from sysmon.beostat import procfs
from sysmon.beostat import wire as beowire
from sysmon.beostat.send import StatusBuilder
from sysmon.netdump import wire as ndwire
from sysmon.netdump.sim import Memory, SimClient
from sysmon.ops import status
from sysmon.rpc import message as rpcmessage
from sysmon.rpc.xdr import Packer
from sysmon.statd import nsm
from sysmon.testing import ProcTree

CHROMIUM = "/usr/bin/chromium"
PAGE = 4096
_REQUEST = struct.Struct(">QIIII")

#: chromium without anything that talks to the network on its own.
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-sync", "--disable-extensions",
    "--disable-component-update", "--disable-default-apps", "--metrics-recording-only",
    "--no-pings", "--dns-prefetch-disable", "--hide-scrollbars", "--mute-audio",
    "--disable-breakpad",
)


def requireChromium() -> None:
    if os.access(CHROMIUM, os.X_OK):
        return
    if os.environ.get("CI") == "true":
        raise AssertionError(f"{CHROMIUM} is missing (apt install chromium) and CI is set")
    raise SkipTest(f"{CHROMIUM} is not installed (apt install chromium)")


# -- the browser -------------------------------------------------------------------


class Chromium:
    """
    Runs headless chromium, one invocation at a time, with a fresh profile
    and a home directory of its own (its crash handler writes there) under
    the test's temporary directory.  Each run is in a session of its own;
    at the end of the test its process group is killed, and so is any
    process still naming that home (the crash handlers leave the group).
    """

    def __init__(self, case: TestCase, budget: int = 5000) -> None:
        self.case = case
        self.budget = budget
        self.home = os.path.abspath(case.mktemp())
        self.profile = os.path.join(self.home, "profile")
        os.makedirs(self.profile)
        self.processes: list[subprocess.Popen] = []
        case.addCleanup(self.killAll)

    def killAll(self) -> None:
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(30)
        _killAll(lambda cmdline: self.home.encode() in cmdline)

    @defer.inlineCallbacks
    def run(self, *args: str, timeout: float = 90) -> Any:
        """
        Run chromium with C{args} after the common flags; its stdout.
        """
        argv = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                f"--virtual-time-budget={self.budget}", *args]
        env = dict(os.environ, HOME=self.home, XDG_CONFIG_HOME=os.path.join(self.home, ".config"),
                   XDG_CACHE_HOME=os.path.join(self.home, ".cache"))
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=True, env=env)
        self.processes.append(process)
        try:
            out, err = yield threads.deferToThread(process.communicate, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError(f"chromium did not finish within {timeout}s: {argv}")
        if process.returncode != 0:
            raise AssertionError(f"chromium exited {process.returncode}: "
                                 f"{err.decode(errors='replace')[-2000:]}")
        return out

    def dumpDOM(self, url: str) -> Any:
        """
        The page's DOM, serialized, after its scripts ran.
        """
        return self.run("--dump-dom", url)

    def screenshot(self, url: str, path: str, size: str = "1280,1000") -> Any:
        return self.run(f"--screenshot={path}", f"--window-size={size}", url)


class Element:
    """
    One element of a parsed DOM.
    """

    def __init__(self, tag: str, attrs: dict[str, str], parent: Element | None) -> None:
        self.tag = tag
        self.attrs = attrs
        self.parent = parent
        self.children: list[Element | str] = []

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self) -> Any:
        for child in self.children:
            if isinstance(child, Element):
                yield child
                yield from child.iter()

    def find(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Element]:
        """
        The descendants with C{tag}, class C{cls} and the attributes
        C{attrs} (C{data_node="3"} is C{data-node="3"}).
        """
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [e for e in self.iter()
                if (tag is None or e.tag == tag) and (cls is None or cls in e.classes)
                and all(e.attrs.get(k) == v for k, v in wanted.items())]

    def one(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> Element:
        found = self.find(tag, cls, **attrs)
        if len(found) != 1:
            raise AssertionError(f"{len(found)} elements {tag} .{cls} {attrs}, not 1")
        return found[0]


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
         "source", "track", "wbr"}


class _DOMParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {}, None)
        self.current = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs}, self.current)
        self.current.children.append(element)
        if tag not in _VOID:
            self.current = element

    def handle_endtag(self, tag: str) -> None:
        node: Element | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.children.append(data)


def parseDOM(text: str) -> Element:
    parser = _DOMParser()
    parser.feed(text)
    parser.close()
    return parser.root


# -- what the test makes happen ----------------------------------------------------------


class DumpingMachine(protocol.DatagramProtocol):
    """
    An emulated crashed machine (L{SimClient}) on a real UDP socket: it
    sends its console log, announces its crash once a second until the
    server answers, then answers every request.  With C{holdAt} it sends
    whole pages only below that page frame and just the first fragment of
    the others: its dump stays in progress with exactly C{holdAt} pages
    done, and the server, still hearing from it, never gives it up.

    @ivar rebooted: fires when the server tells it to reboot.
    """

    def __init__(self, server: tuple[str, int], pages: int, holdAt: int | None = None,
                 seed: int = 1) -> None:
        self.server = server
        self.sim = SimClient(Memory(pages, PAGE, (), 0.0, seed))
        self.holdAt = holdAt
        self.rebooted: defer.Deferred[None] = defer.Deferred()
        self.announcing: task.LoopingCall | None = None

    def startProtocol(self) -> None:
        log = (f"Linux version 5.10.0 (emulated {self.transport.getHost().host})\n"
               "Kernel panic - not syncing: Fatal exception\n").encode()
        for chunk in self.sim.logChunks(log):
            self.transport.write(chunk, self.server)
        self.announcing = task.LoopingCall(self.announce)
        self.announcing.start(1.0)

    def announce(self) -> None:
        if self.sim.acked:
            self.announcing.stop()
            return
        self.transport.write(self.sim.start(), self.server)

    def stopProtocol(self) -> None:
        if self.announcing is not None and self.announcing.running:
            self.announcing.stop()

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr != self.server:
            return
        replies, logs = self.sim.handle(data)
        if self.holdAt is not None and len(data) >= _REQUEST.size:
            command, pfn = _REQUEST.unpack(data[:_REQUEST.size])[2:4]
            if command == ndwire.COMM.SEND_MEM and pfn >= self.holdAt:
                replies = replies[:1]
        for datagram in replies:
            self.transport.write(datagram, addr)
        for datagram in logs:
            self.transport.write(datagram, self.server)
        if self.sim.rebooted and not self.rebooted.called:
            self.rebooted.callback(None)


def reportNodes(case: TestCase, port: int, nodes: list[tuple[int, str, float, dict[str, Any]]]
                ) -> None:
    """
    Nodes report to recvstats on C{port} as sendstats does, twice each, 5 s
    apart by their clocks (so that CPU use and network rates are known),
    from fixture C{/proc} trees:
    C{(number, host name, interval, figures)}, figures being C{busy} (CPU
    ticks busy of 100), C{memory} (kB used of 16 GB), C{load}, C{rx} and
    C{tx} (bytes in the 5 s between the reports).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for number, hostname, interval, figures in nodes:
            tree = ProcTree.make(os.path.abspath(case.mktemp()))
            tree.meminfo(MemTotal=16 * 1024 * 1024,
                         MemAvailable=16 * 1024 * 1024 - figures["memory"])
            tree.loadavg(*figures["load"])
            tree.netdev({"eth0": {"rx_bytes": 10**9, "rx_packets": 10**6,
                                  "tx_bytes": 10**8, "tx_packets": 10**5}})
            builder = StatusBuilder(number, number.to_bytes(16, "big"), hostname, interval)
            now = time.time()
            first = builder.build(procfs.readSnapshot(tree.root, "/"), now - 5)
            busy = figures["busy"]
            tree.stat(cpus=((100 + busy, 0, 50, 1000 + 100 - busy, 5, 0, 1, 0, 0, 0),
                            (120 + busy, 2, 40, 990 + 100 - busy, 3, 0, 2, 0, 0, 0)))
            tree.netdev({"eth0": {"rx_bytes": 10**9 + figures["rx"], "rx_packets": 10**6 + 10,
                                  "tx_bytes": 10**8 + figures["tx"], "tx_packets": 10**5 + 10}})
            second = builder.build(procfs.readSnapshot(tree.root, "/"), now)
            for message in (first, second):
                sock.sendto(beowire.encode(message), ("127.0.0.1", port))
    finally:
        sock.close()


class _RPC(protocol.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: dict[int, defer.Deferred[bytes]] = {}

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        xid = struct.unpack(">I", data[:4])[0]
        if xid in self.waiting:
            self.waiting.pop(xid).callback(data)


@defer.inlineCallbacks
def monitor(reactor: Any, port: int, hosts: list[tuple[bytes, int]]) -> Any:
    """
    SM_MON calls to statd on C{port}, as lockd makes them: C{(host, proc)}.
    """
    rpc = _RPC()
    listening = reactor.listenUDP(0, rpc, interface="127.0.0.1")
    try:
        for xid, (host, proc) in enumerate(hosts, 1):
            args = nsm.Mon(nsm.MonId(host, nsm.MyId(b"sysmon-test", 100021, 4, proc)),
                           b"P" * 16)
            d: defer.Deferred[bytes] = defer.Deferred()
            rpc.waiting[xid] = d
            listening.write(rpcmessage.encodeCall(xid, nsm.PROG, nsm.VERS, nsm.MON,
                                                  args.pack(Packer()).bytes()),
                            ("127.0.0.1", port))
            reply = rpcmessage.decodeReply((yield d.addTimeout(10, reactor)))
            assert reply.accepted, reply
    finally:
        yield listening.stopListening()


@defer.inlineCallbacks
def waitFor(reactor: Any, predicate: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """
    Poll C{predicate} (in a thread: it may block) until it is true.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = yield threads.deferToThread(predicate)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        yield task.deferLater(reactor, 0.2, lambda: None)


# -- the test ---------------------------------------------------------------------


class BrowserTests(TestCase):
    """
    The page in chromium, served by a running tac.
    """

    timeout = 240

    def setUp(self) -> None:
        requireChromium()

    @defer.inlineCallbacks
    def test_page(self) -> Any:
        """
        After nodes reported, a dump finished, another stopped half way,
        statd was asked to monitor two hosts and keepalive to run a
        process, the page as chromium runs it shows: a tile per node with
        its state, CPU, memory, load and network (the silent node down);
        the dump in progress with a progress bar at its page count and the
        text "N of M pages"; the finished dump with a link to its log,
        which serves the machine's console text; the statd hosts; the
        keepalive process.  A screenshot of it is saved.
        """
        from twisted.internet import reactor

        from tests.ops.tac import CHECKOUT, Tac

        marker = str(30_000_000 + os.getpid())
        # After the tac (keepalive leaves its processes running when it
        # stops, and would restart one killed before).
        sleeper = ("\0".join(["/bin/sleep", marker]) + "\0").encode()
        self.addCleanup(_killAll, lambda cmdline: cmdline == sleeper)
        tac = Tac(self, {
            # A machine that stops answering is kept for 600 s, not 20.
            "netdump": {"retries": "600"},
            # This machine as node -1 too, at once.
            "recvstats": {"master-interval": "1"},
        })
        yield threads.deferToThread(tac.start)
        server = ("127.0.0.1", tac.ports["netdump"])

        # Nodes 3 and 4 report every 300 s (they stay up through the test),
        # node 5 every 0.2 s: it is down within a second.
        gib = 1024 * 1024  # in kB
        reportNodes(self, tac.ports["recvstats"], [
            (3, "compute-03", 300.0, {"busy": 62, "memory": 9 * gib, "load": (3.1, 2.4, 1.9),
                                      "rx": 6_000_000, "tx": 1_500_000}),
            (4, "compute-04", 300.0, {"busy": 8, "memory": 2 * gib, "load": (0.2, 0.3, 0.3),
                                      "rx": 40_000, "tx": 25_000}),
            (5, "compute-05", 0.2, {"busy": 95, "memory": 15 * gib, "load": (15.8, 14.2, 9.6),
                                    "rx": 100, "tx": 100}),
        ])

        # The machine dumps all of its 2 MiB; crashed again, it stops at 1536
        # of 4096 pages (tests use no address but 127.0.0.1).
        complete = DumpingMachine(server, pages=512, seed=2)
        port = reactor.listenUDP(0, complete, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        yield complete.rebooted.addTimeout(60, reactor)
        held = DumpingMachine(server, pages=4096, holdAt=1536, seed=3)
        port = reactor.listenUDP(0, held, interface="127.0.0.1")
        self.addCleanup(port.stopListening)

        yield monitor(reactor, tac.ports["statd"], [(b"nfs-client-1", 16), (b"nfs-client-2", 16),
                                                   (b"nfs-client-2", 24)])
        config = tac.path("sleeper.cfg")
        with open(config, "w") as f:
            f.write(f"command = /bin/sleep\nargs = {marker}\n")
        result = yield threads.deferToThread(
            subprocess.run, [sys.executable, "-m", "sysmon.keepalive.cli",
                             "--control", tac.path("var/keepalive/control"),
                             "--table", tac.path("var/keepalive/keepalive.data"),
                             "--script-dir", tac.path("var/keepalive/scripts"), "-r", config],
            cwd=CHECKOUT, capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)

        def ready() -> Any:
            data = tac.status()
            nodes = {n["node"]: n for n in data["nodes"]}
            active = data["dumps"]["active"]
            if (nodes.get(5, {}).get("state") == "down" and nodes.get(3, {}).get("net")
                    and len(active) == 1 and active[0]["pages_done"] == 1536
                    and data["dumps"]["finished"] and data["keepalive"]["processes"]
                    and data["keepalive"]["processes"][0]["pid"]):
                return data
            return None

        data = yield waitFor(reactor, ready, "the daemons to show what the test did")
        [finished] = data["dumps"]["finished"]
        [active] = data["dumps"]["active"]

        browser = Chromium(self)
        dom = parseDOM((yield browser.dumpDOM(tac.url("/"))).decode())
        body = dom.one("body")
        self.assertEqual(body.attrs.get("data-state"), "ok", dom.text()[:2000])

        # Cluster tiles.
        for number, state, name in ((3, "up", "compute-03"), (4, "up", "compute-04"),
                                    (5, "down", "compute-05")):
            tile = dom.one("article", "node-tile", data_node=str(number))
            self.assertEqual(tile.attrs["data-state"], state)
            self.assertEqual(tile.one(cls="node-name").text(), name)
            self.assertEqual(tile.one(cls="node-state").text(), state)
        tile = dom.one("article", "node-tile", data_node="3")
        self.assertEqual(tile.one("dd", "cpu").text(), "62.0 %")
        self.assertEqual(tile.one("dd", "memory").text(), "9.0 / 16 GiB")
        self.assertEqual(tile.one("dd", "load").text(), "3.10  2.40  1.90")
        self.assertEqual(tile.one("dd", "net").text(), "\u21931.1 MiB/s  \u2191293 KiB/s")
        self.assertEqual(tile.one("span", "cpus").text(), "2 CPUs")
        self.assertTrue(dom.find("article", "node-tile", data_node="-1"))

        # The dump in progress.
        dump = dom.one("div", "dump-active", data_client="127.0.0.1")
        self.assertEqual(dump.attrs["data-dir"], active["directory"])
        bar = dump.one("progress")
        self.assertEqual((bar.attrs["value"], bar.attrs["max"]), ("1536", "4096"))
        self.assertEqual(dump.one(cls="pages").text(), "1536 of 4096 pages (37%)")

        # The finished dump and its log.
        row = dom.one("tr", "dump-finished", data_client="127.0.0.1")
        self.assertEqual((row.attrs["data-dir"], row.attrs["data-outcome"]),
                         (finished["directory"], "complete"))
        link = row.one("a", "dump-log")
        self.assertEqual(link.attrs["href"], status.logURL(finished["directory"]))
        code, headers, text = yield threads.deferToThread(tac.get, link.attrs["href"])
        self.assertEqual(code, 200)
        self.assertIn(b"Linux version 5.10.0 (emulated 127.0.0.1)", text)

        # statd and keepalive.
        hosts = dom.find("tr", "statd-host")
        self.assertEqual([h.attrs["data-host"] for h in hosts], ["nfs-client-1", "nfs-client-2"])
        self.assertIn("proc 24", hosts[1].one("td", "callbacks").text())
        self.assertEqual(dom.one(id="statd-state").text(), str(data["statd"]["state"]))
        process = dom.one("tr", "process", data_name="sleep")
        self.assertEqual(process.attrs["data-state"], "ok")
        self.assertEqual(process.find("td")[2].text(),
                         str(data["keepalive"]["processes"][0]["pid"]))

        # Every daemon of the shipped ini is on.
        for name in status.DAEMON_NAMES:
            self.assertEqual(dom.one("li", data_daemon=name).attrs["data-enabled"], "true")
        self.assertIn("(no-action mode)", dom.one("li", data_daemon="watchdog").attrs["title"])
        self.assertIn(f"to 127.0.0.1:{tac.ports['recvstats']}",
                      dom.one("li", data_daemon="sendstats").attrs["title"])

        shot = os.path.abspath(self.mktemp())
        os.makedirs(shot)
        shot = os.path.join(shot, "status-page.png")
        yield browser.screenshot(tac.url("/"), shot)
        with open(shot, "rb") as f:
            png = f.read()
        self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
        self.assertEqual(struct.unpack(">II", png[16:24]), (1280, 1000))
        print(f"\nstatus page screenshot: {shot}")


class DisabledTests(TestCase):
    """
    The page in chromium when no daemon is enabled (an in-process site).
    """

    timeout = 120

    def setUp(self) -> None:
        requireChromium()

    @defer.inlineCallbacks
    def test_nothingEnabled(self) -> Any:
        """
        With no daemon enabled, each section is marked disabled and says
        which daemon is not enabled, and no daemon chip is on.
        """
        from prometheus_client import CollectorRegistry
        from twisted.internet import reactor
        from twisted.web import server

        from sysmon.ops import web
        from sysmon.ops.daemons import Daemons

        site = server.Site(web.makeResource(Daemons(), CollectorRegistry(), reactor))
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/"
        browser = Chromium(self, budget=3000)
        dom = parseDOM((yield browser.dumpDOM(url)).decode())
        self.assertEqual(dom.one("body").attrs.get("data-state"), "ok")
        for section, daemon in (("cluster", "recvstats"), ("dumps", "netdump"),
                                ("statd", "statd"), ("keepalive", "keepalive")):
            panel = dom.one("section", id=section)
            self.assertEqual(panel.attrs.get("data-enabled"), "false", section)
            self.assertEqual(panel.one("p", "disabled").text(), f"{daemon} is not enabled")
        chips = [li for li in dom.find("li") if "data-daemon" in li.attrs]
        self.assertEqual([li.attrs["data-daemon"] for li in chips], list(status.DAEMON_NAMES))
        self.assertEqual({li.attrs["data-enabled"] for li in chips}, {"false"})
        self.assertEqual(dom.find("article", "node-tile"), [])


def _killAll(match: Callable[[bytes], bool]) -> None:
    """
    SIGKILL every process whose raw command line (NUL-separated) matches.
    """
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if not match(f.read()):
                    continue
            os.kill(int(name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass
