"""faceage video: people followed through a video (or a camera) with ages fused over time."""
from __future__ import annotations

import argparse
import sys
import warnings

from faceage.cli import add_photo_arguments, predict_options

HELP = "estimate the ages of the people in a video file or a camera stream"
EPILOG = """examples:
  faceage video clip.mp4
  faceage video clip.mp4 --out annotated.mp4 --json tracks.json
  faceage video clip.mov --every 1 --start 10 --end 25 --json tracks.csv
  faceage video --webcam 0 --out webcam.mp4        (Ctrl-C stops and writes the files)

Every --every-th frame faces are detected and scored; in between they are followed
(boxes interpolated), so output comes --every frames late. A track's age is fused
from its per-frame age distributions (docs/video.md). Text output: one line per
track (id, frames, times, fused age and 80% interval). --json FILE.json: video info,
settings, warnings and every track with its per-frame boxes and ages; FILE.csv: one
row per track and frame. Corrupt frames are skipped with a warning; the exit status
is 0 when the whole video was read, 1 when some of it was skipped."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", nargs="?", metavar="VIDEO", help="video file (mp4, mov, mkv, webm, avi)")
    p.add_argument("--webcam", type=int, metavar="N", default=None, help="read camera number N instead of a file")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="write the video with boxes, track ids and fused ages (.mp4, .mov, .mkv, .webm, .avi)")
    p.add_argument("--json", metavar="FILE", default=None, help="write the tracks (.json or .csv)")
    p.add_argument("--every", type=int, default=5, metavar="N", help="detect and score faces every N-th frame (default 5)")
    p.add_argument("--start", type=float, default=0.0, metavar="SECONDS", help="start at this many seconds")
    p.add_argument("--end", type=float, default=None, metavar="SECONDS", help="stop at this many seconds")
    p.add_argument("--detect-side", type=int, default=800, metavar="PX",
                   help="detect on frames downscaled to this longest side (default 800; faces narrower than "
                        "about 80 px at that scale are missed: raise it for small faces)")
    p.add_argument("--min-track", type=int, default=10, metavar="N", help="report tracks spanning at least N frames (10)")
    p.add_argument("--max-gap", type=float, default=2.0, metavar="SECONDS",
                   help="seconds a face may stay undetected and keep its track (2)")
    p.add_argument("--fusion", choices=("logpool", "mixture"), default="logpool",
                   help="how per-frame age distributions are fused (default logpool; see docs/video.md)")
    p.add_argument("--keep-audio", action="store_true", help="copy the audio into --out (default: dropped)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar on standard error (warnings about skipped frames are still shown), as "
                        "for predict")
    add_photo_arguments(p, fallback=False)


def run(args: argparse.Namespace) -> int:
    from faceage.extras import require

    require("video", "faceage video")
    from tqdm import tqdm

    from faceage.errors import FaceageError
    from faceage.video.draw import draw_tracks
    from faceage.video.io import VideoWarning
    from faceage.video.writer import VideoWriter
    from faceage.video.report import tracks_document, write_tracks

    if (args.input is None) == (args.webcam is None):
        raise FaceageError("give a video file or --webcam N (one of them)")
    if args.keep_audio and (args.webcam is not None or args.out is None):
        raise FaceageError("--keep-audio needs a video file and --out")
    if args.every < 1 or args.min_track < 1 or args.detect_side < 64 or args.max_gap < 0:
        raise FaceageError("need --every >= 1, --min-track >= 1, --detect-side >= 64 and --max-gap >= 0")
    options = predict_options(args)
    video = options.estimator().predict_video(
        args.input, camera=args.webcam, every=args.every, start=args.start, end=args.end, detect_side=args.detect_side,
        min_track=args.min_track, max_gap=args.max_gap, fusion=args.fusion, faces=options.faces)
    info = video.info
    total = None
    if info.duration:
        total = round((min(info.duration, args.end or info.duration) - args.start) * info.fps) or None
    writer = None
    if args.out:
        writer = VideoWriter(args.out, fps=info.fps,
                             audio_from=(args.input, args.start, args.end) if args.keep_audio else None)
    bar = tqdm(total=total, unit="frame", desc="video", file=sys.stderr, dynamic_ncols=True, disable=args.quiet)
    shown = warnings.showwarning

    def show(message, category, *rest):
        if issubclass(category, VideoWarning):
            bar.write(f"warning: {message}", file=sys.stderr)
        else:
            shown(message, category, *rest)

    warnings.showwarning = show
    try:
        for frame in video:
            if writer is not None:
                writer.write(draw_tracks(frame.image, frame.faces), frame.time - args.start)
            bar.update(1)
    except KeyboardInterrupt:
        bar.write("stopped: writing what was analysed", file=sys.stderr)
    finally:
        warnings.showwarning = shown
        bar.close()
        if writer is not None:
            writer.close()
    tracks = video.tracks
    for t in tracks:
        lo, hi = t.age_interval
        print(f"track {t.id}: frames {t.first_frame}-{t.last_frame} ({t.times[0]:.2f}-{t.times[-1]:.2f} s) "
              f"age {t.age:.1f} (80% interval {lo:.0f}-{hi:.0f}), {len(t.scored_ages)} frames scored")
    if not tracks:
        print("no face was followed long enough to report (see --min-track)")
    if args.json:
        write_tracks(args.json, tracks_document(info, tracks, video.settings, video.problems))
    return 1 if video.problems else 0
