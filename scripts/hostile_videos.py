"""Hostile test clips for the video limits (tests/test_serve_limits.py, benchmarks/serve_attacks.py).

    python -m scripts.hostile_videos --out /tmp/clips

Each clip is Matroska holding MJPEG frames muxed by hand, so that what the container declares
and what the frames are can disagree:

* ``zero_time_mkv``: every frame stamped 0 (a 60 s duration cap that trusts time stamps would
  never stop; the container declares a duration of one frame);
* ``resolution_switch_mkv``: the stream declares the first frames' small size and switches to a
  large size mid-stream (a frame-size check that trusts the header would let 4K frames through);
* ``repeated_mkv``: a clip's packets muxed again and again, one copy after the other (a long,
  high-frame-rate clip in a small file, made in seconds: the video DoS of issue 25).
"""
from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import numpy as np


def _jpeg_packets(frames: list[np.ndarray], fps: int) -> list:
    import av

    h, w = frames[0].shape[:2]
    cc = av.CodecContext.create("mjpeg", "w")
    cc.width, cc.height, cc.pix_fmt, cc.time_base = w, h, "yuvj420p", Fraction(1, fps)
    packets = []
    for i, img in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24").reformat(format="yuvj420p")
        frame.pts = i
        packets += cc.encode(frame)
    return packets + list(cc.encode(None))


def mkv_of_packets(path: str | Path, packets: list, declared: tuple[int, int], fps: int = 25,
                   zero_times: bool = False) -> Path:
    """Mux MJPEG ``packets`` into ``path`` under a stream header declaring ``declared`` (w, h); frame ``i``
    is stamped ``i / fps``, or 0 with ``zero_times``."""
    import av

    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("mjpeg", rate=fps)
        stream.width, stream.height, stream.pix_fmt = declared[0], declared[1], "yuvj420p"
        for i, packet in enumerate(packets):
            packet.stream, packet.time_base = stream, Fraction(1, fps)
            packet.pts = packet.dts = 0 if zero_times else i
            out.mux(packet)
    return Path(path)


def pattern(i: int, w: int, h: int) -> np.ndarray:
    """A frame whose bright bar moves with ``i``."""
    img = np.full((h, w, 3), 40, np.uint8)
    x = (i * 7) % max(1, w - 8)
    img[:, x:x + 8] = 230
    return img


def zero_time_mkv(path: str | Path, frames: int = 3000, size: tuple[int, int] = (64, 64), fps: int = 25) -> Path:
    """``frames`` frames of ``size``, every one stamped 0. The same frame is muxed again and again: the
    file stays small however many frames it holds."""
    w, h = size
    packets = _jpeg_packets([pattern(i, w, h) for i in range(min(frames, 50))], fps)
    return mkv_of_packets(path, [packets[i % len(packets)] for i in range(frames)], size, fps, zero_times=True)


def resolution_switch_mkv(path: str | Path, small: tuple[int, int] = (64, 64), large: tuple[int, int] = (3840, 2160),
                          n_small: int = 10, n_large: int = 20, fps: int = 25) -> Path:
    """``n_small`` frames of ``small`` (what the header declares), then ``n_large`` frames of ``large``."""
    packets = _jpeg_packets([pattern(i, *small) for i in range(n_small)], fps)
    big = _jpeg_packets([pattern(i, *large) for i in range(min(n_large, 3))], fps)
    return mkv_of_packets(path, packets + [big[i % len(big)] for i in range(n_large)], small, fps)


def repeated_mkv(src: str | Path, dst: str | Path, times: int) -> Path:
    """``src`` (a clip starting with a key frame) played ``times`` times in a row, as Matroska."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", format="matroska") as out:
        ins = inp.streams.video[0]
        outs = out.add_stream_from_template(ins)
        packets = [p for p in inp.demux(ins) if p.size]
        span = max(p.pts for p in packets) + (packets[1].pts - packets[0].pts if len(packets) > 1 else 1)
        for k in range(times):
            for p in packets:
                q = av.Packet(bytes(p))
                q.stream, q.time_base, q.is_keyframe = outs, p.time_base, p.is_keyframe
                q.pts, q.dts = p.pts + k * span, p.dts + k * span
                out.mux(q)
    return Path(dst)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for zero_time.mkv and resolution_switch.mkv")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for p in (zero_time_mkv(args.out / "zero_time.mkv"), resolution_switch_mkv(args.out / "resolution_switch.mkv")):
        print(p, p.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
