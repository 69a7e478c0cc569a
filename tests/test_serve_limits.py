"""What a request may cost the server, bounded everywhere: slow bodies hold connections, not slots;
video has its own slot, a wall-clock budget, stops when its client goes away or the server shuts
down; every decoded frame's size and the frame count are checked as frames arrive (a stream that
switches to 4K mid-way, a Matroska file whose frames are all stamped 0); SIGTERM drains the server."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("av")

import anyio  # noqa: E402
import httpx  # noqa: E402

from scripts import hostile_videos as hv  # noqa: E402

from faceage.video.io import VideoLimitError, VideoReader  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"
MB_ = 1024 * 1024


def _png(side: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((side, side, 3), 128, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def estimator(small_model):
    from faceage.estimator import AgeEstimator

    return AgeEstimator(small_model)


def _app(estimator, **kw):
    from faceage.serve.app import create_app

    return create_app(estimator, concurrency=1, warmup=False, **kw)


# ----------------------------------------------------------------------------- frames checked as they arrive
def test_frames_stamped_zero_get_advancing_times_and_the_limits_apply(tmp_path):
    clip = hv.zero_time_mkv(tmp_path / "zero.mkv", frames=200)
    times = [f.time for f in VideoReader(clip)]
    assert len(times) == 200 and times[:3] == pytest.approx([0.0, 0.04, 0.08])  # one average frame apart
    with pytest.raises(VideoLimitError, match="over 100 frames") as err:
        list(VideoReader(clip, max_frames=100))
    assert err.value.code == "too_many_frames"
    with pytest.raises(VideoLimitError, match=r"runs past 2.5 s, over the limit of 2 s") as err:
        list(VideoReader(clip, max_seconds=2))
    assert err.value.code == "clip_too_long"


def test_a_stream_that_grows_mid_way_stops_at_its_first_large_frame(tmp_path):
    clip = hv.resolution_switch_mkv(tmp_path / "switch.mkv", large=(1280, 720), n_small=10, n_large=5)
    reader = VideoReader(clip, max_pixels=64 * 64 * 4)
    assert (reader.info.width, reader.info.height) == (64, 64)  # what the file declares
    seen = []
    with pytest.raises(VideoLimitError, match=r"the frame at 0.40 s is 1280x720, over the limit of 16,384 pixels "
                                              r"\(the file declared 64x64\)") as err:
        for frame in reader:
            seen.append(frame.image.shape)
    assert err.value.code == "too_many_pixels" and seen == [(64, 64, 3)] * 10


def test_stop_is_asked_before_every_frame(tmp_path):
    clip = hv.zero_time_mkv(tmp_path / "zero.mkv", frames=30)
    calls = []

    def stop():
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        list(VideoReader(clip, stop=stop))
    assert len(calls) == 5


def test_the_video_route_refuses_hostile_clips(estimator, tmp_path):
    from fastapi.testclient import TestClient

    with TestClient(_app(estimator), raise_server_exceptions=False) as client:
        r = client.post("/v1/estimate-video", content=hv.zero_time_mkv(tmp_path / "z.mkv", frames=1600).read_bytes())
        assert (r.status_code, r.json()["code"]) == (413, "clip_too_long"), r.text
        r = client.post("/v1/estimate-video", content=hv.resolution_switch_mkv(
            tmp_path / "s.mkv", large=(3840, 2160), n_small=5, n_large=2).read_bytes())
        assert (r.status_code, r.json()["code"]) == (413, "too_many_pixels"), r.text
        assert "3840x2160" in r.json()["detail"]
    with TestClient(_app(estimator, video_timeout=0.001), raise_server_exceptions=False) as client:
        r = client.post("/v1/estimate-video", content=hv.zero_time_mkv(tmp_path / "z2.mkv", frames=50).read_bytes())
        assert (r.status_code, r.json()["code"]) == (413, "analysis_timeout"), r.text


# ----------------------------------------------------------------------------- slots
def test_the_body_budget_bounds_bodies_in_flight(estimator):
    from fastapi.testclient import TestClient

    with TestClient(_app(estimator, max_bodies=1000), raise_server_exceptions=False) as client:
        r = client.post("/v1/estimate", content=b"\0" * 5000)
        assert (r.status_code, r.json()["code"]) == (503, "busy") and "receiving other photo uploads" in r.json()["detail"]


@pytest.fixture
def held_video(monkeypatch):
    """analyse_clip replaced by one that runs until its WorkStop stops it (or ``release`` is set)."""
    import faceage.serve.video as sv

    entered, release, ended = threading.Event(), threading.Event(), []

    def analyse_clip(est, data, *, stop, **kw):
        entered.set()
        try:
            while not release.wait(0.01):
                stop.check()
            return {"tracks": []}
        except Exception as exc:
            ended.append(exc)
            raise

    monkeypatch.setattr(sv, "analyse_clip", analyse_clip)
    return entered, release, ended


def test_a_video_never_takes_an_image_slot(estimator, held_video):
    from fastapi.testclient import TestClient

    entered, release, _ = held_video
    with TestClient(_app(estimator, queue_timeout=1), raise_server_exceptions=False) as client:
        video: list = []
        t = threading.Thread(target=lambda: video.append(client.post("/v1/estimate-video", content=b"x" * 100)))
        t.start()
        assert entered.wait(30)
        r = client.post("/v1/estimate", content=_png())  # one image slot; the clip is in its own
        assert r.status_code == 200 and not video
        second = client.post("/v1/estimate-video", content=b"x" * 100)  # the one video slot is taken
        release.set()
        t.join()
    assert video[0].status_code == 200
    assert (second.status_code, second.json()["code"]) == (503, "busy")
    assert "1 video analyses running" in second.json()["detail"]


def test_a_video_stops_when_its_client_goes_away(estimator, held_video):
    entered, release, ended = held_video
    app = _app(estimator)
    sent: list = []

    async def main():
        messages = iter([{"type": "http.request", "body": b"x" * 100, "more_body": False}])

        async def receive():
            msg = next(messages, None)
            if msg is not None:
                return msg
            if entered.is_set():
                return {"type": "http.disconnect"}  # the client is gone once the analysis runs
            await anyio.sleep_forever()  # nothing yet (the server's check gives up at once)

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/estimate-video", "raw_path": b"/v1/estimate-video",
                 "query_string": b"", "headers": [(b"host", b"127.0.0.1"), (b"content-length", b"100")],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "root_path": ""}
        await app(scope, receive, send)

    anyio.run(main)
    assert ended and getattr(ended[0], "code", None) == "disconnected"
    assert sent[0]["status"] == 400 and not release.is_set()


def test_shutdown_stops_the_clip_and_refuses_queued_work(estimator, held_video):
    from fastapi.testclient import TestClient

    entered, release, ended = held_video
    app = _app(estimator)
    with TestClient(app, raise_server_exceptions=False) as client:
        video: list = []
        t = threading.Thread(target=lambda: video.append(client.post("/v1/estimate-video", content=b"x" * 100)))
        t.start()
        assert entered.wait(30)
        app.state.shutdown.set()  # what GuardedH11Protocol.shutdown() does on SIGTERM (begin_shutdown)
        t.join()
        assert (video[0].status_code, video[0].json()["code"]) == (503, "shutting_down")
        r = client.post("/v1/estimate", content=_png())
        assert (r.status_code, r.json()["code"]) == (503, "shutting_down")
    assert not release.is_set()


def test_a_small_photo_never_waits_behind_large_ones(estimator, monkeypatch):
    """Portraits once waited 5.8 s (p50) behind 12 MP photos in one first-come queue; now they have their own
    slots, and one client may have at most 2 large photos analysed or waiting."""
    from fastapi.testclient import TestClient

    import faceage.serve.app as sa

    entered, release = threading.Semaphore(0), threading.Event()
    real = sa.decode_opened

    def decode(img, **kw):  # a large photo's analysis lasts until the test releases it
        if img.width * img.height > 64 * 64:
            entered.release()
            assert release.wait(60)
        return real(img, **kw)

    monkeypatch.setattr(sa, "decode_opened", decode)
    app = sa.create_app(estimator, concurrency=2, warmup=False, light_pixels=64 * 64, queue_timeout=30)
    large: list = []
    with TestClient(app, raise_server_exceptions=False) as client:
        threads = [threading.Thread(target=lambda: large.append(client.post("/v1/estimate", content=_png(200))))
                   for _ in range(2)]
        for t in threads:
            t.start()
        assert entered.acquire(timeout=30)  # one large photo runs (1 heavy slot), the other waits for it
        t0 = time.perf_counter()
        small = client.post("/v1/estimate", content=_png(64))
        assert small.status_code == 200 and not large
        assert time.perf_counter() - t0 < 10  # answered while both large ones are held (they hold for 60 s)
        third = client.post("/v1/estimate", content=_png(200))
        assert (third.status_code, third.json()["code"]) == (503, "busy")
        assert "this client already has 2 photos over 0.004096 megapixels" in third.json()["detail"]
        release.set()
        for t in threads:
            t.join()
    assert [r.status_code for r in large] == [200, 200]
    assert app.state.summary["limits"]["large_photo_concurrency"] == 1


async def _post(app, path: str, chunks: list[bytes], gate: "anyio.Event | None" = None, query: bytes = b"") -> dict:
    """POST ``chunks`` straight to the ASGI app (the last one only once ``gate`` is set): a client sending its
    body slowly, which TestClient cannot be (it reads a streamed body whole first). Returns status and JSON."""
    sent: list = []
    body = iter(chunks)

    async def receive():
        chunk = next(body, None)
        if chunk is None:
            await anyio.sleep_forever()
        rest = len(chunks) > 1 and chunk is not chunks[-1]
        if not rest and gate is not None:
            await gate.wait()
        return {"type": "http.request", "body": chunk, "more_body": rest}

    async def send(message):
        sent.append(message)

    size = str(sum(map(len, chunks))).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query,
             "headers": [(b"host", b"127.0.0.1"), (b"content-length", size)],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "root_path": ""}
    await app(scope, receive, send)
    import json

    return {"status": sent[0]["status"], "json": json.loads(b"".join(m.get("body", b"") for m in sent[1:]) or b"null")}


def test_video_bodies_and_frames_never_take_what_images_need(estimator, held_video):
    """Slow video senders once filled the server-wide body budget (every upload got 503 for 30 s), and a clip
    at every=60 reserved 401 MB of the images' 512 MB decoded budget (a portrait took 19.5 s)."""
    entered, release, _ = held_video
    app = _app(estimator, max_bodies=MB_, max_decoded=8 * MB_)  # images: 1 MB of bodies, 8 MB decoded
    results: dict = {}

    async def main():
        gate = anyio.Event()

        async def video():
            results["video"] = await _post(app, "/v1/estimate-video", [b"\0" * (3 * MB_), b"\0" * 100], gate,
                                           b"every=60")

        async with anyio.create_task_group() as group:
            group.start_soon(video)
            await anyio.sleep(0.5)  # the clip's first 3 MB are held by the video route, its client still sending
            results["while_sending"] = await _post(app, "/v1/estimate", [_png()])
            gate.set()
            while not entered.is_set():  # the clip's analysis runs with (60 + 4) full-HD frames reserved...
                await anyio.sleep(0.05)
            results["while_analysing"] = await _post(app, "/v1/estimate", [_png()])  # ...from its own budget
            release.set()

    anyio.run(main)
    assert results["while_sending"]["status"] == 200, results
    assert results["while_analysing"]["status"] == 200, results
    assert results["video"]["status"] == 200, results
    limits = app.state.summary["limits"]
    assert limits["video"]["max_decoded_bytes"] > limits["max_decoded_bytes"]


