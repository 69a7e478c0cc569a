"""Reading video (with :mod:`faceage.video.writer`, the only modules that import PyAV, FFmpeg).

Frames leave here as plain :class:`Frame` objects (index, time in seconds, upright
RGB array). Rotation metadata (phone videos) is applied, so boxes are in the
frames as a viewer sees them; time stamps are the frames' own presentation times,
so variable frame rates are honoured (a time stamp that does not advance, such as a
file whose frames all say 0, counts as one average frame after the previous one); a
packet or frame the decoder reports as corrupt is skipped with a :class:`VideoWarning`
naming the file and the time, and decoding goes on with the next one. Limits
(``max_pixels``, ``max_frames``, ``max_seconds``) are checked on every decoded frame as it
arrives, whatever the container declares: a stream that declares 64x64 and switches to 4K,
or frames all stamped 0, are stopped at the first frame over a limit.
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from faceage.errors import FaceageError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
class VideoError(FaceageError, ValueError):
    """A video (or camera) could not be opened, decoded or written."""


class VideoLimitError(VideoError):
    """A video is larger than the reader was allowed to decode. Codes: ``too_many_pixels`` (a frame),
    ``clip_too_long`` (``max_seconds``), ``too_many_frames`` (``max_frames``)."""

    code = "too_many_pixels"


class VideoWarning(UserWarning):
    """Part of a video was unreadable and skipped; the rest is processed."""


@dataclass(frozen=True)
class Frame:
    index: int  # frame number in the file (counted from the first frame; estimated after a seek)
    time: float  # presentation time in seconds
    image: np.ndarray = field(repr=False)  # HxWx3 uint8 RGB, upright


@dataclass(frozen=True)
class VideoInfo:
    source: str
    width: int  # upright frame size, after rotation metadata
    height: int
    fps: float  # average frame rate (the file's; frames may still come at a variable rate)
    frames: int | None  # frame count the container declares, if any
    duration: float | None  # seconds, if known
    rotation: int  # degrees counter-clockwise applied to the decoded pictures
    codec: str
    has_audio: bool

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _av():
    from faceage.extras import require

    require("video", "video decoding", ("av",))
    import av

    return av


def container_format(head: bytes) -> str | None:
    """FFmpeg demuxer for a file starting with ``head`` if it is MP4/MOV, Matroska/WebM or AVI, else None.
    Untrusted uploads are opened with this demuxer only (never FFmpeg's probing over all formats,
    some of which, like HLS playlists, open other files)."""
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "mov"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def camera_source(index: int) -> tuple[str, str]:
    """FFmpeg input name and format of camera number ``index`` on this platform."""
    if sys.platform.startswith("linux"):
        return f"/dev/video{index}", "v4l2"
    if sys.platform == "darwin":
        return str(index), "avfoundation"
    return f"video={index}", "dshow"


class VideoReader:
    """Decode frames of a file (path or binary file object; ``start``..``end`` seconds) or a
    camera (``camera=N``).

    ``threads``: decoder threads (0: FFmpeg's choice); ``format``: the demuxer (default: probed);
    ``max_pixels``: refuse (:class:`VideoLimitError`) a video whose frames are declared larger, before
    decoding any, and stop at any decoded frame that is larger; ``max_frames`` / ``max_seconds``: stop
    with a VideoLimitError at the frame past that many frames / seconds after ``start`` (a declared
    duration over ``max_seconds`` is refused before decoding); ``stop``: called before each frame, it
    may raise to end the reading (a server's deadline, its client gone, shutdown).
    Problems met while decoding are kept in :attr:`problems` as well as warned about.
    """

    def __init__(self, source=None, *, camera: int | None = None, start: float = 0.0, end: float | None = None,
                 threads: int = 0, format: str | None = None, max_pixels: int | None = None,
                 max_frames: int | None = None, max_seconds: float | None = None,
                 stop: Callable[[], None] | None = None) -> None:
        av = _av()
        if (source is None) == (camera is None):
            raise ValueError("give a video file or a camera number, not both")
        if start < 0 or (end is not None and end <= start):
            raise VideoError(f"bad time range: start {start} s, end {end} s; need 0 <= start < end")
        self.start, self.end = float(start), end
        self.max_pixels, self.max_frames, self.max_seconds, self._stop = max_pixels, max_frames, max_seconds, stop
        if camera is not None and start:
            raise VideoError("a camera stream starts now: --start applies to video files only")
        self.problems: list[str] = []
        if camera is not None:
            name, fmt = camera_source(camera)
            self.name = f"camera {camera} ({name})"
            try:
                self._container = av.open(name, format=fmt)
            except (av.error.FFmpegError, OSError) as exc:
                raise VideoError(f"{self.name} could not be opened ({exc}); check that the camera is connected "
                                 "and not in use, or pass a video file instead") from None
        else:
            path = isinstance(source, (str, Path))
            self.name = str(source) if path else getattr(source, "name", "upload")
            if path and not Path(source).is_file():
                raise VideoError(f"{source}: no such video file")
            try:
                self._container = av.open(str(source) if path else source, format=format)
            except (av.error.FFmpegError, OSError, ValueError) as exc:
                raise VideoError(f"{self.name}: not a readable video ({exc}); expected "
                                 f"{', '.join(VIDEO_SUFFIXES)}") from None
        if not self._container.streams.video:
            self._container.close()
            raise VideoError(f"{self.name}: the file has no video stream")
        self._stream = vs = self._container.streams.video[0]
        self._declared = (vs.codec_context.width, vs.codec_context.height)
        declared = vs.codec_context.width * vs.codec_context.height
        if max_pixels and (declared > max_pixels or declared == 0):
            self._container.close()
            raise VideoLimitError(f"{self.name}: frames of {vs.codec_context.width}x{vs.codec_context.height} are "
                                  f"over the limit of {max_pixels:,} pixels; downscale the video")
        vs.codec_context.thread_count = int(threads)
        if threads:
            vs.thread_type = "AUTO"
        self._first = self._peek()
        # cameras stamp frames with a system clock: count their time from the first frame
        self._t0 = (self._first.time or 0.0) if camera is not None and self._first is not None else 0.0
        self.rotation = int(round(getattr(self._first, "rotation", 0) / 90.0)) * 90 % 360 if self._first else 0
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        fps = float(rate) if rate else 0.0
        w, h = vs.codec_context.width, vs.codec_context.height
        if self._first is not None:
            w, h = self._first.width, self._first.height
        if self.rotation in (90, 270):
            w, h = h, w
        duration = float(vs.duration * vs.time_base) if vs.duration and vs.time_base else (
            self._container.duration / 1e6 if self._container.duration else None)
        self.info = VideoInfo(self.name, int(w), int(h), round(fps, 3), int(vs.frames) or None,
                              None if duration is None else round(duration, 3), self.rotation,
                              vs.codec_context.name, bool(self._container.streams.audio))
        if max_seconds is not None and duration is not None and duration - self.start > max_seconds + 0.5:
            self._container.close()
            raise self._too_long(f"lasts {duration:.1f} s")

    def _too_long(self, what: str) -> VideoLimitError:
        return VideoLimitError(f"{self.name}: the clip {what}, over the limit of {self.max_seconds:g} s; cut it "
                               "(faceage video --start/--end works on long videos)", code="clip_too_long")

    def _check(self, frame, count: int, t: float) -> None:
        """The limits, on a decoded frame before it is converted (its real size, whatever was declared)."""
        if self._stop is not None:
            self._stop()
        if self.max_pixels and frame.width * frame.height > self.max_pixels:
            raise VideoLimitError(f"{self.name}: the frame at {t:.2f} s is {frame.width}x{frame.height}, over the "
                                  f"limit of {self.max_pixels:,} pixels (the file declared "
                                  f"{self._declared[0]}x{self._declared[1]}); downscale the video",
                                  code="too_many_pixels")
        if self.max_frames and count > self.max_frames:
            raise VideoLimitError(f"{self.name}: over {self.max_frames:,} frames; cut or subsample the clip",
                                  code="too_many_frames")
        if self.max_seconds is not None and t - self.start > self.max_seconds + 0.5:
            raise self._too_long(f"runs past {t:.1f} s")

    def _peek(self):
        """The first decodable frame (after seeking to ``start``), kept to read size and rotation."""
        self._frames = self._decode()
        return next(self._frames, None)

    def _problem(self, message: str) -> None:
        self.problems.append(message)
        warnings.warn(message, VideoWarning, stacklevel=3)

    def _decode(self):
        av = _av()
        vs = self._stream
        if self.start > 0 and vs.time_base:
            try:
                self._container.seek(int(self.start / vs.time_base), stream=vs, backward=True)
            except av.error.FFmpegError as exc:
                self._problem(f"{self.name}: cannot seek to {self.start} s ({exc}); decoding from the start")
        last = None
        packets = self._container.demux(vs)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as exc:
                self._problem(f"{self.name}: the file is unreadable after {last or 0:.2f} s ({exc}); "
                              "the rest of it is skipped")
                return
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as exc:
                at = float(packet.pts * packet.time_base) if packet.pts is not None and packet.time_base else last
                self._problem(f"{self.name}: a corrupt frame at {at or 0:.2f} s could not be decoded ({exc}); "
                              "skipped")
                continue
            for frame in decoded:
                if frame.is_corrupt:
                    self._problem(f"{self.name}: the frame at {frame.time or 0:.2f} s is corrupt; skipped")
                    continue
                last = frame.time
                yield frame

    def __iter__(self) -> Iterator[Frame]:
        """Frames in order; the file is closed at the end (or when the loop is left)."""
        fps = self.info.fps or 25.0
        index, prev_time, frame, count = None, None, self._first, 0
        try:
            while frame is not None:
                t = None if frame.time is None else frame.time - self._t0
                if t is None or (prev_time is not None and t <= prev_time):
                    # no time stamp, or one that does not advance: one average frame after the previous one
                    t = 0.0 if prev_time is None else prev_time + 1.0 / fps
                if self.end is not None and t >= self.end:
                    return
                if t >= self.start - 0.5 / fps:
                    count += 1
                    self._check(frame, count, t)
                    if index is None:  # after a seek, the frame number is estimated from the time
                        index = int(round(t * fps)) if self.start > 0 else 0
                    else:
                        index += 1
                    prev_time = t
                    image = frame.to_ndarray(format="rgb24")
                    if self.rotation:
                        image = np.ascontiguousarray(np.rot90(image, k=self.rotation // 90))
                    yield Frame(index, float(t), image)
                frame = next(self._frames, None)
        finally:
            self.close()

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
