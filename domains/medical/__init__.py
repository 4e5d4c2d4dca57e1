"""The medical domain: DICOM images and series, de-identified before storage, looked at with a VLM.

Uploads are single DICOM files or a zip of a series. Nothing of the original file is kept: its header
is de-identified (PS3.15 Basic Profile, ``deid/``) before any byte is stored, and text burned into the
pixels is flagged for the user to check.
"""

from __future__ import annotations

import functools
import io
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image

from loupe.core.errors import InputRejected
from loupe.core.ingest_io import read_whole
from loupe.core.plugins import Budgets, DomainTab, IngestedAsset, VisualContext

from . import stack
from .deid.batch import encode
from .deid.deidentify import Deidentifier, DeidOptions
from .dicom_image import frame_values, read_dataset
from .ingest import evenly_spaced, ingest_dicom, png_image
from .pacs import fetch_instance, series_frames, series_of
from .pacs import instances as pacs_instances
from .slides import ingest_vendor_slide
from .viewer import studies_html
from .windowing import ct_channels, display

PROMPTS = ("Describe the findings.", "Is anything abnormal? Where?", "Write a report with findings and an impression.")
CHEST = ("Describe the findings on this chest radiograph.", "Is there a pleural effusion or a pneumothorax?",
         "Write a report with findings and an impression.", "Compare the left and right lungs.")
# What a reader of each modality asks first (Modality codes, PS3.3 C.7.3.1.1.1); a radiograph of another
# body part than the chest gets the general radiograph questions.
MODALITY_PROMPTS = {
    "CT": ("Describe the findings on this CT.", "Is there any haemorrhage, mass or fracture?",
           "Which slices show the main finding?", "Write a report with findings and an impression."),
    "MR": ("Describe the findings on this MR.", "Is there any mass or abnormal signal?",
           "Write a report with findings and an impression."),
    "US": ("Describe this ultrasound.", "Which organ or structure is shown?", "Is there a fluid collection or a mass?"),
    "SM": ("Describe the tissue.", "Where is the tumour, if there is one?", "Which regions look abnormal, and why?",
           "Is there necrosis or inflammation?"),
    "XR": ("Describe the findings on this radiograph.", "Is there a fracture or a dislocation?",
           "Write a report with findings and an impression."),
}
PROMPT_FACTS = ("Modality", "BodyPartExamined", "ViewPosition", "ImageLaterality", "SeriesDescription")
SLICES_PER_QUESTION = 3  # evenly spaced through a series: what the model sees of a volume


@functools.cache
def _text_finder() -> Callable[[Image.Image], list]:
    from loupe.core.ocr.regions import find_text_regions

    return find_text_regions


