"""Resource use of ``faceage serve`` under the attacks of issue #18 (run by ``serve_load.py --attacks``).

Each attack gets a fresh server (so one's memory does not hide another's). The server's
RSS is sampled every 50 ms from /proc while the attack runs (peak), and again after it
has been idle for ``IDLE_S`` seconds; open file descriptors are counted the same way.
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

from _serve import Server, free_port, pick_model, rss_mb

IDLE_S = 5.0
MB = 1024 * 1024


class Sampler:
    """Peak RSS (MB) and open descriptors of a process while a block runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_rss, self.peak_fds = pid, 0.0, 0
        self._stop = threading.Event()

    def _fds(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return 0

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_rss = max(self.peak_rss, rss_mb(self.pid)["rss_mb"])
            self.peak_fds = max(self.peak_fds, self._fds())

    def __enter__(self) -> "Sampler":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def largest_accepted_side(max_decoded_mb: float) -> int:
    """Side of the largest square RGB image the decoded-size budget accepts (faceage.imageio.working_bytes)."""
    from faceage.imageio import working_bytes

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
    side = largest_accepted_side(512)
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

    results = [attack(model, tmp, name, run) for name, run in (
        ("4 worst-case uploads", worst_case), ("4 thin 1x50M px uploads", thin_case),
        ("32 clients x 10 MB junk", junk_case), ("slow headers", slow_headers),
        ("500 half-open connections", half_open))]
    report = {"benchmark": "serve_attacks",
              "command": "python benchmarks/serve_load.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "model_note": model_note, "idle_wait_s": IDLE_S, "results": results,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "note": "CPU shared with other jobs while measured"}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve_attacks.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "serve_attacks.md").write_text(markdown(report))
    print(markdown(report))
    bad = [r for r in results if not r["alive_after"] or r["tracebacks"] or
           any(k.startswith("5") and not k.startswith("503") for k in r.get("outcomes", {}))]
    return 1 if bad else 0


def markdown(r: dict) -> str:
    lines = ["# `faceage serve` under resource attacks", "",
             f"`{r['command'].strip()}`; model: {r['model_note']}; {r['machine']['cpus']} CPU cores "
             f"({r['machine']['note']}). Idle RSS is read {r['idle_wait_s']:g} s after the attack.", "",
             "| attack | outcomes | seconds | RSS before (MB) | peak RSS (MB) | idle RSS after (MB) | peak fds | "
             "fds after | other | alive after |", "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for x in r["results"]:
        other = {k: v for k, v in x.items() if k in ("dropped_after_s", "connections", "refused",
                                                       "still_open_after_12_s")}
        lines.append(f"| {x['attack']} ({x['upload']}) | {x.get('outcomes', '')} | {x['seconds']} | {x['rss_before_mb']} | "
                     f"{x['peak_rss_mb']} | {x['idle_rss_after_mb']} | {x['peak_fds']} | {x['fds_idle_after']} | "
                     f"{other or ''} | {'yes' if x['alive_after'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """The same run as ``serve_load.py --attacks``."""
    import argparse

    from _common import add_output_arguments, parse_args

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model file (default: the bundled one)")
    add_output_arguments(ap)
    return run_attacks(parse_args(ap, argv), argv)


if __name__ == "__main__":
    raise SystemExit(main())
