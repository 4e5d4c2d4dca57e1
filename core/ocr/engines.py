"""OCR engines by name. RapidOCR is the default; Tesseract and PaddleOCR are optional."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from PIL import Image

from .base import Line, OCREngine, OCRUnavailable, Word, union

ENGINES = ("rapidocr", "tesseract", "paddleocr")


class TesseractEngine:
    """Tesseract 5 through its command line (Debian package ``tesseract-ocr``), TSV output."""

    name = "tesseract"

    def __init__(self, language: str = "eng") -> None:
        self.binary = shutil.which("tesseract")
        if self.binary is None:
            raise OCRUnavailable("Tesseract is not installed: apt-get install tesseract-ocr")
        self.language = language

    def read(self, image: Image.Image) -> list[Line]:
        import io

        png = io.BytesIO()
        image.convert("RGB").save(png, format="PNG")
        done = subprocess.run([self.binary, "stdin", "stdout", "-l", self.language, "tsv"], input=png.getvalue(),
                              capture_output=True, check=False, env={**os.environ, "OMP_THREAD_LIMIT": "1"})
        if done.returncode != 0:
            raise OCRUnavailable(f"Tesseract failed: {done.stderr.decode(errors='replace').strip()[:200]}")
        groups: dict[tuple[str, ...], list[Word]] = {}
        for row in done.stdout.decode(errors="replace").splitlines()[1:]:
            cols = row.split("\t")
            if len(cols) < 12 or not cols[11].strip() or float(cols[10]) < 0:
                continue
            left, top, width, height = (float(v) for v in cols[6:10])
            word = Word(cols[11].strip(), (left, top, left + width, top + height), float(cols[10]) / 100)
            groups.setdefault(tuple(cols[1:5]), []).append(word)  # page, block, paragraph, line
        return [Line(" ".join(w.text for w in words), union([w.box for w in words]),
                     sum(w.confidence for w in words) / len(words), tuple(words)) for words in groups.values()]


class PaddleOCREngine:
    """PaddleOCR 3 with model folders already on disk (it downloads models otherwise, which Loupe never
    does at run time): set LOUPE_PADDLEOCR_DET_DIR and LOUPE_PADDLEOCR_REC_DIR."""

    name = "paddleocr"

    def __init__(self) -> None:
        det, rec = os.environ.get("LOUPE_PADDLEOCR_DET_DIR"), os.environ.get("LOUPE_PADDLEOCR_REC_DIR")
        if not det or not rec or not Path(det).is_dir() or not Path(rec).is_dir():
            raise OCRUnavailable("PaddleOCR needs its models on disk: download PP-OCR detection and recognition "
                                 "model folders once, then set LOUPE_PADDLEOCR_DET_DIR and LOUPE_PADDLEOCR_REC_DIR")
        try:
            from paddleocr import PaddleOCR
        except ImportError as exc:
            raise OCRUnavailable("PaddleOCR is not installed: pip install paddleocr paddlepaddle") from exc
        self._ocr = PaddleOCR(text_detection_model_dir=det, text_recognition_model_dir=rec,
                              use_doc_orientation_classify=False, use_doc_unwarping=False,
                              use_textline_orientation=False)

    def read(self, image: Image.Image) -> list[Line]:
        import numpy as np

        lines = []
        for result in self._ocr.predict(np.asarray(image.convert("RGB"))[:, :, ::-1]):
            for text, score, box in zip(result["rec_texts"], result["rec_scores"], result["rec_boxes"], strict=False):
                x0, y0, x1, y1 = (float(v) for v in box)
                lines.append(Line(text, (x0, y0, x1, y1), float(score)))
        return lines


def make_engine(name: str = "rapidocr") -> OCREngine:
    if name == "rapidocr":
        from .rapid import RapidOCREngine

        return RapidOCREngine()
    if name == "tesseract":
        return TesseractEngine()
    if name == "paddleocr":
        return PaddleOCREngine()
    raise OCRUnavailable(f"unknown OCR engine {name!r}; choose one of {', '.join(ENGINES)}")
