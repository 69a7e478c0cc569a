"""What one client, or many, may cost the server: slots, memory, time, connections, hosts.

* :class:`BodyBudget`: request bodies are read *before* a slot is taken (bounded in size and
  time by :func:`faceage.serve.upload.read_upload`), so a client sending its body slowly
  costs a connection, never an analysis slot; the bytes of all bodies being read or waiting
  for a slot are bounded per route (images and video each have their own budget, so slow
  senders on one route cannot exhaust the other's) and per client (over either: 503 ``busy``).
* :class:`RequestSlots`: at most ``n`` requests are decoded or estimated at once; the others
  wait and get 503 ``busy`` after ``queue_timeout`` seconds. :class:`Lanes`: an image's cost is
  known from its header before it takes a slot, and small photos have slots of their own, so a
  portrait never waits behind 12-megapixel photos; large ones are bounded in total and per
  client. Video requests have their own slots (``/v1/estimate-video``).
* :class:`WorkStop`: long work (a video's frames) stops between frames when the server shuts
  down (SIGTERM: :meth:`GuardedH11Protocol.shutdown`), when the request's wall-clock budget
  is spent or when its client goes away.
* :class:`MemoryBudget`: a large image's decoded working size (:func:`faceage.core.imageio.working_bytes`,
  from its header: width x height x bytes per pixel, whatever the file size) is reserved
  from a server-wide budget before decoding; an image larger than the whole budget is
  413 ``image_too_large``, others wait for room. Large photos fill it only up to what is kept
  for the small photos' lane, so those never wait for room; a video's frames come out of the
  video route's own budget. Memory is handed back to the system
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
import threading
import time
import weakref
from collections import Counter
from contextlib import asynccontextmanager, contextmanager

import anyio
import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from faceage.core.imageio import MB
from faceage.serve.errors import ApiError, error_response

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
#: hosts a server bound to a loopback address answers by default (a DNS-rebinding page's name is refused)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class RequestSlots:
    """At most ``n`` requests decoding or estimating at once (``what``: what they do, for the message).
    None is given out once the server is shutting down (``shutdown``)."""

    def __init__(self, n: int, queue_timeout: float, what: str = "estimates",
                 shutdown: threading.Event | None = None) -> None:
        self.n, self.queue_timeout, self.what = n, queue_timeout, what
        self._sem = anyio.Semaphore(n)
        self._shutdown = shutdown

    @asynccontextmanager
    async def slot(self):
        with anyio.move_on_after(self.queue_timeout) as waited:
            await self._sem.acquire()
        if waited.cancelled_caught:
            raise ApiError("busy", f"the server is busy ({self.n} {self.what} running, others waiting for over "
                           f"{self.queue_timeout:g} s); retry in a few seconds")
        try:
            if self._shutdown is not None and self._shutdown.is_set():
                raise _shutting_down()
            yield
        finally:
            self._sem.release()


class Lanes:
    """Image requests by cost, known from the header before a slot is taken: ``light`` slots for photos of
    at most ``light_pixels`` pixels (a portrait never queues behind large photos), ``heavy`` slots for
    the others, of which one client may hold or wait for at most ``per_client`` at once."""

    def __init__(self, light: int, heavy: int, light_pixels: int, per_client: int, queue_timeout: float,
                 shutdown: threading.Event | None = None) -> None:
        self.light_pixels, self.per_client = int(light_pixels), int(per_client)
        self.light = RequestSlots(light, queue_timeout, "estimates of small photos", shutdown)
        self.heavy = RequestSlots(heavy, queue_timeout, "estimates of large photos", shutdown)
        self._heavy_by_client: Counter[str] = Counter()

    def is_heavy(self, pixels: int) -> bool:
        return pixels > self.light_pixels

    @asynccontextmanager
    async def slot(self, pixels: int, client: str):
        if not self.is_heavy(pixels):
            async with self.light.slot():
                yield
            return
        if self._heavy_by_client[client] >= self.per_client:
            raise ApiError("busy", f"this client already has {self.per_client} photos over "
                           f"{self.light_pixels / 1e6:g} megapixels being analysed or waiting; send the next "
                           "when one is answered, or downscale them")
        self._heavy_by_client[client] += 1  # the event loop is one thread: no lock needed
        try:
            async with self.heavy.slot():
                yield
        finally:
            self._heavy_by_client[client] -= 1
            if not self._heavy_by_client[client]:
                del self._heavy_by_client[client]


class BodyBudget:
    """Bytes of request bodies held at once by one route (``what``), across all its requests in this
    process and per client: counted as they arrive (a client at 1 byte/s holds a few bytes, not a slot)
    and until the request ends."""

    def __init__(self, total: int, per_client: int | None = None, what: str = "uploads") -> None:
        self.total, self.used, self.what = int(total), 0, what
        self.per_client = int(per_client) if per_client else self.total
        self.by_client: Counter[str] = Counter()

    @contextmanager
    def hold(self, client: str = ""):
        """A :class:`BodyHold` for one request's body; its bytes are given back when the block ends."""
        hold = BodyHold(self, client)
        try:
            yield hold
        finally:
            self.used -= hold.n
            self.by_client[client] -= hold.n
            if self.by_client[client] <= 0:
                del self.by_client[client]
            if hold.n > _TRIM_BODY:
                release_memory()  # a large body's heap back to the system: the idle RSS falls back