class MedicalDomain:
    name = "medical"
    title = "Medical"
    accepts = (".dcm", ".dicom", ".zip", ".svs", ".ndpi", ".scn", ".tif", ".tiff")
    system_prompt = ("You assist a clinician reading medical images. Describe what is visible, say where "
                     "(side, region, slice), say how sure you are, and never give a diagnosis as certain: the "
                     "clinician decides.")
    default_detail = "standard"
    export_formats = {"zip": "application/zip"}
    # Slides are read and re-written in parts (up to LOUPE_MAX_STREAMED_BYTES); DICOM is read whole, within
    # LOUPE_MAX_UPLOAD_BYTES, checked from the spooled file's size before it is read.
    upload_budget = "max_stream_bytes"
    upload_note = ("a whole slide (read in parts), or a DICOM file or zip of a series (read whole: up to "
                   "LOUPE_MAX_UPLOAD_BYTES, 50 MiB by default). Everything is de-identified before it is kept "
                   "(DICOM PS3.15 Basic Profile; slides re-written without their labels); the file name is not "
                   "kept.")

    def __init__(self) -> None:
        self._home: Path | None = None

    def configure(self, settings: Any) -> None:  # noqa: ANN401 - loupe.core.config.Settings
        """Called once by the app: the installation's folder holds the de-identification key."""
        self._home = settings.home

    def ingest(self, source: Path | BinaryIO, limits: Budgets,
               progress: Callable[[int, int], None] | None = None) -> list[IngestedAsset]:
        secret = self._secret()
        slide = ingest_vendor_slide(source, limits, progress)  # SVS, NDPI...: re-written without labels, in parts
        if slide is not None:
            return slide
        return ingest_dicom(read_whole(source, limits), limits, secret, progress, _text_finder())

    def open_item(self, location: str, limits: Budgets,
                  progress: Callable[[int, int], None] | None = None) -> list[IngestedAsset]:
        """By reference: a series in a PACS (a dicomweb source), its slices fetched as they are viewed; a
        vendor slide in a folder source, its tiles read where it lies."""
        from loupe.core.pyramid.sources import SLIDE_SUFFIXES
        from loupe.core.sources.dicomweb import is_series_location

        from .pacs import open_series
        from .slides import open_slide_item

        if is_series_location(location):
            return open_series(location, limits, self._secret(), progress, _text_finder())
        if not location.startswith("/vsi") and Path(location).suffix.lower() in SLIDE_SUFFIXES:
            return open_slide_item(location, limits)
        raise InputRejected("The medical tab opens series from a PACS (a dicomweb source) and whole slides from a "
                            "folder source; upload other files.")

    def _secret(self) -> bytes:
        from loupe.core.secrets import installation_secret

        if self._home is None:
            raise RuntimeError("the medical domain needs configure(settings) first")
        return installation_secret(self._home, "deid")

    def context(self, assets: Sequence[IngestedAsset], question: str) -> VisualContext:
        levels = [a for a in assets if a.meta.get("kind") == "slide_level"]
        if levels:  # a whole slide: the question steers which tiles the model reads (loupe.core.pyramid)
            from loupe.core.pyramid.answer import PyramidRequest

            paths = tuple(a.path for a in levels)
            meta = levels[0].meta
            text = f"A whole-slide image, {meta['width']:,} × {meta['height']:,} px" + (
                f" at {meta['microns_per_pixel']:.3g} µm per pixel." if meta.get("microns_per_pixel") else ".")
            return VisualContext(images=[], extra_text=text,
                                 pyramid=PyramidRequest(paths if len(paths) > 1 else paths[0], 10**8))
        series = series_of(assets)
        if series is not None:  # in a PACS: the slices asked about are fetched now
            return self._series_context(series)
        views = [a for a in assets if a.meta.get("kind") == "view"]
        if not views:
            raise InputRejected("This case holds a structured report and no image: check its text in the report "
                                "panel, or add the study's images as a new case.")
        chosen = [views[i] for i in evenly_spaced(len(views), SLICES_PER_QUESTION)]
        first = chosen[0].meta if chosen else {}
        if first.get("Modality") == "CT":  # lung, soft-tissue and bone windows in the three channels
            images = [_ct_view(assets, view.meta) for view in chosen]
            windows = "each image holds three CT windows: red lung, green mediastinum, blue bone"
        else:
            images = [png_image(view) for view in chosen]
            windows = "shown with the file's own window"
        where = [(v.meta["series_position"], v.meta["slices"], v.meta["frame"], v.meta["frames"]) for v in chosen]
        return _context(images, first, where, windows)

    def _series_context(self, series: IngestedAsset) -> VisualContext:
        frames = series_frames(series)
        limits = Budgets.from_env()
        ct = series.meta.get("Modality") == "CT"
        images, where = [], []
        for index in evenly_spaced(len(frames), SLICES_PER_QUESTION):
            slice_index, uid, frame, count = frames[index]
            ds = fetch_instance(str(series.path), uid, limits)
            values = frame_values(ds, frame)
            images.append(ct_channels(values) if ct else display(ds, values))
            where.append((slice_index, series.meta["slices"], frame, count))
        windows = ("each image holds three CT windows: red lung, green mediastinum, blue bone" if ct
                   else "shown with the file's own window")
        return _context(images, series.meta, where, windows)

    def cite(self, assets: Sequence[IngestedAsset], answer: str, context_meta: dict) -> list[dict]:
        """For a slide, the tiles the answer was read from; for a series in a PACS, the slices it read (sent
        back with it as the report's image references); other images are not cited yet."""
        series = series_of(assets)
        if series is not None:
            return [{"slice": s, "text": f"slice {s + 1} of {series.meta['slices']}"}
                    for s in context_meta.get("views_read", [])]
        out = []
        for tile in context_meta.get("focus", {}).get("tiles", []):
            x0, y0, x1, y1 = tile["box"]
            scale = "full resolution" if tile["level"] == 0 else f"1:{2 ** tile['level']}"
            out.append({"box": tile["box"], "level": tile["level"], "score": tile["score"],
                        "text": f"x {x0:,}–{x1:,}, y {y0:,}–{y1:,} px · {scale} · relevance {tile['score']:.1f}"})
        return out

    def export(self, assets: Sequence[IngestedAsset], name: str, answers: Sequence[dict] = ()) -> bytes:
        if name != "zip":
            raise KeyError(name)
        out = io.BytesIO()
        written = 0
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for n, data in enumerate(self._dicom_files(assets)):
                archive.writestr(f"image_{n + 1:04d}.dcm", data)
                written += 1
            for asset in (a for a in assets if a.meta.get("kind") == "sr_text"):
                archive.writestr("structured_report.txt", asset.data)  # cleaned as stored
                written += 1
        if not written:  # never an empty archive that looks like a download
            raise InputRejected("This case has no DICOM file to export: a whole slide is read where it is kept "
                                "(its tiles, on demand), not exported.")
        return out.getvalue()

    def send_to_source(self, assets: Sequence[IngestedAsset], answers: Sequence[dict],
                       findings: Sequence[dict]) -> str:
        """A case opened from a PACS: its answers (with the slices they read) and report-check findings
        stored there as a Comprehensive SR in the source study. Returns what the user is told."""
        from .pacs_report import send_report

        series = series_of(assets)
        if series is None:
            raise InputRejected("Only a case opened from a PACS can be sent back to it.")
        sent = send_report(series, answers, findings, self._observer_uid())
        return (f"Sent to the PACS: a structured report (Comprehensive SR, series 'Loupe answers') with "
                f"{sent['answers']} answer(s) and {sent['findings']} report-check finding(s), in the source study.")

    def _observer_uid(self) -> str:
        """This installation as a DICOM device: a UID derived from its secret, the same on every report."""
        from pydicom.uid import generate_uid

        return generate_uid(entropy_srcs=[self._secret().hex(), "loupe-device"])

    def _dicom_files(self, assets: Sequence[IngestedAsset]) -> Iterator[bytes]:
        """The case's DICOM files de-identified: as stored, or (a series in a PACS) fetched one at a time and
        de-identified exactly as an upload is."""
        series = series_of(assets)
        if series is None:
            # a slide's levels are lazy (read in place, never loaded whole): not exported
            yield from (a.data for a in assets if a.media_type == "application/dicom" and a.data)
            return
        deidentify = Deidentifier(DeidOptions(self._secret()))
        for ds in pacs_instances(series, Budgets.from_env()):
            yield encode(deidentify(ds, in_place=True)[0])

    # The DICOM viewer's reads (core.plugins.frame_stack_element), in workers: see stack.py.
    def stack_info(self, assets: Sequence[IngestedAsset]) -> dict:
        return stack.stack_info(assets)

    def stack_frame(self, assets: Sequence[IngestedAsset], number: int) -> tuple[dict, bytes]:
        return stack.stack_frame(assets, number)

    def stack_tags(self, assets: Sequence[IngestedAsset], number: int) -> dict:
        """A stored file's header is de-identified already; one from a PACS is de-identified here, as an upload."""
        return stack.stack_tags(assets, number, Deidentifier(DeidOptions(self._secret())))

    def build_tab(self, tab: DomainTab) -> None:
        from .pacs_panel import add_pacs_panel
        from .report_panel import add_report_panel  # Gradio is loaded only where a tab is built

        tab.set_viewer(studies_html)
        tab.add_prompts(PROMPTS, prompts_for)
        add_report_panel(tab)
        add_pacs_panel(tab)


