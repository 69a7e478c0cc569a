"""Fuzz ``faceage serve``'s decode path and the running server with random and mutated image bytes.

Generates ``--cases`` (default 10,000) byte strings, deterministically from ``--seed``:
random bytes (some behind a real format's magic number) and valid small images (PNG,
JPEG baseline/progressive/CMYK/EXIF-rotated, WebP lossy/lossless, BMP, TIFF, GIF,
AVIF, 16-bit and palette PNGs, downscaled FG-NET photos) mutated by bit flips,
byte overwrites, cuts, inserts, deletions, duplications, splices and huge header
dimensions; plus a few specials (empty, pixel bombs, an over-the-limit body).

Specials include thin and extreme-aspect images (8x2000 random, 10x10000, 8x4300,
50000x12, 1x50,000,000 px) and shapes just inside the server's aspect limit.

1. Decode path: every case goes through the server's two decoding calls (``faceage.serve.upload.open_upload``,
   then ``faceage.core.imageio.decode_opened``) in a
   child process watched by this one: a Python exception other than a 4xx error is a
   crash, a dead child a native crash, no answer within ``--hang-s`` a hang.
2. Detection on thin shapes: the thin and extreme-aspect images, decoded without the
   server's aspect limit, go through the whole estimator *with dlib's CNN pass* in a
   watched child process: answers, Python exceptions, native crashes, hangs.
3. Server: every case is POSTed (alternately raw body and multipart) to ``faceage
   serve`` on a free 127.0.0.1 port by ``--clients`` threads: counts of 2xx/4xx/5xx,
   transport errors, hangs (no answer within ``--hang-s``), server alive afterwards.
   ``--server-cnn`` runs that server with ``--cnn``.

    python -m benchmarks.serve_fuzz                       # 10,000 cases, both phases
    python -m benchmarks.serve_fuzz --cases 500 --out /tmp/bench

Writes docs/benchmarks/serve_fuzz.{json,md}; failing inputs go to --failures.
"""
from __future__ import annotations

import argparse
import collections
import functools
import io
import json
import multiprocessing as mp
import os
import pickle
import platform
import struct
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks._serve import Server, free_port, pick_model, rss_mb  # noqa: E402
from benchmarks.serve_load import DEFAULT_PHOTOS  # noqa: E402
from benchmarks._common import add_output_arguments, parse_args

MAGICS = [b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xdb", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"GIF87a", b"BM",
          b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"RIFF\x00\x00\x00\x00WEBPVP8L",
          b"\x00\x00\x00\x1cftypavif", b"\x00\x00\x00\x18ftypheic", b"%PDF-1.4", b"<svg", b"8BPS", b"%!PS"]


