"""The PACS part of ``loupe bench sources``: a CT series opened from Orthanc over DICOMweb, as a user does.

A synthetic 500-slice CT of 512 × 512 slices (CT_small's pixels, scaled up, each slice shifted so none is
a copy) is stored once in an Orthanc kept in the work folder. In its own process, the app's service adds
the PACS as a data source and opens the series by reference four times (``open_item``: metadata, the
middle slice fetched, de-identified, checked for text and shown, in a job worker). Each worker's first
open also loads the text-region model, so the first two are cold and the last two warm. Then three slices
are viewed with the medical tab's window tool, each fetched when asked for. Baseline, side by side:
fetching the whole series over WADO-RS (what a copy into Loupe has to read before anything is shown).
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

SIDE = 512


def _series(slices: int) -> list:
    import copy

    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    pixels = np.kron(base.pixel_array, np.ones((SIDE // base.Rows, SIDE // base.Columns), dtype=base.pixel_array.dtype))
    study, series = generate_uid(), generate_uid()
    out = []
    for n in range(slices):
        ds = copy.deepcopy(base)
        ds.PatientName, ds.PatientID, ds.StudyDescription = "BENCH^PACS", "BENCH-500", "loupe bench sources"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.Rows = ds.Columns = SIDE
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.ImagePositionPatient = [0.0, 0.0, n * 1.25]
        ds.InstanceNumber = n + 1
        ds.PixelData = np.roll(pixels, n, axis=0).tobytes()
        out.append(ds)
    return out


def _stored_series(url: str, slices: int) -> tuple[str, str]:
    """The bench's series in the PACS (stored on the first run): its study and series UIDs."""
    from loupe.core.sources.dicomweb import attribute, client

    web = client(url)
    found = web.search_for_series(search_filters={"PatientID": "BENCH-500"},
                                  fields=["NumberOfSeriesRelatedInstances"])
    for attributes in found:
        if attribute(attributes, "NumberOfSeriesRelatedInstances") == str(slices):
            return attribute(attributes, "StudyInstanceUID"), attribute(attributes, "SeriesInstanceUID")
    datasets = _series(slices)
    for start in range(0, slices, 50):
        web.store_instances(datasets[start:start + 50])
    return str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID)


def _open_and_view(url: str, item: str, opens: int, slices: int, out: mp.Queue) -> None:
    try:
        from loupe.apps.service import LoupeService
        from loupe.core.config import Settings
        from loupe.core.jobs import close_pools

        home = Path(tempfile.mkdtemp(prefix="loupe-bench-pacs-"))
        try:
            service = LoupeService.open(Settings(home=home, database_url=None, model="unused"))
            service.jobs.run("bench", "warm up", time.perf_counter)  # a user's first job finds a worker running
            service.store.add_source(None, "pacs", "dicomweb", url, "medical", ("role:user",))
            user = service.store.add_user("radiologist", "radiologist-password-1", "user")
            times = []
            for _ in range(opens):  # each worker's first open loads its text-region model: the first two are cold
                started = time.perf_counter()
                case_id = service.open_item(user, "pacs", item)
                times.append(time.perf_counter() - started)
            views = []
            for number in (1, slices // 2, slices):  # first, middle and last slice, as the viewer reads them
                started = time.perf_counter()
                facts, data = service.view_case(user, case_id, "stack_frame", (number - 1,))
                views.append(time.perf_counter() - started)
                assert len(data) >= facts["rows"] * facts["columns"]
            out.put({"opens_s": [round(v, 2) for v in times], "first_slice_cold_s": round(times[0], 2),
                     "first_slice_s": round(statistics.median(times[2:] or times), 2),
                     "view_slice_s": [round(v, 2) for v in views],
                     "view_slice_median_s": round(statistics.median(views), 2)})
        finally:
            close_pools()
            shutil.rmtree(home, ignore_errors=True)
    except Exception as exc:  # noqa: BLE001 - reported in the JSON
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def _fetch_whole_series(url: str, study: str, series: str) -> dict:
    from loupe.core.sources.dicomweb import client

    started = time.perf_counter()
    count = sum(1 for _ in client(url).iter_series(study, series))
    return {"whole_series_fetch_s": round(time.perf_counter() - started, 2), "instances": count}


def run_pacs_bench(workdir: Path, slices: int = 500, opens: int = 4) -> dict:
    from .bench_process import in_own_process
    from .nginx_site import free_port
    from .orthanc_server import instances_served, running_orthanc

    with running_orthanc(workdir / "orthanc", free_port(), verbose=True) as url:
        study, series = _stored_series(url, slices)
        opened = in_own_process(_open_and_view, url, f"{study}/{series}", opens, slices)
        fetched = len(instances_served(workdir / "orthanc"))  # by the open and the three views
        baseline = _fetch_whole_series(url, study, series)
    result = opened | baseline | {"slices": slices, "slice_pixels": f"{SIDE} x {SIDE}",
                                  "instances_fetched_by_opens_and_3_views": fetched}
    if "error" not in opened:
        result["first_slice_vs_whole_series"] = round(opened["first_slice_s"] / baseline["whole_series_fetch_s"], 3)
    return result