def prompts_for(assets: Sequence[IngestedAsset]) -> Sequence[str]:
    """The ready-made questions that fit a case: by its images' modality (a chest radiograph's, a CT's, a
    slide's...), the general ones otherwise."""
    meta = next((a.meta for a in assets if a.meta.get("kind") in ("view", "slide_level", "dicom_series")), {})
    modality = str(meta.get("Modality") or "").upper()
    if modality in ("CR", "DX", "RG", "XR", "DR"):
        body = str(meta.get("BodyPartExamined") or "CHEST").upper()
        return CHEST if "CHEST" in body or "THORAX" in body or "LUNG" in body else MODALITY_PROMPTS["XR"]
    return MODALITY_PROMPTS.get(modality, PROMPTS)


def _context(images: list[Image.Image], facts_of: dict, where: list[tuple[int, int, int, int]],
             windows: str) -> VisualContext:
    """The prompt for slices ``where`` = (slice, slices, frame, frames) shown as ``images``."""
    facts = ", ".join(f"{k}: {v}" for k, v in facts_of.items() if k in PROMPT_FACTS)
    read = ", ".join(f"slice {s + 1}/{n}" + (f" frame {f + 1}/{m}" if m > 1 else "") for s, n, f, m in where)
    text = f"Study: {facts or 'no header facts'}. Images: {read}; {windows}.\n\nQuestion:"
    return VisualContext(images=images, extra_text=text, meta={"views_read": [s for s, *_ in where]})


def _ct_view(assets: Sequence[IngestedAsset], view: dict) -> Image.Image:
    dicom = next(a for a in assets if a.meta.get("kind") == "dicom"
                 and a.meta.get("series_position") == view["series_position"])
    return ct_channels(frame_values(read_dataset(dicom.data), view["frame"]))
