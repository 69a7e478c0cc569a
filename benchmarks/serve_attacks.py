"""Resource use of ``faceage serve`` under the attacks of issues #18 and #25 (run by ``serve_load.py --attacks``).

Each attack gets a fresh server (so one's memory does not hide another's). The server's
RSS is sampled every 50 ms from /proc while the attack runs (peak), and again after it
has been idle for ``IDLE_S`` seconds; open file descriptors are counted the same way.

Issue #25's attacks also send normal requests alongside (the committed portrait,
tests/data/obama.jpg, one at a time) and report their statuses and latency: four photos
without a face (a blank 1000x750 PNG and a 12 MP noise JPEG, two of each at once); two video
uploads of a 640x360, 240 frames/s, 60 s clip with ``?every=1``; a Matroska file whose
3,000 frames are all stamped 0; a stream that declares 64x64 and switches to 3840x2160;
2 and 50 clients sending their bodies at 1 byte/s; and, for comparison, no attack at all.
The clips are made by ``scripts/hostile_videos.py``.

Issue #33's attacks measure fairness, with the portrait client alongside (its p50 / p90 / p99):
4 clients posting 12 MP noise JPEGs and 2000x1500 noise PNGs for 30 s; 3 clients each sending a
45 MB body to ``/v1/estimate-video`` then 1 byte every 2 s for 25 s; a clip at ``?every=60``
(the largest frame reservation) with two 20 MP PNGs; and ``/v1/check?over=18&over=13``.
"""
from __future__ import annotations

import io
import json
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from benchmarks._serve import Server, free_port, pick_model, rss_mb

REPO = Path(__file__).resolve().parents[1]
from scripts import hostile_videos as hv  # noqa: E402

IDLE_S = 5.0
MB = 1024 * 1024
PORTRAIT = REPO / "tests" / "data" / "obama.jpg"
#: seconds the slow-body attacks last: past the server's 30 s body timeout, so its answer to them shows
SLOW_BODY_S = 33.0


class Background:
    """``with`` runs ``self._run`` in a thread, which polls ``self._stop``; leaving the block stops it."""

    def __init__(self) -> None:
        self._stop = threading.Event()

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class Posting(Background):
    """One client posting ``bodies`` in turn to ``path`` until stopped; each answer's latency and outcome."""

    def __init__(self, base: str, bodies: list[bytes], path: str = "/v1/estimate") -> None:
        super().__init__()
        self.url, self.bodies, self.results = base + path, bodies, []

    def _run(self) -> None:
        with httpx.Client(timeout=120) as client:
            i = 0
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    r = client.post(self.url, content=self.bodies[i % len(self.bodies)])
                    what = "200 ok" if r.status_code == 200 else f"{r.status_code} {r.json().get('code')}"
                except httpx.TransportError as exc:
                    what = f"transport {type(exc).__name__}"
                self.results.append((time.perf_counter() - t0, what))
                i += 1

    @property
    def outcomes(self) -> list[str]:
        return [w for _, w in self.results]

    def summary(self) -> dict:
        return latency_summary(self.results)


def latency_summary(results: list[tuple[float, str]]) -> dict:
    """Count, statuses and latency percentiles of (seconds, outcome) pairs."""
    ms = np.array([t for t, _ in results]) * 1000
    if not ms.size:
        return {"n": 0, "statuses": {}}
    return {"n": len(ms), "statuses": _counts([w for _, w in results]),
            "p50_ms": round(float(np.median(ms)), 0), "p90_ms": round(float(np.percentile(ms, 90)), 0),
            "p95_ms": round(float(np.percentile(ms, 95)), 0), "p99_ms": round(float(np.percentile(ms, 99)), 0),
            "max_ms": round(float(ms.max()), 0)}


class Normal(Posting):
    """Normal requests (the portrait, one at a time) in a thread while an attack runs."""

    def __init__(self, base: str) -> None:
        super().__init__(base, [PORTRAIT.read_bytes()])


