"""
The operations web site, one C{twisted.web} resource tree:

    /                   the status page (static/index.html, refreshed by status.js)
    /status.json        L{sysmon.ops.status.snapshot}, never cached
    /metrics            Prometheus text exposition of a registry
    /static/<file>      the page's files (no directory listings)
    /dumps/<dir>/log    a crash directory's console log, as text/plain

Every response carries C{X-Content-Type-Options: nosniff}, a
C{Content-Security-Policy} that allows only this site's own scripts,
styles and fetches (the page has no inline script or style), and forbids
framing.  C{/dumps/} serves only the C{log} file of a directory directly
under netdump's dump directory that holds a C{dump.json}: no other file, no
symbolic link, nothing outside it.
"""

from __future__ import annotations

import json
import os
import stat
import time
from typing import Any, Callable

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server, static

from sysmon.ops import status
from sysmon.ops.daemons import Daemons

__all__ = ["STATIC", "SECURITY_HEADERS", "makeResource"]

#: The page's files.
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

SECURITY_HEADERS = {
    b"X-Content-Type-Options": b"nosniff",
    b"Content-Security-Policy": (
        b"default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    b"X-Frame-Options": b"DENY",
    b"Referrer-Policy": b"no-referrer",
}


def makeResource(daemons: Daemons, registry: Any, reactor: Any = None,
                 now: Callable[[], float] = time.time) -> resource.Resource:
    """
    The site's root resource.

    @param daemons: the running daemons (what the page shows).
    @param registry: the C{prometheus_client} registry served at C{/metrics}.
    @param reactor: runs the dump-directory reads in its thread pool.
    @param now: the wall clock of L{status.snapshot}.
    """
    if reactor is None:
        from twisted.internet import reactor  # noqa: PLW0621
    from prometheus_client.twisted import MetricsResource

    root = _Root()
    root.putChild(b"", _NoCache(_StaticFiles(os.path.join(STATIC, "index.html"))))
    root.putChild(b"static", _NoCache(_StaticFiles(STATIC)))
    root.putChild(b"status.json", StatusResource(daemons, reactor, now))
    root.putChild(b"metrics", MetricsResource(registry))
    root.putChild(b"dumps", DumpLogs(daemons))
    return root


class _Root(resource.Resource):
    """
    The root: sets the security headers on every response.
    """

    def getChildWithDefault(self, path: bytes, request: server.Request) -> resource.IResource:
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        return super().getChildWithDefault(path, request)

    def getChild(self, path: bytes, request: server.Request) -> resource.IResource:
        return resource.NoResource()


class _NoCache(resource.Resource):
    """
    Wraps a resource tree so that browsers revalidate it (the page changes
    when sysmon is upgraded).
    """

    def __init__(self, wrapped: resource.Resource) -> None:
        super().__init__()
        self.wrapped = wrapped

    def getChildWithDefault(self, path: bytes, request: server.Request) -> resource.IResource:
        request.setHeader(b"Cache-Control", b"no-cache")
        return self.wrapped.getChildWithDefault(path, request)

    def render(self, request: server.Request) -> Any:
        request.setHeader(b"Cache-Control", b"no-cache")
        return self.wrapped.render(request)


class _StaticFiles(static.File):
    """
    L{static.File} without directory listings or index files.
    """

    indexNames: list[str] = []

    def directoryListing(self) -> resource.IResource:
        return resource.NoResource()


class StatusResource(resource.Resource):
    """
    C{/status.json}: the snapshot of the daemons, with the finished dumps
    read in a thread; requests that arrive while a read is under way share
    it.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, daemons: Daemons, reactor: Any, now: Callable[[], float] = time.time,
                 deferToThread: Callable[..., defer.Deferred[Any]] | None = None) -> None:
        super().__init__()
        self.daemons = daemons
        self.reactor = reactor
        self.now = now
        self.deferToThread = deferToThread or (
            lambda f, *a: threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *a))
        self._reading: list[defer.Deferred[status.Finished | None]] | None = None

    def _finished(self) -> defer.Deferred[status.Finished | None]:
        """
        The finished dumps, read in a thread (L{None} without netdump).
        """
        netdump = self.daemons.netdump
        if netdump is None:
            return defer.succeed(None)
        waiter: defer.Deferred[status.Finished | None] = defer.Deferred()
        if self._reading is not None:
            self._reading.append(waiter)
            return waiter
        self._reading = [waiter]

        def done(result: Any) -> None:
            waiting, self._reading = self._reading or [], None
            for d in waiting:
                if isinstance(result, Failure):
                    d.errback(result)
                else:
                    d.callback(result)

        d = defer.maybeDeferred(self.deferToThread, status.finishedDumps,
                                netdump.server.store.root)
        d.addBoth(done)
        return waiter

    def render_GET(self, request: server.Request) -> Any:
        if request.postpath:
            return resource.NoResource().render(request)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        gone = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        d = self._finished()
        d.addCallback(lambda finished: status.snapshot(self.daemons, self.now, finished))

        def write(data: dict[str, Any]) -> None:
            body = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
            if not gone:
                request.write(body)
                request.finish()

        def failed(f: Failure) -> None:
            self.log.failure("cannot make the status snapshot", failure=f)
            if not gone:
                request.setResponseCode(500)
                request.write(json.dumps({"error": f.getErrorMessage()}).encode())
                request.finish()

        d.addCallback(write).addErrback(failed)
        return server.NOT_DONE_YET


class DumpLogs(resource.Resource):
    """
    C{/dumps/<dir>/log}: the console log of crash directory C{<dir>}.
    """

    def __init__(self, daemons: Daemons) -> None:
        super().__init__()
        self.daemons = daemons

    def render(self, request: server.Request) -> Any:
        return resource.NoResource().render(request)

    def getChild(self, path: bytes, request: server.Request) -> resource.IResource:
        directory = self.directory(path)
        if directory is None:
            return resource.NoResource()
        return _DumpDirectory(directory)

    def directory(self, path: bytes) -> str | None:
        """
        The crash directory that URL segment C{path} (already unquoted)
        names, or L{None} when it names none.
        """
        netdump = self.daemons.netdump
        if netdump is None:
            return None
        try:
            name = path.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if (not name or name.startswith(".") or "/" in name or "\0" in name
                or name in ("console", "magic", "scripts")):
            return None
        directory = os.path.join(netdump.server.store.root, name)
        if not _isRegular(os.path.join(directory, "dump.json")):
            return None
        try:
            if not stat.S_ISDIR(os.lstat(directory).st_mode):
                return None
        except OSError:
            return None
        return directory


class _DumpDirectory(resource.Resource):
    def __init__(self, directory: str) -> None:
        super().__init__()
        self.path = directory

    def render(self, request: server.Request) -> Any:
        return resource.NoResource().render(request)

    def getChild(self, path: bytes, request: server.Request) -> resource.IResource:
        log = os.path.join(self.path, "log")
        if path != b"log" or request.postpath or not _isRegular(log):
            return resource.NoResource()
        return static.File(log, defaultType="text/plain; charset=utf-8")


def _isRegular(path: str) -> bool:
    """
    C{path} is a regular file, not a symbolic link to one.
    """
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
