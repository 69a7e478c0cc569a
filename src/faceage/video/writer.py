"""Writing video: RGB frames encoded at their own time stamps (:class:`VideoWriter`). Audio is dropped unless
the writer is asked to copy it from the source (it is then re-encoded to the output container's usual codec)."""
from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np

from faceage.video.io import VideoError, VideoWarning, _av

#: output container suffix -> (video codecs to try in order, audio codec)
_ENCODERS = {
    ".mp4": (("libx264", "mpeg4"), "aac"),
    ".m4v": (("libx264", "mpeg4"), "aac"),
    ".mov": (("libx264", "mpeg4"), "aac"),
    ".mkv": (("libx264", "mpeg4"), "aac"),
    ".webm": (("libvpx", "libvpx-vp9"), "libopus"),
    ".avi": (("mpeg4",), "mp3"),
}
#: time base of written video: milliseconds keep variable frame rates exact enough
_OUT_TIME_BASE = Fraction(1, 1000)



class VideoWriter:
    """Encode RGB frames at their own time stamps (variable frame rates kept).

    The codec follows the file's suffix (H.264 for mp4/mov/mkv, VP8 for webm, MPEG-4
    for avi). ``audio_from``: a :class:`VideoReader`-style (path, start, end) whose audio
    is copied (re-encoded) into the output; by default the output has no audio. ``rotation``:
    store the pictures turned by -rotation degrees with metadata saying to turn them back
    (as phones do; for testing readers).
    """

    def __init__(self, path: str | Path, *, fps: float, threads: int = 0,
                 audio_from: tuple[str, float, float | None] | None = None, rotation: int = 0) -> None:
        av = self._av = _av()
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in _ENCODERS:
            raise VideoError(f"{path}: cannot write {suffix or 'files without a suffix'}; "
                             f"use one of {', '.join(_ENCODERS)}")
        codecs, self._audio_codec = _ENCODERS[suffix]
        self._codec = next((c for c in codecs if c in av.codecs_available), None)
        if self._codec is None:
            raise VideoError(f"{path}: this FFmpeg build has none of the encoders {', '.join(codecs)}; "
                             "write .mp4 instead")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fps = Fraction(fps or 25).limit_denominator(1001)
        self._threads = int(threads)
        self._audio_from = audio_from
        self._rotation = int(rotation) % 360
        self._container = None
        self._stream = None
        self._last_pts = -1

    def _open(self, width: int, height: int) -> None:
        av = self._av
        try:
            self._container = av.open(str(self.path), "w")
        except (av.error.FFmpegError, OSError) as exc:
            raise VideoError(f"{self.path}: cannot write the video ({exc}); check the folder") from None
        s = self._container.add_stream(self._codec, rate=self._fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.time_base = s.codec_context.time_base = _OUT_TIME_BASE
        s.codec_context.thread_count = self._threads
        if self._rotation:
            s.set_display_rotation(self._rotation)
        if self._codec == "libx264":
            s.options = {"preset": "superfast", "crf": "23"}  # half of veryfast's time; files ~2x larger
        elif self._codec.startswith("libvpx"):
            s.options = {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "2M"}
        else:
            s.bit_rate = 4_000_000
        self._stream = s
        self._audio = None
        if self._audio_from is not None:
            self._audio = self._add_audio()

    def _add_audio(self):
        av = self._av
        src = av.open(self._audio_from[0])
        if not src.streams.audio:
            src.close()
            warnings.warn(f"{self._audio_from[0]}: no audio stream to keep", VideoWarning, stacklevel=4)
            return None
        ain = src.streams.audio[0]
        out = self._container.add_stream(self._audio_codec, rate=ain.codec_context.sample_rate or 48000)
        if ain.codec_context.layout is not None:
            out.layout = ain.codec_context.layout.name if ain.codec_context.layout.nb_channels <= 2 else "stereo"
        return src, ain, out

    def write(self, image: np.ndarray, time: float) -> None:
        """Add one HxWx3 uint8 RGB frame shown at ``time`` seconds (from the start of the output)."""
        if self._rotation:
            image = np.rot90(image, k=-(self._rotation // 90))
        h, w = image.shape[:2]
        h2, w2 = h - h % 2, w - w % 2  # 4:2:0 needs even sizes
        if self._container is None:
            self._open(w2, h2)
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h2, :w2]), format="rgb24")
        pts = max(int(round(time / _OUT_TIME_BASE)), self._last_pts + 1)
        frame.pts, frame.time_base = pts, _OUT_TIME_BASE
        self._last_pts = pts
        self._container.mux(self._stream.encode(frame))

    def _copy_audio(self) -> None:
        src, ain, out = self._audio
        _, start, end = self._audio_from
        try:
            if start > 0:
                src.seek(int(start / ain.time_base), stream=ain, backward=True)
            for frame in src.decode(ain):
                if frame.time is None or frame.time < start:
                    continue
                if end is not None and frame.time >= end:
                    break
                frame.pts = int(round((frame.time - start) * frame.sample_rate))
                frame.time_base = Fraction(1, frame.sample_rate)
                self._container.mux(out.encode(frame))
            self._container.mux(out.encode(None))
        except self._av.error.FFmpegError as exc:
            warnings.warn(f"{self._audio_from[0]}: audio could not be copied completely ({exc})", VideoWarning,
                          stacklevel=3)
        finally:
            src.close()

    def close(self) -> None:
        if self._container is None:
            return
        try:
            self._container.mux(self._stream.encode(None))
            if self._audio is not None:
                self._copy_audio()
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