def _post_video(base: str, data: bytes, query: str = "", timeout: float = 600) -> dict:
    t0 = time.perf_counter()
    try:
        r = httpx.post(f"{base}/v1/estimate-video{query}", content=data, timeout=timeout)
        what = f"{r.status_code} {r.json().get('code', 'ok') if r.status_code != 200 else 'ok'}"
    except httpx.TransportError as exc:
        what = f"transport {type(exc).__name__}"
    return {"outcome": what, "seconds": round(time.perf_counter() - t0, 1)}


def _videos_with_normal(server, clips: list[bytes], query: str = "") -> dict:
    """POST the clips at once (a thread each) with normal requests alongside until all are answered."""
    out: list = [None] * len(clips)
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, _post_video(server.base, clips[i], query)))
               for i in range(len(clips))]
    with Normal(server.base) as normal:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return {"outcomes": _counts([o["outcome"] for o in out]), "video_seconds": [o["seconds"] for o in out],
            "normal": normal.summary()}


def _slow_sender(host: str, port: int, stop: threading.Event, log: list, *, path: str = "/v1/estimate",
                 size: int = 100_000, at_once: int = 0, every: float = 1.0, content_type: str = "image/png") -> None:
    """A client that sends ``at_once`` bytes of a ``size``-byte body to ``path``, then 1 byte every ``every``
    seconds (holding that much of the route's body budget); logs how the server ended it."""
    t0 = time.perf_counter()
    try:
        with socket.create_connection((host, port), timeout=30) as s:
            s.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                      % (path.encode(), content_type.encode(), size))
            s.sendall(b"\0" * at_once)
            s.settimeout(every)
            while not stop.is_set():
                s.sendall(b"\x89")
                try:
                    head = s.recv(64)
                except socket.timeout:
                    continue
                status = head.split(b" ")[1].decode() if head.startswith(b"HTTP/") else "closed"
                log.append((status, round(time.perf_counter() - t0, 1)))
                return
    except OSError as exc:
        log.append((f"error {type(exc).__name__}", round(time.perf_counter() - t0, 1)))
        return
    log.append(("still sending", round(time.perf_counter() - t0, 1)))


def _slow_bodies(server, n: int) -> dict:
    host, port = server.base.removeprefix("http://").split(":")
    stop, log = threading.Event(), []
    clients = [threading.Thread(target=_slow_sender, args=(host, int(port), stop, log), daemon=True)
               for _ in range(n)]
    for c in clients:
        c.start()
    time.sleep(1.0)  # all of them mid-body
    with Normal(server.base) as normal:
        time.sleep(SLOW_BODY_S - 1.0)
    stop.set()
    for c in clients:
        c.join()
    ended = _counts([f"{status} after {round(t / 5) * 5:g} s" if status != "still sending" else status
                     for status, t in log])
    return {"outcomes": ended, "normal": normal.summary()}