# ------------------------------------------------------------------------------------ cases
def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def make_seeds(photos: Path, rng: np.random.Generator) -> list[tuple[str, bytes]]:
    seeds: list[tuple[str, bytes]] = []
    for h, w in ((16, 16), (24, 40), (48, 32), (64, 64)):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), (xx + yy) % 256], -1)
        arr = np.clip(base + rng.integers(-30, 30, (h, w, 3)), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
        seeds += [
            (f"png{w}x{h}", _save(img, "PNG")),
            (f"jpeg{w}x{h}", _save(img, "JPEG", quality=85)),
            (f"jpeg-prog{w}x{h}", _save(img, "JPEG", progressive=True)),
            (f"webp{w}x{h}", _save(img, "WEBP", quality=80)),
            (f"webp-ll{w}x{h}", _save(img.convert("RGBA"), "WEBP", lossless=True)),
            (f"bmp{w}x{h}", _save(img, "BMP")),
            (f"tiff{w}x{h}", _save(img, "TIFF")),
            (f"tiff-lzw{w}x{h}", _save(img, "TIFF", compression="tiff_lzw")),
            (f"gif{w}x{h}", _save(img.convert("P"), "GIF")),
            (f"png-L{w}x{h}", _save(img.convert("L"), "PNG")),
            (f"png-P{w}x{h}", _save(img.convert("P"), "PNG")),
            (f"png-RGBA{w}x{h}", _save(img.convert("RGBA"), "PNG")),
            (f"png-I16{w}x{h}", _save(Image.fromarray((arr[..., 0].astype(np.uint16) * 257)), "PNG")),
            (f"jpeg-cmyk{w}x{h}", _save(img.convert("CMYK"), "JPEG")),
        ]
        exif = Image.Exif()
        exif[0x0112] = int(rng.integers(2, 9))
        seeds.append((f"jpeg-exif{w}x{h}", _save(img, "JPEG", exif=exif)))
        try:
            seeds.append((f"avif{w}x{h}", _save(img, "AVIF", quality=50)))
        except Exception:  # noqa: BLE001 - Pillow without AVIF
            pass
    files = sorted(photos.glob("*.JPG"))[:6] if photos.is_dir() else []
    for p in files[:5]:
        im = Image.open(p).convert("RGB")
        im.thumbnail((96, 96))
        seeds.append((f"fgnet96-{p.stem}", _save(im, "JPEG", quality=90)))
    if files:
        seeds.append((f"fgnet-{files[5].stem}", files[5].read_bytes()))
    return seeds


def mutate(data: bytes, rng: np.random.Generator, seeds: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    b = bytearray(data)
    ops = []
    for _ in range(int(rng.integers(1, 5))):
        op = str(rng.choice(["flip", "byte", "cut", "insert", "delete", "dup", "dims", "splice", "flip_head"]))
        n = len(b)
        pos = int(rng.integers(0, max(1, n)))
        if op == "flip" and n:
            for _ in range(int(rng.integers(1, 9))):
                i = int(rng.integers(0, n))
                b[i] ^= 1 << int(rng.integers(0, 8))
        elif op == "flip_head" and n:  # headers are where parsers branch
            i = int(rng.integers(0, min(n, 64)))
            b[i] ^= 1 << int(rng.integers(0, 8))
        elif op == "byte" and n:
            b[pos] = int(rng.choice([0, 0xFF, 0x7F, 0x80, 0x01, int(rng.integers(0, 256))]))
        elif op == "cut":
            b = b[:pos]
        elif op == "insert":
            b[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 129)), dtype=np.uint8).tobytes()
        elif op == "delete":
            del b[pos:pos + int(rng.integers(1, 65))]
        elif op == "dup":
            b[pos:pos] = b[pos:pos + int(rng.integers(1, 513))]
        elif op == "dims":  # a huge or zero value where a size field may be
            i = int(rng.integers(0, min(max(1, n), 48)))
            b[i:i + 4] = [b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x00", b"\x00\x01\x00\x01",
                          b"\xff\xff", b"\x40\x00\x40\x00"][int(rng.integers(0, 6))]
        elif op == "splice":
            other = seeds[int(rng.integers(0, len(seeds)))][1]
            j = int(rng.integers(0, max(1, len(other))))
            b = b[:pos] + bytearray(other[j:])
        ops.append(op)
    return bytes(b), "+".join(ops)


