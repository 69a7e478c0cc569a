"""Video speed: frames per second of ``faceage video`` at 720p and 1080p, one thread.

    python -m benchmarks.video_speed                      # 720p and 1080p, every 1 and 5, 300 frames
    python -m benchmarks.video_speed --sizes 640x360 --frames 60 --out /tmp/bench   # a quick check

The clips are made first by scripts/make_test_video.py (three FG-NET faces moving over a
background; needs ../shared/data/fgnet). Everything runs on one thread: ONNX Runtime
(FACEAGE_THREADS=1), the decoder and the encoder. Timed per setting, after a warm-up:

* ``decode``: decoding + RGB conversion alone (the floor);
* ``analyse``: ``AgeEstimator().predict_video(clip, every=N)`` iterated to the end: decode, detect
  and score every N-th frame, track, fuse (``faceage video clip --json t.json``);
* ``annotate``: the same plus drawing the boxes and encoding H.264 (``faceage video clip --out a.mp4``).

Results: ``docs/benchmarks/video_speed.json`` and ``.md`` (or ``--out`` folder). The machine's
load is recorded with them (1-minute load average before and after).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ["FACEAGE_THREADS"] = "1"  # before onnxruntime builds its session

from benchmarks._common import add_output_arguments, machine, markdown_table, parse_args, write_results  # noqa: E402



def timed(run) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = run()
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["1280x720", "1920x1080"], help="WIDTHxHEIGHT of the clips")
    ap.add_argument("--every", nargs="+", type=int, default=[1, 5])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--no-annotate", action="store_true", help="skip the timing with annotated output")
    ap.add_argument("--detector", default=None, help="the face detector (default: faceage's default)")
    add_output_arguments(ap)
    args = parse_args(ap)

    from scripts.make_test_video import make_test_video

    from faceage.estimator import AgeEstimator
    from faceage.video.draw import draw_tracks
    from faceage.video.io import VideoReader
    from faceage.video.writer import VideoWriter

    from faceage.face.detect import DEFAULT_DETECTOR

    detector = args.detector or DEFAULT_DETECTOR
    est = AgeEstimator(detector=detector)
    load_before = os.getloadavg()[0]
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            w, h = (int(v) for v in size.lower().split("x"))
            clip = Path(tmp) / f"clip{w}x{h}.mp4"
            make_test_video(clip, width=w, height=h, frames=args.frames)
            list(est.predict_video(clip, every=5, end=0.5, threads=1))  # warm-up: dlib models, ONNX session
            n, dt = timed(lambda: sum(1 for _ in VideoReader(clip, threads=1)))
            decode_fps = n / dt
            for every in args.every:
                n, dt = timed(lambda: sum(1 for _ in est.predict_video(clip, every=every, threads=1)))
                entry = {"size": size, "every": every, "frames": n, "decode_fps": round(decode_fps, 1),
                         "analyse_fps": round(n / dt, 1)}
                if not args.no_annotate:
                    def annotate() -> int:
                        count = 0
                        with VideoWriter(Path(tmp) / "out.mp4", fps=25, threads=1) as writer:
                            for r in est.predict_video(clip, every=every, threads=1):
                                writer.write(draw_tracks(r.image, r.faces), r.time)
                                count += 1
                        return count

                    n, dt = timed(annotate)
                    entry["annotate_fps"] = round(n / dt, 1)
                results.append(entry)
                rows.append([size, every, entry["decode_fps"], entry["analyse_fps"], entry.get("annotate_fps", "-")])
                print(rows[-1], flush=True)
    load_after = os.getloadavg()[0]
    note = (f"{machine()}; detector {detector}; one thread; 1-minute load average {load_before:.1f} before, {load_after:.1f} after; "
            f"{args.frames}-frame clips from scripts/make_test_video.py (3 faces)")
    table = markdown_table(["size", "every", "decode frames/s", "analyse frames/s", "analyse + annotated mp4 frames/s"],
                           rows) + f"\n\n{note}"
    write_results("video_speed", {"machine": machine(), "load_before": load_before, "load_after": load_after,
                                  "frames": args.frames, "detector": detector, "results": results}, table, args.out)


if __name__ == "__main__":
    main()