class Sampler(Background):
    """Peak RSS (MB) and open descriptors of a process while a block runs."""

    def __init__(self, pid: int) -> None:
        super().__init__()
        self.pid, self.peak_rss, self.peak_fds = pid, 0.0, 0

    def _fds(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return 0

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_rss = max(self.peak_rss, rss_mb(self.pid)["rss_mb"])
            self.peak_fds = max(self.peak_fds, self._fds())



def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def largest_accepted_side(max_decoded_mb: float) -> int:
    """Side of the largest square RGB image the decoded-size budget accepts (faceage.core.imageio.working_bytes)."""
    from faceage.core.imageio import working_bytes

    side = int((max_decoded_mb * MB / 11) ** 0.5)
    while working_bytes(Image.new("RGB", (side, side))) > max_decoded_mb * MB:
        side -= 1
    return side


def _post_all(base: str, bodies: list[bytes], timeout: float = 300) -> list[str]:
    """POST every body at once (one thread each); the outcome of each: status and code, or the transport error."""
    out = [""] * len(bodies)

    def one(i: int) -> None:
        try:
            r = httpx.post(f"{base}/v1/estimate", content=bodies[i], timeout=timeout)
            out[i] = f"{r.status_code} {r.json().get('code', 'ok') if r.status_code != 200 else 'ok'}"
        except httpx.TransportError as exc:
            out[i] = f"transport {type(exc).__name__}"

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _counts(outcomes: list[str]) -> dict[str, int]:
    return {k: outcomes.count(k) for k in sorted(set(outcomes))}


def attack(model: str, tmp: Path, name: str, run, extra: tuple[str, ...] = ()) -> dict:
    server = Server(model, free_port(), threads=1, concurrency=None, log=tmp / f"{name}.log", extra=extra)
    try:
        httpx.post(f"{server.base}/v1/estimate", content=_png(Image.new("RGB", (64, 64)))).raise_for_status()
        before = rss_mb(server.proc.pid)["rss_mb"]
        t0 = time.perf_counter()
        with Sampler(server.proc.pid) as sample:
            result = run(server)
        seconds = time.perf_counter() - t0
        time.sleep(IDLE_S)
        idle = rss_mb(server.proc.pid)["rss_mb"]
        alive = server.proc.poll() is None and httpx.get(f"{server.base}/healthz", timeout=10).status_code == 200
        fds_idle = Sampler(server.proc.pid)._fds()
    finally:
        server.stop()
    log = (tmp / f"{name}.log").read_text(errors="replace")
    return {"attack": name, "rss_before_mb": before, "peak_rss_mb": sample.peak_rss, "idle_rss_after_mb": idle,
            "peak_fds": sample.peak_fds, "fds_idle_after": fds_idle, "seconds": round(seconds, 1),
            "alive_after": alive, "tracebacks": log.count("Traceback"), **result}


def run_attacks(args, argv) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="faceage-attacks-"))
    model, model_note = pick_model(args.model, tmp)
    from faceage.serve.app import DEFAULT_MAX_DECODED, LIGHT_PIXELS, default_concurrency, small_photo_room

    # the largest photo the default server decodes: its budget less the room kept for small photos
    side = largest_accepted_side((DEFAULT_MAX_DECODED - small_photo_room(DEFAULT_MAX_DECODED, default_concurrency(),
                                                                          LIGHT_PIXELS)) / MB)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (side // 32, side // 32, 3), dtype=np.uint8)
    worst = _png(Image.fromarray(noise).resize((side, side), Image.NEAREST))
    thin = _png(Image.new("L", (1, 50_000_000)))
    junk = rng.integers(0, 256, 10 * MB - 1024, dtype=np.uint8).tobytes()

    def worst_case(server):
        return {"outcomes": _counts(_post_all(server.base, [worst] * 4)),
                "upload": f"{side}x{side} px RGB PNG of {len(worst) / MB:.1f} MB, x4 at once"}

    def thin_case(server):
        return {"outcomes": _counts(_post_all(server.base, [thin] * 4)),
                "upload": f"1x50,000,000 px PNG of {len(thin) / 1024:.0f} KB, x4 at once"}

    def junk_case(server):
        return {"outcomes": _counts(_post_all(server.base, [junk] * 32)), "upload": "10 MB of junk, x32 at once"}

    def slow_headers(server):
        host, port = server.base.removeprefix("http://").split(":")
        t0 = time.perf_counter()
        with socket.create_connection((host, int(port)), timeout=120) as s:
            for byte in b"POST /v1/estimate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n":
                try:
                    s.sendall(bytes([byte]))
                    s.settimeout(1.0)
                    if s.recv(1) == b"":
                        break
                except socket.timeout:
                    continue
                except OSError:
                    break
        return {"dropped_after_s": round(time.perf_counter() - t0, 1), "upload": "headers at 1 byte/s"}

    def half_open(server):
        host, port = server.base.removeprefix("http://").split(":")
        socks, refused = [], 0
        for _ in range(500):
            try:
                s = socket.create_connection((host, int(port)), timeout=10)
                s.sendall(b"POST /v1/estimate HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
                socks.append(s)
            except OSError:
                refused += 1
        time.sleep(12)  # past the 10 s header timeout
        open_after = 0
        for s in socks:
            s.settimeout(0.5)
            try:
                s.recv(1)  # b"" (closed) or the start of a 503: either way the server let go
            except socket.timeout:
                open_after += 1  # nothing yet: the server still holds it
            except OSError:
                pass
            s.close()
        return {"connections": len(socks), "refused": refused, "still_open_after_12_s": open_after,
                "upload": "500 connections sending half a request head"}

    frame = np.asarray(Image.open(PORTRAIT).convert("RGB").resize((640, 360)))
    second = tmp / "one-second.mp4"
    from faceage.video.writer import VideoWriter

    with VideoWriter(second, fps=240) as w:
        for i in range(240):
            f = frame.copy()
            f[:, (i * 3) % 600:(i * 3) % 600 + 8] = 255
            w.write(f, i / 240)
    dos = hv.repeated_mkv(second, tmp / "dos.mkv", 60).read_bytes()
    zero = hv.zero_time_mkv(tmp / "zero.mkv", frames=3000, size=(640, 360)).read_bytes()
    switch = hv.resolution_switch_mkv(tmp / "switch.mkv", small=(64, 64), large=(3840, 2160)).read_bytes()

    blank = _png(Image.new("RGB", (1000, 750), (128, 128, 128)))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8)).save(buf, "JPEG", quality=60)
    noise12 = buf.getvalue()

    def faceless(server):
        with Normal(server.base) as normal:
            outcomes = _post_all(server.base, [blank, noise12] * 2)
        return {"outcomes": _counts(outcomes), "normal": normal.summary(),
                "upload": f"face-less photos: 1000x750 grey PNG and 12 MP noise JPEG ({len(noise12) / MB:.1f} MB), "
                          "x2 each at once"}

    def baseline(server):
        with Normal(server.base) as normal:
            time.sleep(15)
        return {"normal": normal.summary(), "upload": "normal requests alone, 15 s"}

    def video_dos(server):
        return {**_videos_with_normal(server, [dos, dos], "?every=1"),
                "upload": f"640x360, 240 frames/s, 60 s clip ({len(dos) / MB:.1f} MB), ?every=1, x2 at once"}

    def zero_times(server):
        return {**_videos_with_normal(server, [zero]),
                "upload": f"MKV, 3,000 640x360 frames all stamped 0 ({len(zero) / MB:.1f} MB)"}

    def resolution_switch(server):
        return {**_videos_with_normal(server, [switch]),
                "upload": f"MKV declaring 64x64, 10 frames, then 20 of 3840x2160 ({len(switch) / MB:.1f} MB)"}

    def slow_2(server):
        return {**_slow_bodies(server, 2), "upload": f"2 clients sending a body at 1 byte/s, {SLOW_BODY_S:g} s"}

    def slow_50(server):
        return {**_slow_bodies(server, 50), "upload": f"50 clients sending a body at 1 byte/s, {SLOW_BODY_S:g} s"}

    big_png = _png(Image.fromarray(rng.integers(0, 256, (1500, 2000, 3), dtype=np.uint8)))
    side20 = int((20e6) ** 0.5)
    png20 = _png(Image.fromarray(np.tile(noise[:64, :64], (side20 // 64 + 1, side20 // 64 + 1, 1))[:side20, :side20]))

    def heavy_clients(server):
        posters = [Posting(server.base, [noise12, big_png]) for _ in range(4)]
        for p in posters:
            p.__enter__()
        try:
            with Normal(server.base) as normal:
                time.sleep(30)
        finally:
            for p in posters:
                p.__exit__()
        return {"outcomes": _counts([o for p in posters for o in p.outcomes]), "normal": normal.summary(),
                "upload": f"4 clients posting 12 MP noise JPEGs ({len(noise12) / MB:.1f} MB) and 2000x1500 noise "
                          f"PNGs ({len(big_png) / MB:.1f} MB) in turn, 30 s"}

    portrait = PORTRAIT.read_bytes()
    flat = _png(Image.new("RGB", (1200, 900), (128, 128, 128)))

    def mixed(clients: dict, seconds: float):
        def run(server):
            posters = [(kind, Posting(server.base, bodies, path)) for kind, (n, bodies, path) in clients.items()
                       for _ in range(n)]
            for _, p in posters:
                p.__enter__()
            time.sleep(seconds)
            for _, p in posters:
                p.__exit__()
            by_kind = {kind: latency_summary([r for k, p in posters if k == kind for r in p.results])
                       for kind in clients}
            return {"outcomes": _counts([o for _, p in posters for o in p.outcomes]), "normal": by_kind["portraits"],
                    "by_kind": by_kind, "upload": ", ".join(f"{n} {kind}" for kind, (n, _, _) in clients.items())
                    + f" clients posting for {seconds:g} s (normal: the portrait clients)"}
        return run

    mix20 = mixed({"portraits": (8, [portrait], "/v1/estimate"), "checks": (4, [portrait], "/v1/check?over=18"),
                   "12 MP JPEGs": (3, [noise12], "/v1/estimate"), "2000x1500 noise": (3, [big_png], "/v1/estimate"),
                   "flat images": (2, [flat], "/v1/estimate")}, 60)
    heavy48 = mixed({"portraits": (5, [portrait], "/v1/estimate"),
                     "12 MP JPEGs and noise": (43, [noise12, big_png], "/v1/estimate")}, 30)

    def slow_video_senders(server):
        host, port = server.base.removeprefix("http://").split(":")
        stop, log = threading.Event(), []
        senders = [threading.Thread(target=_slow_sender, args=(host, int(port), stop, log), daemon=True,
                                    kwargs={"path": "/v1/estimate-video", "size": 45 * MB, "at_once": 45 * MB - 100,
                                            "every": 2.0, "content_type": "video/mp4"}) for _ in range(3)]
        for c in senders:
            c.start()
        time.sleep(3.0)  # their bodies arrived but for the last bytes
        with Normal(server.base) as normal:
            time.sleep(25)
        stop.set()
        for c in senders:
            c.join()
        return {"outcomes": _counts([f"{status} after {round(t / 5) * 5:g} s" if status != "still sending"
                                     else status for status, t in log]), "normal": normal.summary(),
                "upload": "3 clients sending 45 MB bodies to /v1/estimate-video, then 1 byte every 2 s, 25 s"}

    def clip_and_large_pngs(server):
        clip = threading.Thread(target=lambda: out.append(_post_video(server.base, dos, "?every=60")))
        out: list = []
        with Normal(server.base) as normal:
            clip.start()
            time.sleep(1.0)
            pngs = _post_all(server.base, [png20, png20])
            clip.join()
        return {"outcomes": _counts(pngs + [o["outcome"] for o in out]), "normal": normal.summary(),
                "upload": f"a clip at ?every=60 (its frames reserved) and two 20 MP PNGs ({len(png20) / MB:.0f} MB)"}

    def repeated_query(server):
        r = httpx.post(f"{server.base}/v1/check?over=18&over=13", content=PORTRAIT.read_bytes(), timeout=60)
        return {"outcomes": {f"{r.status_code} {r.json().get('code')}": 1}, "upload": "/v1/check?over=18&over=13"}

    attacks = [("4 worst-case uploads", worst_case), ("4 thin 1x50M px uploads", thin_case),
               ("32 clients x 10 MB junk", junk_case), ("slow headers", slow_headers),
               ("500 half-open connections", half_open), ("no attack (baseline)", baseline),
               ("4 face-less photos", faceless),
               ("video DoS", video_dos), ("timestamp-0 MKV", zero_times),
               ("mid-stream resolution change", resolution_switch), ("2 slow-body clients", slow_2),
               ("50 slow-body clients", slow_50),
               ("4 clients with large photos", heavy_clients), ("20 clients, mixed", mix20),
               ("48 clients, 90% large photos", heavy48), ("3 slow video senders", slow_video_senders),
               ("clip at every=60 and 20 MP PNGs", clip_and_large_pngs), ("repeated query", repeated_query)]
    wanted = [a.strip() for a in (args.only or "").split(",") if a.strip()]
    results = [attack(model, tmp, name, run) for name, run in attacks
               if not wanted or any(w.lower() in name.lower() for w in wanted)]
    earlier = args.out / "serve_attacks.json"
    if wanted and earlier.is_file():  # a subset: the other attacks' rows of the earlier run stay, in order
        ran = {r["attack"]: r for r in results}
        old = {r["attack"]: r for r in json.loads(earlier.read_text())["results"]}
        results = [ran.get(name) or old[name] for name, _ in attacks if name in ran or name in old]
    report = {"benchmark": "serve_attacks",
              "command": "python -m benchmarks.serve_load " + " ".join(argv if argv is not None else sys.argv[1:]),
              "model_note": model_note, "idle_wait_s": IDLE_S, "results": results,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "note": "CPU shared with other jobs while measured"}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve_attacks.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "serve_attacks.md").write_text(markdown(report))
    print(markdown(report))
    bad = [r for r in results if not r["alive_after"] or r["tracebacks"] or
           any(k.startswith("5") and not k.startswith("503") for k in r.get("outcomes", {})) or
           any(not k.startswith("200") for k in r.get("normal", {}).get("statuses", {}))]
    return 1 if bad else 0


def markdown(r: dict) -> str:
    lines = ["# `faceage serve` under resource attacks", "",
             f"`{r['command'].strip()}`; model: {r['model_note']}; {r['machine']['cpus']} CPU cores "
             f"({r['machine']['note']}). Idle RSS is read {r['idle_wait_s']:g} s after the attack.", "",
             "Normal requests alongside: the portrait, one at a time, while the attack runs (count, statuses, "
             "latency p50 / p90 / p99 / max).", "",
             "| attack | outcomes | normal requests alongside | seconds | RSS before (MB) | peak RSS (MB) | "
             "idle RSS after (MB) | peak fds | fds after | other | alive after |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for x in r["results"]:
        other = {k: v for k, v in x.items() if k in ("dropped_after_s", "connections", "refused",
                                                       "still_open_after_12_s", "video_seconds")}
        n = x.get("normal")
        normal = (f"{n['n']} x {n['statuses']}, {n['p50_ms']:.0f} / {n.get('p90_ms', float('nan')):.0f} / "
                  f"{n.get('p99_ms', float('nan')):.0f} / {n['max_ms']:.0f} ms" if n else "")
        lines.append(f"| {x['attack']} ({x['upload']}) | {x.get('outcomes', '')} | {normal} | {x['seconds']} | "
                     f"{x['rss_before_mb']} | {x['peak_rss_mb']} | {x['idle_rss_after_mb']} | {x['peak_fds']} | "
                     f"{x['fds_idle_after']} | {other or ''} | {'yes' if x['alive_after'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """The same run as ``serve_load.py --attacks``."""
    import argparse

    from benchmarks._common import add_output_arguments, parse_args

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model file (default: the bundled one)")
    ap.add_argument("--only", default=None, metavar="NAMES",
                    help="only the attacks whose names contain one of these (comma-separated); the other rows of "
                         "an earlier run in the output folder are kept")
    add_output_arguments(ap)
    return run_attacks(parse_args(ap, argv), argv)


if __name__ == "__main__":
    raise SystemExit(main())