def png_with_size(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width`` x ``height`` (CRC fixed): a bomb as far as the header goes."""
    data = bytearray(_save(Image.new("L", (8, 8)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@functools.lru_cache(maxsize=1)
def special_cases() -> list[tuple[str, bytes]]:
    out = [("empty", b""), ("one-byte", b"\xff")]
    out.append(("bomb-png-header-100000x100000", png_with_size(100_000, 100_000)))
    out.append(("bomb-gif-header", b"GIF89a\xff\xff\xff\xff\x00\x00\x00" + b"\x00" * 32))
    out.append(("over-pixels-png-9000x6000", png_with_size(9000, 6000)))  # 54 Mpx > the 50 Mpx default
    out.append(("bomb-png-real-12000x12000", _save(Image.new("1", (12000, 12000)), "PNG")))  # 144 Mpx, ~20 KB
    out.append(("jpeg-9MB-garbage-header", b"\xff\xd8\xff\xe0" + b"\x00" * (9 * 1024 * 1024)))
    png = bytearray(png_with_size(8, 8))
    chunk = struct.pack(">I", 0) + b"abCd" + struct.pack(">I", zlib.crc32(b"abCd"))
    out.append(("png-9MB-of-empty-chunks", bytes(png[:33] + chunk * (9 * 1024 * 1024 // 12) + png[33:])))
    out.append(("over-upload-11MB", b"\xff\xd8\xff\xe0" + b"\x00" * (11 * 1024 * 1024)))
    return out + thin_cases()


#: thin and extreme-aspect shapes (width, height): thinner than the server's limit, then just inside it
THIN_SHAPES = [(8, 2000), (10, 10000), (8, 4300), (4300, 8), (50000, 12), (12, 50000), (1, 50_000_000),
               (8, 150), (150, 8), (9, 180), (20, 400)]


@functools.lru_cache(maxsize=1)
def thin_cases() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(18)
    out = []
    for w, h in THIN_SHAPES:
        if w * h <= 1_000_000:
            img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        else:  # large: a flat image (a random one would be megabytes; the shape is the attack)
            img = Image.new("L", (w, h), 128)
        out.append((f"thin-{w}x{h}", _save(img, "PNG")))
    return out


def make_cases(n: int, seed: int, photos: Path) -> tuple[list[tuple[str, bytes]], int]:
    rng = np.random.default_rng(seed)
    seeds = make_seeds(photos, rng)
    cases = list(special_cases())
    while len(cases) < n:
        u = rng.random()
        if u < 0.15:
            size = int(rng.choice([0, 1, 2, 3, 4, 7, 8, 16, 31, 64, 100, 512, 1000, 4096]))
            cases.append((f"random{size}", rng.integers(0, 256, size, dtype=np.uint8).tobytes()))
        elif u < 0.25:
            magic = MAGICS[int(rng.integers(0, len(MAGICS)))]
            tail = rng.integers(0, 256, int(rng.integers(0, 600)), dtype=np.uint8).tobytes()
            cases.append((f"magic+random:{magic[:8]!r}", magic + tail))
        else:
            name, data = seeds[int(rng.integers(0, len(seeds)))]
            mutated, ops = mutate(data, rng, seeds)
            cases.append((f"{name}:{ops}", mutated))
    return cases[:n], len(seeds)


# ------------------------------------------------------------------------------------ phase 1
def _decode_child(conn, cases_file: str, start: int, max_pixels: int, detect: bool) -> None:
    """Decode each case like the server (``detect``: without the aspect limit, then estimate ages
    with dlib's CNN pass on) and report each outcome to the watching parent."""
    import warnings

    from faceage.errors import FaceageError
    from faceage.serve.app import DEFAULT_MAX_ASPECT
    from faceage.serve.errors import status_of
    from faceage.core.imageio import decode_opened
    from faceage.serve.upload import open_upload

    warnings.simplefilter("ignore")  # Pillow warns about every corrupt EXIF/TIFF tag
    estimator = None
    if detect:
        from faceage.estimator import AgeEstimator

        estimator = AgeEstimator(detector="dlib")  # the bundled model; dlib with its CNN pass
    with open(cases_file, "rb") as fh:
        cases = pickle.load(fh)
    for i in range(start, len(cases)):
        conn.send(("start", i))
        t0 = time.perf_counter()
        try:
            aspect = None if detect else DEFAULT_MAX_ASPECT  # the server's calls, in its order (app.answer_upload)
            opened = open_upload(cases[i][1], max_pixels=max_pixels, max_aspect=aspect)
            img = decode_opened(opened, name="upload", max_pixels=max_pixels, max_aspect=aspect)
            outcome = ("ok", 200, f"{img.shape[1]}x{img.shape[0]}")
            if estimator is not None:
                outcome = ("ok", 200, f"{len(estimator.predict(img))} faces")
        except FaceageError as exc:
            outcome = ("error", status_of(exc.code), exc.code)
        except BaseException as exc:  # noqa: BLE001 - this is what the fuzz looks for
            outcome = ("crash", 0, f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300])
        conn.send(("done", i, *outcome, (time.perf_counter() - t0) * 1000.0))
        if detect and outcome[0] == "crash":  # dlib may have damaged this process: the next case gets a fresh one
            conn.send(("restart", i + 1))
            return
    conn.send(("end",))


def run_decode_phase(cases, max_pixels: int, hang_s: float, tmp: Path, detect: bool = False) -> dict:
    cases_file = tmp / ("thin-cases.pkl" if detect else "cases.pkl")
    with open(cases_file, "wb") as fh:
        pickle.dump(cases, fh)
    ctx = mp.get_context("fork")
    counts = collections.Counter()
    codes = collections.Counter()
    failures, times, slowest = [], [], []
    outcomes: dict[str, str] = {}
    start, t0 = 0, time.perf_counter()
    while start < len(cases):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_decode_child, args=(child, str(cases_file), start, max_pixels, detect), daemon=True)
        proc.start()
        child.close()
        current = start
        while True:
            if not parent.poll(hang_s):
                counts["hang"] += 1
                failures.append({"case": current, "name": cases[current][0], "kind": "hang"})
                outcomes[cases[current][0]] = "hang"
                proc.kill()
                start = current + 1
                break
            try:
                msg = parent.recv()
            except EOFError:
                counts["native_crash"] += 1
                proc.join(5)
                failures.append({"case": current, "name": cases[current][0], "kind": "native crash",
                                 "exitcode": proc.exitcode})
                outcomes[cases[current][0]] = f"native crash (exit code {proc.exitcode})"
                start = current + 1
                break
            if msg[0] == "start":
                current = msg[1]
            elif msg[0] == "done":
                _, i, kind, status, detail, ms = msg
                times.append(ms)
                slowest.append((ms, i, kind, detail))
                slowest = sorted(slowest, reverse=True)[:5]
                outcomes[cases[i][0]] = f"{kind} {status} {detail}"
                if kind == "ok":
                    counts["decoded"] += 1
                elif kind == "error":
                    counts[f"{status // 100}xx"] += 1
                    codes[f"{status} {detail}"] += 1
                    if status >= 500:
                        failures.append({"case": i, "name": cases[i][0], "kind": "5xx error", "detail": detail})
                else:
                    counts["crash"] += 1
                    failures.append({"case": i, "name": cases[i][0], "kind": "python exception", "detail": detail})
            elif msg[0] == "restart":
                start = msg[1]
                break
            else:  # end
                start = len(cases)
                break
        proc.join(5)
        parent.close()
    t = np.array(times) if times else np.zeros(1)
    return {
        "cases": len(cases),
        "decoded": counts["decoded"],
        "rejected_4xx": counts["4xx"],
        "other_status": counts["5xx"] + counts["3xx"] + counts["2xx"],
        "crashes": counts["crash"] + counts["native_crash"],
        "native_crashes": counts["native_crash"],
        "hangs": counts["hang"],
        "codes": dict(codes.most_common()),
        "decode_ms": {"p50": round(float(np.percentile(t, 50)), 2), "p99": round(float(np.percentile(t, 99)), 2),
                      "max": round(float(t.max()), 1)},
        "slowest": [{"case": i, "name": cases[i][0], "ms": round(ms, 1), "outcome": f"{kind} {detail}"}
                    for ms, i, kind, detail in slowest],
        "wall_s": round(time.perf_counter() - t0, 1),
        "failures": failures[:50],
        "outcomes": outcomes if detect else None,
    }


