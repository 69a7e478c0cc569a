"""What one client, or many, may cost the server: slots, memory, time, connections, hosts.

* :class:`RequestSlots`: an estimate takes a slot *before* its body is read, so at most
  ``concurrency`` uploads are held in memory, decoded or estimated at once; the others
  wait (their bytes stay in the kernel's socket buffers) and get 503 ``busy`` after
  ``queue_timeout`` seconds.
* :class:`MemoryBudget`: an image's decoded working size (:func:`faceage.imageio.working_bytes`,
  from its header: width x height x bytes per pixel, whatever the file size) is reserved
  from a server-wide budget before decoding; an image larger than the whole budget is
  413 ``image_too_large``, others wait for room. Memory is handed back to the system
  afterwards (:func:`release_memory`), so the server's RSS falls back when idle.
* :class:`GuardedH11Protocol`: uvicorn's HTTP/1.1 protocol with a deadline for the request
  head (a client sending headers at 1 byte/s is dropped after ``header_timeout``) and a
  cap on open connections (over it, a connection is answered 503 and closed at once, so
  idle sockets cannot use up the file descriptors).
* :class:`HostCheck`: optional allowed ``Host`` names (DNS rebinding of a local server).
* :class:`SecurityHeaders`: nosniff everywhere, the page's CSP on its files.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from contextlib import asynccontextmanager

import anyio
import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from faceage.serve.errors import ApiError, error_response

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
#: hosts a server bound to a loopback address answers by default (a DNS-rebinding page's name is refused)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MB = 1024 * 1024


class RequestSlots:
    """At most ``n`` requests between 'body being read' and 'answer computed'."""

    def __init__(self, n: int, queue_timeout: float) -> None:
        self.n, self.queue_timeout = n, queue_timeout
        self._sem = anyio.Semaphore(n)

    @asynccontextmanager
    async def slot(self):
        with anyio.move_on_after(self.queue_timeout) as waited:
            await self._sem.acquire()
        if waited.cancelled_caught:
            raise ApiError("busy", f"the server is busy ({self.n} estimates running, others waiting for over "
                           f"{self.queue_timeout:g} s); retry in a few seconds")
        try:
            yield
        finally:
            self._sem.release()


class MemoryBudget:
    """Bytes of decoded images held at once, across all requests of this process."""

    def __init__(self, total: int, wait_timeout: float) -> None:
        self.total, self.used, self.wait_timeout = int(total), 0, wait_timeout
        self._changed = anyio.Condition()

    @asynccontextmanager
    async def reserve(self, n: int, name: str = "upload"):
        if n > self.total:
            raise ApiError("image_too_large", f"{name}: decoding it would take {n / MB:,.0f} MB, over the "
                           f"server's limit of {self.total / MB:,.0f} MB (--max-decoded-mb); downscale the image")
        with anyio.move_on_after(self.wait_timeout) as waited:
            async with self._changed:
                while self.used + n > self.total:
                    await self._changed.wait()
                self.used += n
        if waited.cancelled_caught:
            raise ApiError("busy", "the server is busy decoding other large images; retry in a few seconds")
        try:
            yield
        finally:
            async with self._changed:
                self.used -= n
                self._changed.notify_all()


def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


_TRIM = _malloc_trim()


def release_memory() -> None:
    """Give freed heap back to the system (glibc keeps it otherwise: RSS would stay at its peak)."""
    if _TRIM is not None:
        _TRIM(0)


class HostCheck:
    """Pure ASGI middleware: refuse requests whose ``Host`` is not one of ``allowed`` (400 ``bad_host``)."""

    def __init__(self, app, allowed: list[str]) -> None:
        self.app, self.allowed = app, {h.lower() for h in allowed}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and "*" not in self.allowed:
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1").strip().lower()
            name = host[1:host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
            if name not in self.allowed:
                response = error_response("bad_host", f"Host {host[:100]!r} is not served here (allowed: "
                                          f"{', '.join(sorted(self.allowed))}); use one of them or start the "
                                          "server with --allowed-hosts")
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


class SecurityHeaders:
    """Pure ASGI middleware (does not touch the request stream): nosniff everywhere, CSP on the page's files."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        static = scope.get("path", "").startswith("/static/")

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                if b"x-content-type-options" not in names:
                    headers.append((b"x-content-type-options", b"nosniff"))
                if static and b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


_BUSY_BODY = b'{"detail": "too many open connections; retry in a few seconds", "code": "busy"}'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 5\r\n"
         b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline and a connection cap (class settings,
    set by :meth:`configure` in each server process before it accepts connections)."""

    header_timeout = 10.0
    max_connections = 256

    @classmethod
    def configure(cls, header_timeout: float, max_connections: int) -> None:
        cls.header_timeout, cls.max_connections = float(header_timeout), int(max_connections)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._head_timer = None
        if len(self.connections) > self.max_connections:
            transport.write(_BUSY)
            transport.close()
            return
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def _cancel_head_timer(self) -> None:
        if getattr(self, "_head_timer", None) is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete):
            self.transport.close()  # no complete request head within header_timeout

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the request head is complete
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()  # the next request's head on this kept-alive connection

    def connection_lost(self, exc) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)