#: bodies larger than this are followed by handing freed memory back to the system
_TRIM_BODY = 4 * MB


class BodyHold:
    """One request's share of a :class:`BodyBudget` (the event loop is one thread: no lock needed)."""

    def __init__(self, budget: BodyBudget, client: str) -> None:
        self.budget, self.client, self.n = budget, client, 0

    def add(self, n: int) -> None:
        b = self.budget
        if b.used + n > b.total:
            raise ApiError("busy", f"the server is busy receiving other {b.what} (over {b.total / MB:,.0f} MB in "
                           "flight); retry in a few seconds")
        if b.by_client[self.client] + n > b.per_client:
            raise ApiError("busy", f"this client is already sending {b.what} of {b.per_client / MB:,.0f} MB at "
                           "once; send the next when one has arrived")
        b.used += n
        b.by_client[self.client] += n
        self.n += n


def client_key(request) -> str:
    """Whom a request's limits count against: its peer address (behind a proxy, every client is the proxy)."""
    return request.client.host if request.client else ""


#: shutdown events of the apps in this process, set by begin_shutdown() (SIGTERM)
_SHUTDOWN_EVENTS: "weakref.WeakSet[threading.Event]" = weakref.WeakSet()


def shutdown_event() -> threading.Event:
    """A new app's shutdown flag, set by :func:`begin_shutdown`."""
    event = threading.Event()
    _SHUTDOWN_EVENTS.add(event)
    return event


def begin_shutdown() -> None:
    """The server is stopping: in-flight long work stops at its next frame, queued work is refused."""
    for event in list(_SHUTDOWN_EVENTS):
        event.set()


def _shutting_down() -> ApiError:
    return ApiError("shutting_down", "the server is shutting down; retry in a few seconds")


class WorkStop:
    """Why one request's long work (a worker thread, checking between frames) must stop: the server is
    shutting down, its wall-clock budget of ``budget_s`` seconds is spent, or its client went away."""

    def __init__(self, shutdown: threading.Event, budget_s: float) -> None:
        self.budget_s, self._shutdown, self._gone = budget_s, shutdown, threading.Event()
        self._deadline = time.monotonic() + budget_s

    def client_gone(self) -> None:
        self._gone.set()

    def check(self) -> None:
        """Raise the :class:`ApiError` that ends the work, if any (called from the worker thread)."""
        if self._shutdown.is_set():
            raise _shutting_down()
        if self._gone.is_set():
            raise ApiError("disconnected", "the client went away; the analysis was stopped")
        if time.monotonic() > self._deadline:
            raise ApiError("analysis_timeout", f"the analysis ran over its budget of {self.budget_s:g} s; send a "
                           "shorter or smaller clip, or a larger 'every'")


async def run_watched(request, stop: WorkStop, fn, every: float = 0.25):
    """``fn()`` in a worker thread while the client of ``request`` (whose body is read) is watched: when it
    disconnects, ``stop`` says so and ``fn`` (checking ``stop``) ends at its next check."""
    async def watch() -> None:
        while not await request.is_disconnected():
            await anyio.sleep(every)
        stop.client_gone()

    outcome: list = []
    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        try:
            outcome.append((True, await anyio.to_thread.run_sync(fn)))
        except Exception as exc:  # noqa: BLE001 - raised below, outside the task group (no ExceptionGroup)
            outcome.append((False, exc))
        group.cancel_scope.cancel()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


class MemoryBudget:
    """Bytes of decoded images held at once, across all requests of this process. Large photos may fill it
    up to ``total - reserved``: the rest is kept for small ones (``light``), so they never wait for room."""

    def __init__(self, total: int, wait_timeout: float, reserved: int = 0) -> None:
        self.total, self.used, self.wait_timeout = int(total), 0, wait_timeout
        self.reserved = min(int(reserved), self.total)
        self._changed = anyio.Condition()

    @asynccontextmanager
    async def reserve(self, n: int, name: str = "upload", light: bool = False):
        limit = self.total if light else self.total - self.reserved
        if n > limit:
            raise ApiError("image_too_large", f"{name}: decoding it would take {n / MB:,.0f} MB, over the "
                           f"server's limit of {limit / MB:,.0f} MB (--max-decoded-mb"
                           f"{'' if light else ', less what is kept for small photos'}); downscale the image")
        with anyio.move_on_after(self.wait_timeout) as waited:
            async with self._changed:
                while self.used + n > limit:
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

    def shutdown(self) -> None:
        """uvicorn calls this on every open connection when it stops (SIGTERM, SIGINT): long work stops at
        its next frame and queued work is refused, so the server drains in a few seconds."""
        begin_shutdown()
        super().shutdown()