# ------------------------------------------------------------------------------------ phase 3
def run_server_phase(cases, model: str, clients: int, hang_s: float, tmp: Path, failures_dir: Path,
                     cnn: bool = False) -> dict:
    import httpx

    server = Server(model, free_port(), threads=1, concurrency=None, log=tmp / "fuzz-server.log",
                    extra=("--cnn",) if cnn else ())
    counts = collections.Counter()
    statuses = collections.Counter()
    failures: list[dict] = []
    lat: list[float] = []
    lock = threading.Lock()
    t0 = time.perf_counter()
    try:
        rss_before = rss_mb(server.proc.pid)

        def client(k: int) -> None:
            with httpx.Client(base_url=server.base, timeout=httpx.Timeout(hang_s, connect=10)) as c:
                for i in range(k, len(cases), clients):
                    name, data = cases[i]
                    t = time.perf_counter()
                    kind = None
                    try:
                        if i % 2:
                            r = c.post("/v1/estimate", files={"file": ("fuzz.bin", data, "application/octet-stream")})
                        else:
                            r = c.post("/v1/estimate", content=data)
                        status = r.status_code
                        if status >= 500:
                            kind, detail = "5xx", r.text[:300]
                        else:
                            body = r.json()  # every answer must be JSON
                            if status >= 400 and not (isinstance(body.get("detail"), str) and body.get("code")):
                                kind, detail = "bad error body", r.text[:300]
                    except httpx.TimeoutException as exc:
                        status, kind, detail = 0, "hang", repr(exc)
                    except httpx.TransportError as exc:
                        status, kind, detail = -1, "transport error", repr(exc)
                        if name.startswith("over-upload"):  # refused early; the client may see the socket close
                            kind = None
                    except ValueError as exc:
                        status, kind, detail = r.status_code, "non-JSON body", repr(exc)
                    with lock:
                        lat.append(time.perf_counter() - t)
                        statuses[status] += 1
                        counts[f"{status // 100}xx" if status > 0 else ("hang" if status == 0 else "transport")] += 1
                        if kind:
                            counts[f"fail:{kind}"] += 1
                            path = failures_dir / f"case{i:05d}.bin"
                            failures_dir.mkdir(parents=True, exist_ok=True)
                            path.write_bytes(data)
                            failures.append({"case": i, "name": name, "kind": kind, "status": status,
                                             "detail": detail, "input": str(path)})

        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        alive = server.proc.poll() is None
        healthy = False
        if alive:
            try:
                healthy = httpx.get(f"{server.base}/healthz", timeout=10).status_code == 200
            except httpx.TransportError:
                pass
        rss_after = rss_mb(server.proc.pid)
    finally:
        server.stop()
    log_text = (tmp / "fuzz-server.log").read_text(errors="replace")
    la = np.array(lat) * 1000.0
    return {
        "cases": len(cases),
        "clients": clients,
        "cnn": cnn,
        "status_2xx": counts["2xx"],
        "status_4xx": counts["4xx"],
        "status_5xx": counts["5xx"],
        "transport_errors": counts["transport"],
        "hangs": counts["hang"],
        "failures_total": sum(v for k, v in counts.items() if k.startswith("fail:")),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "server_alive_after": alive,
        "healthz_after": healthy,
        "tracebacks_in_server_log": log_text.count("Traceback"),
        "rss_before_mb": rss_before["rss_mb"],
        "rss_after_mb": rss_after["rss_mb"],
        "latency_ms": {"p50": round(float(np.percentile(la, 50)), 1), "p99": round(float(np.percentile(la, 99)), 1),
                       "max": round(float(la.max()), 1)},
        "wall_s": round(wall, 1),
        "failures": failures[:50],
    }


