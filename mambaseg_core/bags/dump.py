"""Overlay frames of `mambaseg-bag segment` written as PNG files and/or an MP4 video (OpenCV)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mambaseg_core.bags.reader import BagImage
from mambaseg_core.pipeline import SegmentationResult


class OverlayDump:
    """A `segment_bag` result callback: `png_dir/overlay_%06d.png` and/or `mp4` at `fps` (None: the rate of
    the first two frames' stamps). Call `close()` at the end (finalises the video)."""

    def __init__(self, png_dir: str | Path | None = None, mp4: str | Path | None = None, fps: float | None = None):
        self.png_dir = Path(png_dir) if png_dir else None
        self.mp4 = Path(mp4) if mp4 else None
        self.fps = fps
        self.frames = 0
        self._video: cv2.VideoWriter | None = None
        self._first: tuple[int, np.ndarray] | None = None  # (stamp ns, BGR frame) held until the rate is known
        if self.png_dir is not None:
            self.png_dir.mkdir(parents=True, exist_ok=True)
        if self.mp4 is not None:
            self.mp4.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, image: BagImage, result: SegmentationResult) -> None:
        bgr = cv2.cvtColor(result.overlay, cv2.COLOR_RGB2BGR)
        if self.png_dir is not None:
            path = self.png_dir / f"overlay_{self.frames:06d}.png"
            if not cv2.imwrite(str(path), bgr):
                raise OSError(f"cannot write {path}")
        if self.mp4 is not None:
            self._add_video_frame(image.stamp_ns, bgr)
        self.frames += 1

    def _add_video_frame(self, stamp_ns: int, bgr: np.ndarray) -> None:
        if self._video is None:
            if self.fps is None and self._first is None:
                self._first = (stamp_ns, bgr)
                return
            fps = self.fps
            if fps is None:
                assert self._first is not None
                fps = 1e9 / max(stamp_ns - self._first[0], 1)
            self._open(bgr.shape[1], bgr.shape[0], fps)
        assert self._video is not None
        self._video.write(bgr)

    def _open(self, width: int, height: int, fps: float) -> None:
        self._video = cv2.VideoWriter(str(self.mp4), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
        if not self._video.isOpened():
            raise OSError(f"cannot open {self.mp4} for writing (OpenCV mp4v)")
        if self._first is not None:
            self._video.write(self._first[1])
            self._first = None

    def close(self) -> None:
        if self._first is not None:  # a single frame: write it at the given rate or 1 Hz
            bgr = self._first[1]
            self._open(bgr.shape[1], bgr.shape[0], self.fps or 1.0)
        if self._video is not None:
            self._video.release()
            self._video = None
