"""
L{sysmon.ops.web}: the site served over real HTTP on 127.0.0.1 (the
status page, its files, C{/status.json}, C{/metrics}, dump logs), and
C{/status.json}'s resource on its own.
"""

from __future__ import annotations

import json
import os
import re
import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import server
from twisted.web.client import Agent, readBody
from twisted.web.test.requesthelper import DummyRequest

from sysmon.netdump import tap as netdumptap
from sysmon.ops import status, web
from sysmon.ops.daemons import Daemons

CRASH = "10.0.0.9-2026-11-21-14:30"
LOG = b"Linux version 2.6.9\nKernel panic - not syncing: Oops \xff\n"


def netdumpService(case: Any, root: str) -> Any:
    """
    The netdump service of C{twistd netdump} for dump directory C{root}
    (not started: the site only reads its sessions and its directory).
    """
    config = os.path.abspath(case.mktemp())
    open(config, "w").close()
    options = netdumptap.Options()
    options.parseOptions(["--config", config, "--dumpdir", root, "--port", "0", "--secure", "0"])
    return netdumptap.makeService(options)


def crashDir(root: str, name: str = CRASH, log: bytes | None = LOG,
             info: dict[str, Any] | None = None) -> str:
    path = os.path.join(root, name)
    os.makedirs(path)
    with open(os.path.join(path, "dump.json"), "w") as f:
        json.dump(info or {"client": {"ip": name.split("-")[0]}, "outcome": "complete",
                           "start_time": 100.0, "end_time": 200.0}, f)
    if log is not None:
        with open(os.path.join(path, "log"), "wb") as f:
            f.write(log)
    return path