# ------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    ap.add_argument("--model", default=None)
    ap.add_argument("--clients", type=int, default=2, help="concurrent clients in the server phase")
    ap.add_argument("--hang-s", type=float, default=30.0, help="a case unanswered this long is a hang")
    ap.add_argument("--max-pixels", type=int, default=50_000_000, help="decode-phase pixel limit (server default)")
    ap.add_argument("--skip-server", action="store_true")
    ap.add_argument("--server-cnn", action="store_true", help="run the server phase with faceage serve --cnn")
    add_output_arguments(ap)
    ap.add_argument("--failures", type=Path, default=None, help="folder for failing inputs (default: a tmp folder)")
    args = parse_args(ap, argv)

    tmp = Path(tempfile.mkdtemp(prefix="faceage-fuzz-"))
    failures_dir = args.failures or tmp / "failures"
    cases, n_seeds = make_cases(args.cases, args.seed, args.photos)
    n_special = len(special_cases())
    kinds = collections.Counter("special" if i < n_special else
                                ("random" if n.startswith(("random", "magic")) else "mutated")
                                for i, (n, _) in enumerate(cases))
    print(f"{len(cases)} cases ({dict(kinds)}) from {n_seeds} seed images", file=sys.stderr)

    decode = run_decode_phase(cases, args.max_pixels, args.hang_s, tmp)
    print(f"decode path: {json.dumps({k: v for k, v in decode.items() if k != 'failures'})}", file=sys.stderr)
    thin = run_decode_phase(thin_cases(), args.max_pixels, args.hang_s, tmp, detect=True)
    print(f"detection with the CNN pass on thin shapes: {json.dumps(thin['outcomes'])}", file=sys.stderr)
    server, model_note = None, None
    if not args.skip_server:
        model, model_note = pick_model(args.model, tmp)
        server = run_server_phase(cases, model, args.clients, args.hang_s, tmp, failures_dir, cnn=args.server_cnn)
        print(f"server: {json.dumps({k: v for k, v in server.items() if k != 'failures'})}", file=sys.stderr)

    report = {
        "benchmark": "serve_fuzz",
        "command": "python -m benchmarks.serve_fuzz " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cases": len(cases),
        "case_kinds": dict(kinds),
        "seed_images": n_seeds,
        "seed": args.seed,
        "decode_path": decode,
        "thin_detection": thin,
        "server": server,
        "model_note": model_note,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "pillow": Image.__version__, "platform": platform.platform()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve_fuzz.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "serve_fuzz.md").write_text(markdown(report))
    print(markdown(report))
    bad = decode["crashes"] + decode["hangs"] + decode["other_status"] + thin["crashes"] + thin["hangs"]
    if server:
        bad += server["status_5xx"] + server["hangs"] + server["failures_total"] + (not server["healthz_after"])
    return 1 if bad else 0