def test_one_client_cannot_take_a_whole_body_budget():
    from faceage.serve.errors import ApiError
    from faceage.serve.limits import BodyBudget

    budget = BodyBudget(100, per_client=40, what="video uploads")
    with budget.hold("a") as one, budget.hold("a") as two, budget.hold("b") as other:
        one.add(30)
        with pytest.raises(ApiError, match="this client is already sending video uploads"):
            two.add(20)
        other.add(40)
        assert budget.used == 70 and budget.by_client == {"a": 30, "b": 40}
    assert budget.used == 0 and not budget.by_client


@pytest.mark.slow
def test_sigterm_ends_a_real_server_with_a_clip_in_flight(small_model, tmp_path):
    """``faceage serve`` analysing a long clip: SIGTERM answers it 503 and the process exits."""
    from faceage.video.writer import VideoWriter

    clip = tmp_path / "long.mp4"
    with VideoWriter(clip, fps=25) as w:
        for i in range(1500):  # 60 s
            w.write(hv.pattern(i, 320, 240), i / 25)
    with socket_port() as port:
        pass
    proc = subprocess.Popen([sys.executable, "-m", "faceage", "serve", "--model", str(small_model), "--port",
                             str(port), "--log-level", "warning"], env={**os.environ, "PYTHONPATH": str(SRC)})
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        answer: list = []
        t = threading.Thread(target=lambda: answer.append(
            httpx.post(f"{base}/v1/estimate-video?every=1", content=clip.read_bytes(), timeout=300)))
        t.start()
        time.sleep(2)  # the analysis is under way
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        t.join(60)
        assert answer and (answer[0].status_code, answer[0].json()["code"]) == (503, "shutting_down")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class socket_port:
    def __enter__(self) -> int:
        import socket

        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        return self.s.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.s.close()
