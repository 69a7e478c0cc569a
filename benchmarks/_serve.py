"""The server under test, shared by serve_load.py and serve_attacks.py: a ``faceage serve`` process,
a free port, its memory, and the model it serves."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> dict[str, float]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return {"rss_mb": out.get("VmRSS", float("nan")), "peak_rss_mb": out.get("VmHWM", float("nan"))}


def pick_model(arg: str | None, tmp: Path) -> tuple[str, str]:
    """(model path, note)."""
    if arg:
        return arg, f"--model {arg}"
    try:
        from faceage.models import locate

        return str(locate()), "the bundled default model"
    except Exception:
        from faceage.face.align import CropSpec
        from faceage.nets.model import create_model
        from faceage.nets.spec import ModelSpec
        from faceage.models.weights import ModelRecord
        from faceage.models.write import save_model

        path = save_model(create_model("ma_sfv2", 0.5), ModelRecord(model=ModelSpec(), input_size=112,
                                                                     crop=CropSpec()), tmp / "tiny.safetensors")
        return str(path), ("an untrained MA-SFV2 0.5x made for this run (the bundled default model was not there "
                           "yet); the cost per request is the same, the ages are meaningless")


class Server:
    def __init__(self, model: str, port: int, threads: int, concurrency: int | None, log: Path,
                 extra: tuple[str, ...] = ()):
        cmd = [sys.executable, "-m", "faceage", "serve", "--model", model, "--port", str(port),
               "--threads", str(threads), "--log-level", "warning", *extra]
        if concurrency:
            cmd += ["--concurrency", str(concurrency)]
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"faceage serve did not start; see {log}")
            time.sleep(0.25)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
