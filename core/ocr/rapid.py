"""RapidOCR (PP-OCR models in ONNX, shipped inside the ``rapidocr`` wheel): Loupe's default engine."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from PIL import Image

from .base import Box, Line, OCRUnavailable, Word
from .threads import ocr_threads

# Changes to rapidocr's defaults (which `loupe bench ocr` measures beside them).
TUNED: dict[str, Any] = {
    "Global.use_cls": False,  # pages are turned upright before OCR (orientation.py)
    # Detection at a fixed scale: the longer side at DETECTION_SIDE (PageReader enlarges smaller pages
    # to it). The default ("min" side >= 736) runs detection at full size on large scans, which is slow
    # and no more accurate. Recognition still reads its crops from the full-resolution page.
    "Det.limit_type": "max",
    "Det.limit_side_len": 1280,
    "Det.unclip_ratio": 2.0,  # a little more margin round each line: fewer clipped first/last characters
}
DETECTION_SIDE = TUNED["Det.limit_side_len"]


def _box(points: Any) -> Box:
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    return (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))


class RapidOCREngine:
    name = "rapidocr"

    def __init__(self, params: dict[str, Any] | None = None, threads: int | None = None,
                 word_boxes: bool = True) -> None:
        try:
            from rapidocr import RapidOCR
        except ImportError as exc:
            raise OCRUnavailable("RapidOCR is not installed: pip install 'loupe-vlm[ocr]'") from exc
        settings = {"Global.log_level": "warning", **TUNED, **(params or {})}
        threads = threads or ocr_threads()  # one per session in a worker process (threads.py)
        if threads:
            settings["EngineConfig.onnxruntime.intra_op_num_threads"] = threads
            settings["EngineConfig.onnxruntime.inter_op_num_threads"] = 1
        self._engine = RapidOCR(params=settings)
        self._word_boxes = word_boxes
        self._lock = threading.Lock()  # one ONNX session set: calls are serialised

    def read(self, image: Image.Image) -> list[Line]:
        with self._lock:
            out = self._engine(np.asarray(image.convert("RGB"))[:, :, ::-1], return_word_box=self._word_boxes)
        if out.boxes is None or not len(out.boxes):
            return []
        words = out.word_results if self._word_boxes and out.word_results else [()] * len(out.txts)
        lines = []
        for points, text, score, line_words in zip(out.boxes, out.txts, out.scores, words, strict=False):
            parts = tuple(Word(w, _box(b), float(s)) for w, s, b in line_words if w.strip())
            lines.append(Line(text, _box(points), float(score), parts))
        return lines
