"""``loupe bench dicom``: reading DICOM with de-identification beside bare pydicom, in one run.

- ``dcmread``: ``pydicom.dcmread`` and every frame decoded (what any reader must do at least; colour
  frames left in their stored colour space on both sides);
- ``loupe``: the path of ``loupe dicom deid`` without the disk: Loupe's reader (header checks), every
  frame decoded, Table E.1-1 de-identification, and the file encoded again.

Both read the same bytes from memory, files that cannot be decoded are left out of both, and each
configuration runs several rounds, interleaved; the figure is the best round (the least disturbed).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pydicom
from pydicom.pixels import iter_pixels


def _readable(folder: Path) -> list[bytes]:
    from loupe.domains.medical.deid.batch import check_pixels
    from loupe.domains.medical.dicom_image import read_dataset

    files = []
    for path in sorted(folder.rglob("*.dcm")):
        data = path.read_bytes()
        try:
            check_pixels(read_dataset(data))
        except Exception:  # noqa: BLE001, S112 - not decodable by either configuration: left out
            continue
        files.append(data)
    return files


def _bare(data: bytes) -> None:
    ds = pydicom.dcmread(io.BytesIO(data))
    if "PixelData" in ds:
        for _ in iter_pixels(ds, as_rgb=False):  # decoded as Loupe's check decodes them
            pass


def _loupe(deidentify):  # noqa: ANN001, ANN202 - a Deidentifier; returns the per-file step
    from loupe.domains.medical.deid.batch import check_pixels, encode
    from loupe.domains.medical.dicom_image import read_dataset

    def step(data: bytes) -> None:
        ds = read_dataset(data)
        check_pixels(ds)
        encode(deidentify(ds, in_place=True)[0])
    return step


def _best_rates(steps: list, files: list[bytes], rounds: int) -> list[float]:
    """Files/s of each step, rounds interleaved (A B A B ...) so drift in the machine hits both alike."""
    best = [float("inf")] * len(steps)
    for _ in range(rounds):
        for i, step in enumerate(steps):
            started = time.perf_counter()
            for data in files:
                step(data)
            best[i] = min(best[i], time.perf_counter() - started)
    return [len(files) / seconds for seconds in best]


def run_dicom_bench(folder: Path, rounds: int = 5) -> dict:
    from loupe.domains.medical.deid.deidentify import Deidentifier, DeidOptions

    files = _readable(folder)
    if not files:
        raise ValueError(f"no decodable DICOM files under {folder}")
    loupe_step = _loupe(Deidentifier(DeidOptions(b"benchmark secret")))
    for step in (_bare, loupe_step):  # warm-up: imports, decoder plugins
        step(files[0])
    bare, ours = _best_rates([_bare, loupe_step], files, rounds)
    megabytes = sum(map(len, files)) / 2**20
    return {"benchmark": "dicom", "files": len(files), "megabytes": round(megabytes, 2), "rounds": rounds,
            "results": [{"config": "dcmread", "files_per_s": round(bare, 1)},
                        {"config": "loupe", "files_per_s": round(ours, 1),
                         "steps": "read, decode, de-identify, encode"}],
            "summary": {"deid_throughput_ratio_vs_dcmread": round(ours / bare, 3)}}
