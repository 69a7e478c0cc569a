"""A face detector for tests only (``--detector crash_detector:CrashOnRed``): it kills its own process
with SIGKILL on an image that is entirely pure red, and finds no face anywhere else. It makes a
worker's native crash happen on a known file, deterministically."""
from __future__ import annotations

import os
import signal

import numpy as np


class CrashOnRed:
    def __init__(self, log: str = "") -> None:
        self.log = log  # a file that gets one line per red image seen: how often the crash file was tried

    def detect(self, image: np.ndarray) -> list:
        if image.size and (image[..., 0] == 255).all() and not image[..., 1:].any():
            if self.log:
                with open(self.log, "a") as fh:
                    fh.write(f"{os.getpid()}\n")
            os.kill(os.getpid(), signal.SIGKILL)
        return []