def markdown(r: dict) -> str:
    d, s, thin = r["decode_path"], r["server"], r["thin_detection"]
    lines = [
        "# `faceage serve` fuzz: random and mutated image bytes",
        "",
        f"`{r['command'].strip()}`: {r['cases']:,} byte strings (seed {r['seed']}): {r['case_kinds'].get('mutated', 0):,} "
        f"mutations of {r['seed_images']} valid images (PNG, JPEG baseline/progressive/CMYK/EXIF, WebP, BMP, TIFF, "
        f"GIF, AVIF, 16-bit and palette PNG, FG-NET photos), {r['case_kinds'].get('random', 0):,} random "
        f"(some behind a real magic number), {r['case_kinds'].get('special', 0)} specials (empty, pixel bombs, "
        "an 11 MB body). Pillow " + r["machine"]["pillow"] + ".",
        "",
        "## Decode path (`open_upload` + `decode_opened`, as the server calls them, in a watched child process)",
        "",
        "| cases | decoded | rejected 4xx | crashes | native crashes | hangs | decode p50 / p99 / max (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {d['cases']:,} | {d['decoded']:,} | {d['rejected_4xx']:,} | {d['crashes']} | {d['native_crashes']} | "
        f"{d['hangs']} | {d['decode_ms']['p50']} / {d['decode_ms']['p99']} / {d['decode_ms']['max']} |",
        "",
        "Rejections by status and code: " + ", ".join(f"{k}: {v:,}" for k, v in d["codes"].items()) + ".",
        "",
        "Slowest cases: " + "; ".join(f"{x['name']} {x['ms']} ms ({x['outcome']})" for x in d["slowest"]) + ".",
        "",
        "## Thin and extreme-aspect shapes through detection, dlib CNN pass on (no aspect limit)",
        "",
        f"{thin['crashes']} crashes ({thin['native_crashes']} native), {thin['hangs']} hangs in {thin['cases']} "
        "shapes. (The server refuses the shapes thinner than 1:20 from the header, before decoding.)",
        "",
        "| shape | outcome |",
        "|---|---|",
    ] + [f"| {name} | {outcome} |" for name, outcome in thin["outcomes"].items()]
    if s:
        lines += [
            "",
            f"## Server (`faceage serve{' --cnn' if s.get('cnn') else ''}` on 127.0.0.1, {s['clients']} concurrent "
            "clients, raw body and multipart alternately)",
            "",
            f"Model: {r['model_note']}.",
            "",
            "| requests | 2xx | 4xx | 5xx | transport errors | hangs | failures | alive + healthy after | "
            "tracebacks in log |",
            "|---:|---:|---:|---:|---:|---:|---:|---|---:|",
            f"| {s['cases']:,} | {s['status_2xx']:,} | {s['status_4xx']:,} | {s['status_5xx']} | "
            f"{s['transport_errors']} | {s['hangs']} | {s['failures_total']} | "
            f"{'yes' if s['server_alive_after'] and s['healthz_after'] else 'NO'} | {s['tracebacks_in_server_log']} |",
            "",
            f"Statuses: {', '.join(f'{k}: {v:,}' for k, v in s['statuses'].items())}. Latency p50 "
            f"{s['latency_ms']['p50']} ms, p99 {s['latency_ms']['p99']} ms, max {s['latency_ms']['max']} ms; "
            f"server RSS {s['rss_before_mb']} MB before, {s['rss_after_mb']} MB after; {s['wall_s']} s.",
            "",
            "A failure is a 5xx, a hang, a non-JSON answer, an error body without `detail`/`code`, or a transport "
            "error (except on the 11 MB body, which the server may refuse by closing the connection).",
        ]
    fails = d["failures"] + thin["failures"] + (s["failures"] if s else [])
    if fails:
        lines += ["", "## Failures (first ones)", ""] + [f"- {json.dumps(f)}" for f in fails[:20]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