class SiteCase(TestCase):
    """
    The site on 127.0.0.1 with an ephemeral port, on the real reactor.
    """

    timeout = 30

    def serve(self, daemons: Daemons, registry: Any = None) -> None:
        from twisted.internet import reactor

        self.reactor = reactor
        self.registry = registry or CollectorRegistry()
        root = web.makeResource(daemons, self.registry, reactor, now=lambda: 1700000000.5)
        port = reactor.listenTCP(0, server.Site(root), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        self.agent = Agent(reactor)

    @defer.inlineCallbacks
    def get(self, path: str, method: bytes = b"GET") -> Any:
        """
        The response to C{method path}: C{(code, headers, body)}, the
        headers as a dict of lower-case name to the last value.
        """
        response = yield self.agent.request(method, (self.base + path).encode("ascii"))
        body = yield readBody(response)
        headers = {k.decode().lower(): v[-1].decode()
                   for k, v in response.headers.getAllRawHeaders()}
        return response.code, headers, body

    def assertSecure(self, headers: dict[str, str]) -> None:
        self.assertEqual(headers.get("x-content-type-options"), "nosniff")
        self.assertIn("default-src 'self'", headers.get("content-security-policy", ""))
        self.assertIn("frame-ancestors 'none'", headers["content-security-policy"])
        self.assertEqual(headers.get("x-frame-options"), "DENY")


class PageTests(SiteCase):
    """
    The page and its files.
    """

    def setUp(self) -> None:
        self.serve(Daemons())

    @defer.inlineCallbacks
    def test_index(self) -> Any:
        """
        C{/} is the status page: HTML that loads its script and style sheet
        from C{/static/}, with no inline script, inline style or outside
        resource (the security policy allows only the site's own files),
        revalidated by browsers, with the security headers.
        """
        code, headers, body = yield self.get("/")
        self.assertEqual(code, 200)
        self.assertTrue(headers["content-type"].startswith("text/html"))
        self.assertEqual(headers["cache-control"], "no-cache")
        self.assertSecure(headers)
        text = body.decode()
        self.assertIn('<script src="/static/status.js" defer></script>', text)
        self.assertIn('<link rel="stylesheet" href="/static/status.css">', text)
        self.assertEqual(re.findall(r"<script(?![^>]*\bsrc=)", text), [])
        self.assertEqual(re.findall(r"<style|\sstyle=|\son[a-z]+=", text), [])
        self.assertEqual(re.findall(r"(?:src|href)=\"(?:https?:)?//", text), [])
        with open(os.path.join(web.STATIC, "index.html"), "rb") as f:
            self.assertEqual(body, f.read())

    @defer.inlineCallbacks
    def test_staticFiles(self) -> Any:
        """
        The script and the style sheet are served from C{/static/} with
        their types and the security headers.
        """
        for name, kind in (("status.js", "javascript"), ("status.css", "text/css")):
            code, headers, body = yield self.get("/static/" + name)
            self.assertEqual(code, 200, name)
            self.assertIn(kind, headers["content-type"])
            self.assertSecure(headers)
            with open(os.path.join(web.STATIC, name), "rb") as f:
                self.assertEqual(body, f.read())

    @defer.inlineCallbacks
    def test_noListingNoEscape(self) -> Any:
        """
        C{/static/} lists nothing and serves no index; missing files and
        paths that climb out of the directory are 404; unknown top-level
        paths are 404 with the security headers.
        """
        for path in ("/static/", "/static/missing.js", "/static/..%2Fweb.py",
                     "/static/../web.py", "/static/..%2F..%2Fops%2Fweb.py", "/nothing",
                     "/status.json/x"):
            code, headers, body = yield self.get(path)
            self.assertEqual(code, 404, path)
            self.assertNotIn(b"import", body, path)
            self.assertSecure(headers)


class StatusJSONTests(SiteCase):
    """
    C{/status.json} over HTTP.
    """

    @defer.inlineCallbacks
    def test_snapshot(self) -> Any:
        """
        C{/status.json} is the snapshot of the daemons, as JSON that is
        never cached, with the security headers; the finished dumps are
        read from the dump directory in a thread, not in the reactor's.
        """
        root = os.path.abspath(self.mktemp())
        crashDir(root)
        daemons = Daemons(netdump=netdumpService(self, root))
        threadsUsed = []
        finishedDumps = status.finishedDumps

        def spy(*args: Any) -> Any:
            threadsUsed.append(threading.current_thread())
            return finishedDumps(*args)

        self.patch(status, "finishedDumps", spy)
        self.serve(daemons)
        code, headers, body = yield self.get("/status.json")
        self.assertEqual(code, 200)
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(headers["cache-control"], "no-store")
        self.assertSecure(headers)
        self.assertEqual(len(threadsUsed), 1)
        self.assertIsNot(threadsUsed[0], threading.main_thread())
        data = json.loads(body)
        self.assertEqual(data, status.snapshot(daemons, now=lambda: 1700000000.5))
        self.assertEqual([d["directory"] for d in data["dumps"]["finished"]], [CRASH])

    @defer.inlineCallbacks
    def test_nothingEnabled(self) -> Any:
        """
        With no daemon enabled the JSON says so and reads no directory.
        """
        calls = []
        self.patch(status, "finishedDumps", lambda *a: calls.append(a))
        self.serve(Daemons())
        code, _, body = yield self.get("/status.json")
        data = json.loads(body)
        self.assertEqual((code, data["dumps"], data["nodes"], calls), (200, None, None, []))
        self.assertFalse(any(data["enabled"].values()))

    @defer.inlineCallbacks
    def test_failure(self) -> Any:
        """
        A snapshot that fails gives a 500 answer with the error as JSON,
        and is logged.
        """
        def broken(*a: Any, **kw: Any) -> Any:
            raise RuntimeError("broken on purpose")

        self.patch(status, "snapshot", broken)
        self.serve(Daemons())
        code, headers, body = yield self.get("/status.json")
        self.assertEqual((code, json.loads(body)), (500, {"error": "broken on purpose"}))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class MetricsTests(SiteCase):
    """
    C{/metrics}.
    """

    @defer.inlineCallbacks
    def test_registry(self) -> Any:
        """
        C{/metrics} is the Prometheus text exposition of the registry given.
        """
        registry = CollectorRegistry()
        Counter("sysmon_test_things", "Things counted.", registry=registry).inc(3)
        self.serve(Daemons(), registry)
        code, headers, body = yield self.get("/metrics")
        self.assertEqual(code, 200)
        self.assertTrue(headers["content-type"].startswith("text/plain"))
        self.assertIn(b"\nsysmon_test_things_total 3.0\n", body)
        self.assertSecure(headers)


class DumpLogTests(SiteCase):
    """
    C{/dumps/<dir>/log}.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.crash = crashDir(self.root)
        self.serve(Daemons(netdump=netdumpService(self, self.root)))

    @defer.inlineCallbacks
    def test_log(self) -> Any:
        """
        A crash directory's log is served as plain text, byte for byte, at
        the URL the snapshot gives it.
        """
        url = status.logURL(CRASH)
        self.assertEqual(url, "/dumps/10.0.0.9-2026-11-21-14%3A30/log")
        code, headers, body = yield self.get(url)
        self.assertEqual((code, body), (200, LOG))
        self.assertEqual(headers["content-type"], "text/plain; charset=utf-8")
        self.assertSecure(headers)
        code, _, body = yield self.get("/dumps/" + CRASH + "/log")
        self.assertEqual((code, body), (200, LOG))

    @defer.inlineCallbacks
    def test_refused(self) -> Any:
        """
        Nothing but the C{log} of a real crash directory directly under the
        dump directory is served: not its other files, not the console
        logs, not a directory without dump.json, not through a symbolic
        link (to a directory or as the log), not outside the dump
        directory by any spelling of C{..} or C{/}.
        """
        secret = os.path.abspath(self.mktemp())
        os.makedirs(secret)
        with open(os.path.join(secret, "log"), "w") as f:
            f.write("SECRET")
        with open(os.path.join(secret, "dump.json"), "w") as f:
            f.write("{}")
        os.symlink(secret, os.path.join(self.root, "10.0.0.10-2026-11-21-14:31"))
        linked = crashDir(self.root, "10.0.0.11-2026-11-21-14:32", log=None)
        os.symlink(os.path.join(secret, "log"), os.path.join(linked, "log"))
        os.makedirs(os.path.join(self.root, "10.0.0.12-2026-11-21-14:33"))
        with open(os.path.join(self.root, "10.0.0.12-2026-11-21-14:33", "log"), "w") as f:
            f.write("SECRET")
        crashDir(self.root, "console", log=b"SECRET")
        relative = os.path.relpath(secret, self.root)
        for path in ["/dumps", "/dumps/", f"/dumps/{CRASH}", f"/dumps/{CRASH}/",
                     f"/dumps/{CRASH}/dump.json", f"/dumps/{CRASH}/log/",
                     f"/dumps/{CRASH}/log/x", "/dumps/10.0.0.10-2026-11-21-14:31/log",
                     "/dumps/10.0.0.11-2026-11-21-14:32/log",
                     "/dumps/10.0.0.12-2026-11-21-14:33/log", "/dumps/console/log",
                     "/dumps/../log", "/dumps/./log", "/dumps/.%2Flog",
                     "/dumps/" + relative.replace("/", "%2F") + "/log",
                     "/dumps/" + secret.replace("/", "%2F") + "/log",
                     "/dumps/%2E%2E/" + os.path.basename(self.root) + "/log",
                     "/dumps/missing/log"]:
            code, headers, body = yield self.get(path)
            self.assertEqual(code, 404, path)
            self.assertNotIn(b"SECRET", body, path)
            self.assertSecure(headers)

    @defer.inlineCallbacks
    def test_netdumpDisabled(self) -> Any:
        """
        Without netdump there are no dump logs.
        """
        self.serve(Daemons())
        code, _, _ = yield self.get("/dumps/" + CRASH + "/log")
        self.assertEqual(code, 404)


class StatusResourceTests(SynchronousTestCase):
    """
    L{web.StatusResource} with requests made in memory and the thread
    replaced by Deferreds the test fires.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        crashDir(self.root)
        self.daemons = Daemons(netdump=netdumpService(self, self.root))
        self.reads: list[defer.Deferred[Any]] = []

        def deferToThread(f: Any, *args: Any) -> defer.Deferred[Any]:
            d: defer.Deferred[Any] = defer.Deferred()
            d.addCallback(lambda _: f(*args))
            self.reads.append(d)
            return d

        self.resource = web.StatusResource(self.daemons, None, now=lambda: 5.0,
                                           deferToThread=deferToThread)

    def render(self) -> DummyRequest:
        request = DummyRequest([])
        self.assertIs(self.resource.render(request), server.NOT_DONE_YET)
        return request

    def test_sharedRead(self) -> None:
        """
        Requests that come while the dump directory is being read wait for
        that read instead of starting their own; the next request after it
        starts a new one.
        """
        first, second = self.render(), self.render()
        self.assertEqual((len(self.reads), first.finished, second.finished), (1, 0, 0))
        self.reads[0].callback(None)
        for request in (first, second):
            self.assertEqual(request.finished, 1)
            data = json.loads(b"".join(request.written))
            self.assertEqual(data["dumps"]["finished"][0]["directory"], CRASH)
        self.render()
        self.assertEqual(len(self.reads), 2)

    def test_clientGone(self) -> None:
        """
        A client that went away before its answer was ready gets nothing
        written (and nothing fails).
        """
        request = self.render()
        request.processingFailed(Exception("connection lost"))
        self.reads[0].callback(None)
        self.assertEqual((request.written, request.finished), ([], 0))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_readFails(self) -> None:
        """
        A read of the dump directory that fails gives every waiting request
        a 500 answer, and is logged.
        """
        first, second = self.render(), self.render()
        self.reads[0].errback(OSError(5, "Input/output error"))
        for request in (first, second):
            self.assertEqual((request.responseCode, request.finished), (500, 1))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 2)
