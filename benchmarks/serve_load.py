"""Load test of ``faceage serve`` on loopback: N concurrent clients x M requests with real photos.

Starts ``faceage serve`` in its own process on a free 127.0.0.1 port, warms it up,
then runs ``--clients`` threads, each with its own keep-alive connection, sending
``--requests`` FG-NET photos (alternately multipart and raw body). Requires 0 errors
(any non-200 or transport error); reports throughput, latency percentiles and the
server's RSS before and after (and along the way), to JSON + Markdown.

    python -m benchmarks.serve_load                        # 8 clients x 500 requests
    python -m benchmarks.serve_load --requests 50 --out /tmp/bench
    python -m benchmarks.serve_load --model runs/cpu/best.safetensors
    python -m benchmarks.serve_load --attacks              # the resource table of docs/serve.md

``--attacks`` runs, against a fresh server each: 4 concurrent worst-case uploads (the
largest image the decoded-size budget accepts, and the 97 KB 1 x 50,000,000 px PNG), 32
clients each sending 10 MB of junk, a client sending its headers at 1 byte/s, 500
half-open connections, and issue 25's video and slow-body attacks with normal requests
alongside (benchmarks/serve_attacks.py); it samples the server's RSS (peak, and idle
afterwards) and open file descriptors, and writes docs/benchmarks/serve_attacks.{json,md}
(``--only video,slow`` runs a subset).

Without --model it serves the bundled model, or, when that is not there yet, a
freshly made untrained MA-SFV2 0.5x (same cost per request; the ages are meaningless).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from benchmarks._serve import Server, free_port, pick_model, rss_mb  # the server under test
from benchmarks._common import add_output_arguments, parse_args

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = ROOT / ".." / "shared" / "data" / "fgnet" / "images"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=500, help="requests per client")
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="folder of photos (FG-NET *.JPG)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=1, help="PyTorch threads in the server")
    ap.add_argument("--concurrency", type=int, default=None, help="server --concurrency (default: its own)")
    add_output_arguments(ap)
    ap.add_argument("--attacks", action="store_true", help="measure RSS and descriptors under the attacks instead")
    ap.add_argument("--only", default=None, metavar="NAMES",
                    help="with --attacks: only the attacks whose names contain one of these (comma-separated)")
    args = parse_args(ap, argv)
    if args.attacks:
        from benchmarks.serve_attacks import run_attacks

        return run_attacks(args, argv)

    photos = sorted(p for p in args.photos.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not photos:
        print(f"no photos in {args.photos}", file=sys.stderr)
        return 2
    blobs = [(p.name, p.read_bytes()) for p in photos]
    tmp = Path(tempfile.mkdtemp(prefix="faceage-load-"))
    model, model_note = pick_model(args.model, tmp)
    port = free_port()
    t_start = time.perf_counter()
    server = Server(model, port, args.threads, args.concurrency, tmp / "server.log")
    print(f"server up on {server.base} in {time.perf_counter() - t_start:.1f} s ({model_note})", file=sys.stderr)

    results: list[list[tuple[float, int, int]]] = [[] for _ in range(args.clients)]  # (latency s, status, n faces)
    errors: list[str] = []
    rss_series: list[dict] = []
    done = threading.Event()
    try:
        with httpx.Client(base_url=server.base, timeout=60) as c:  # warm-up (not counted)
            for name, data in blobs[:16]:
                c.post("/v1/estimate", content=data).raise_for_status()
            model_info = c.get("/v1/model").json()
        rss_before = rss_mb(server.proc.pid)

        def client(i: int) -> None:
            with httpx.Client(base_url=server.base, timeout=120) as c:
                for k in range(args.requests):
                    name, data = blobs[(i * 997 + k * 13) % len(blobs)]
                    t0 = time.perf_counter()
                    try:
                        if k % 2:
                            r = c.post("/v1/estimate", files={"file": (name, data, "image/jpeg")})
                        else:
                            r = c.post("/v1/estimate", content=data, headers={"Content-Type": "image/jpeg"})
                        dt = time.perf_counter() - t0
                        n = len(r.json()["faces"]) if r.status_code == 200 else -1
                        if r.status_code != 200:
                            errors.append(f"client {i} request {k} ({name}): HTTP {r.status_code} {r.text[:200]}")
                        results[i].append((dt, r.status_code, n))
                    except Exception as exc:  # noqa: BLE001 - every failure is counted
                        results[i].append((time.perf_counter() - t0, 0, -1))
                        errors.append(f"client {i} request {k} ({name}): {type(exc).__name__}: {exc}")

        def sampler() -> None:
            while not done.wait(2.0):
                rss_series.append({"t_s": round(time.perf_counter() - t0_load, 1),
                                   "requests": sum(len(r) for r in results), **rss_mb(server.proc.pid)})

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        t0_load = time.perf_counter()
        sam = threading.Thread(target=sampler, daemon=True)
        sam.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0_load
        done.set()
        rss_after = rss_mb(server.proc.pid)
        alive = server.proc.poll() is None
    finally:
        server.stop()

    flat = [x for r in results for x in r]
    lat = np.array([x[0] for x in flat]) * 1000.0
    ok = sum(1 for x in flat if x[1] == 200)
    faces = sum(x[2] for x in flat if x[2] > 0)
    no_face = sum(1 for x in flat if x[2] == 0)
    total = len(flat)
    report = {
        "benchmark": "serve_load",
        "command": "python -m benchmarks.serve_load " + " ".join(argv if argv is not None else sys.argv[1:]),
        "clients": args.clients,
        "requests_per_client": args.requests,
        "requests": total,
        "ok": ok,
        "errors": total - ok,
        "error_samples": errors[:20],
        "server_alive_after": alive,
        "wall_s": round(wall, 2),
        "throughput_rps": round(total / wall, 2),
        "latency_ms": {"mean": round(float(lat.mean()), 1), "p50": round(float(np.percentile(lat, 50)), 1),
                       "p95": round(float(np.percentile(lat, 95)), 1), "p99": round(float(np.percentile(lat, 99)), 1),
                       "max": round(float(lat.max()), 1)},
        "faces_found": faces,
        "responses_without_face": no_face,
        "rss_before_mb": rss_before["rss_mb"],
        "rss_after_mb": rss_after["rss_mb"],
        "rss_growth_mb": round(rss_after["rss_mb"] - rss_before["rss_mb"], 1),
        "peak_rss_mb": rss_after["peak_rss_mb"],
        "rss_series": rss_series,
        "photos": {"folder": str(args.photos), "count": len(blobs),
                   "mean_kb": round(sum(len(b) for _, b in blobs) / len(blobs) / 1024, 1)},
        "model": {"path": model, "note": model_note, "name": model_info.get("name"), "arch": model_info.get("arch"),
                  "backend": model_info.get("backend")},
        "server": {"threads": args.threads, "concurrency": model_info.get("limits", {}).get("concurrency"),
                   "workers": 1, "host": "127.0.0.1"},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "note": "CPU shared with other jobs while measured"},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve_load.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "serve_load.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if report["errors"] == 0 and alive else 1


def markdown(r: dict) -> str:
    lat = r["latency_ms"]
    lines = [
        "# `faceage serve` under load",
        "",
        f"`{r['command'].strip()}`: {r['clients']} concurrent clients x {r['requests_per_client']} requests "
        f"(FG-NET photos, mean {r['photos']['mean_kb']} KB, alternately multipart and raw body) against one "
        f"`faceage serve` process on 127.0.0.1 ({r['server']['workers']} worker, concurrency "
        f"{r['server']['concurrency']}, {r['server']['threads']} PyTorch thread), {r['machine']['cpus']} CPU cores "
        "shared with other jobs.",
        "",
        f"Model: {r['model']['note']} ({r['model']['arch']}, {r['model']['backend']} backend).",
        "",
        "| requests | errors | wall (s) | throughput (req/s) | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {r['requests']} | {r['errors']} | {r['wall_s']} | {r['throughput_rps']} | {lat['p50']} | {lat['p95']} | "
        f"{lat['p99']} | {lat['max']} |",
        "",
        "| server RSS before (MB) | after (MB) | growth (MB) | peak (MB) |",
        "|---:|---:|---:|---:|",
        f"| {r['rss_before_mb']} | {r['rss_after_mb']} | {r['rss_growth_mb']} | {r['peak_rss_mb']} |",
        "",
        f"Faces found: {r['faces_found']} ({r['responses_without_face']} responses without a face). "
        f"Server alive afterwards: {'yes' if r['server_alive_after'] else 'NO'}.",
    ]
    if r["rss_series"]:
        pts = r["rss_series"][:: max(1, len(r["rss_series"]) // 8)]
        lines += ["", "RSS during the run: " + ", ".join(f"{p['requests']} req: {p['rss_mb']} MB" for p in pts) + "."]
    if r["error_samples"]:
        lines += ["", "Errors (first ones):", ""] + [f"- {e}" for e in r["error_samples"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
