"""The domain plugin contract and its discovery through the entry-point group ``loupe.domains``.

The core never imports a domain: apps and the CLI ask this registry.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from PIL import Image

from .budgets import Budgets

ENTRY_POINT_GROUP = "loupe.domains"


@dataclass
class IngestedAsset:
    """One case asset produced from an upload: the bytes to store plus PHI-free metadata."""

    data: bytes
    media_type: str
    width: int | None = None
    height: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # Where the stored bytes are, once stored. Assets whose ``meta["lazy"]`` is true (giant images) come
    # back from the store with empty ``data`` and this path: read them in parts, never whole. An item read
    # by reference from a data source has its location there instead (a path, or a GDAL /vsicurl/ address).
    path: Path | str | None = None
    # For an item read by reference: (data source name, item path); nothing is stored but the reference.
    reference: tuple[str, str] | None = None
    # A result left in a file (``core.ingest_io.file_asset``): ``path``'s sha256. The store moves that file
    # into place; ``data`` stays empty.
    digest: str | None = None

    def with_bytes(self) -> IngestedAsset:
        """This asset with its bytes, read from ``path`` when they were left behind (never a lazy one's, nor
        one read by reference)."""
        if self.data or self.path is None or self.meta.get("lazy") or self.meta.get("by_reference"):
            return self
        return replace(self, data=Path(self.path).read_bytes())


@dataclass
class VisualContext:
    """What the model sees for one question: images (or tiles) and optional extra prompt text."""

    images: list[Image.Image]
    extra_text: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    # OCR text with boxes on a 0-1000 page grid. A model with an OCR query module reads it as a few
    # learned tokens and is given ``query_text`` instead of ``extra_text`` (which spells the text out).
    layout: list[tuple[str, tuple[int, int, int, int]]] = field(default_factory=list)
    query_text: str = ""
    # A giant image to look into: the app runs question-guided focus with its model and puts the
    # thumbnail and the chosen tiles in ``images`` (loupe.core.pyramid.answer).
    pyramid: Any = None  # a loupe.core.pyramid.answer.PyramidRequest



def deep_zoom_element(asset_id: int, height: str = "60vh", boxes: Sequence[Sequence[float]] = ()) -> str:
    """HTML a viewer places where a giant image (a slide level or a scene, read as a pyramid) is to be
    zoomed: the app turns it into a deep-zoom viewer over the asset's access-checked tiles, with ``boxes``
    (level-0 pixel boxes, e.g. the tiles an answer read) outlined, numbered, and zoomed to when clicked."""
    return (f'<div class="loupe-deepzoom" data-tiles="/case-tiles/{int(asset_id)}" data-boxes="{_boxes(boxes)}" '
            f'style="width:100%;height:{height};background:#111"></div>')


def _boxes(boxes: Sequence[Sequence[float]]) -> str:
    return html.escape(json.dumps([[round(float(v), 1) for v in box[:4]] for box in boxes]))


def map_element(asset_id: int, boxes: Sequence[Sequence[float]] = (), height: str = "60vh") -> str:
    """HTML a viewer places where a scene (a raster asset) is to be shown on a map in its own coordinates: the
    app turns it into a pan/zoom map over the domain's ``map_info``/``map_tile``/``map_pixel``, with ``boxes``
    (level-0 pixel boxes, e.g. the tiles an answer read) outlined and numbered."""
    return (f'<div class="loupe-map" data-map="/case-map/{int(asset_id)}" data-boxes="{_boxes(boxes)}" '
            f'style="width:100%;min-height:{height}"></div>')


def frame_stack_element(case_id: int, height: str = "65vh") -> str:
    """HTML a viewer places where a case's frames (a series, a cine) are to be scrolled, played, windowed and
    measured: the app turns it into a DICOM viewer over the domain's ``stack_info``/``stack_frame``/
    ``stack_tags``, read through access-checked routes."""
    return (f'<div class="loupe-stack" data-stack="/case-stack/{int(case_id)}" '
            f'style="width:100%;min-height:{height}"></div>')

@dataclass(frozen=True)
class AssetView:
    """A stored asset as a viewer sees it: ``url`` is an access-checked, audited route."""

    id: int
    url: str
    media_type: str
    width: int | None
    height: int | None
    note: str = ""  # plain-language remark from ingest, e.g. "only the first of 30 frames is analysed"
    meta: dict[str, Any] = field(default_factory=dict)
    case_id: int | None = None


class DomainTab(Protocol):
    """The shared workspace a domain builds its tab into; the app implements it.

    Login, case list, chat, review and audit are the app's; a domain adds its viewer, tools and prompts.
    Tools are UI components (Gradio) created inside ``build_tab`` and wired to ``case_id``/``question``.
    """

    case_id: Any  # the open case's id, kept on the server (None when no case is open): for tools that only read
    # The case id shown with the header, a component the page sends with each click: the input of every event
    # that writes to a case (a job queued behind others runs with the case it was clicked for, not a newer one).
    shown_case: Any
    question: Any  # the question box
    budgets: Budgets  # the server's input budgets (core/budgets.py)

    def add_prompts(self, questions: Sequence[str],
                    for_case: Callable[[Sequence[IngestedAsset]], Sequence[str]] | None = None) -> None:
        """Offer ready-made questions; a click puts one in the question box. ``for_case``: the questions that
        fit the open case, from its assets' metadata (e.g. per modality); ``questions`` when none is open."""
        ...

    def case_assets(self, case_id: int, request: Any,  # noqa: ANN401 - a gr.Request
                    with_bytes: bool = True) -> list[IngestedAsset]:
        """A tool's way to the open case's stored assets: the app checks the request's user may see the
        case and audits the read. Never read case files any other way. Without ``with_bytes`` the assets
        come by path only (for their metadata)."""
        ...

    def run_job(self, request: Any, label: str, fn: Callable[..., Any], args: tuple = ()) -> Any:  # noqa: ANN401
        """Run a tool's heavy work ``fn(*args)`` (a picklable top-level function) in a worker process, under the
        job budgets and in the signed-in user's queue; its refusals come back as raised. ``label`` names the
        work in messages ("Checking the report")."""
        ...

    def run_on_case(self, request: Any, case_id: int, label: str, fn: Callable[..., Any],  # noqa: ANN401
                    args: tuple = ()) -> Any:  # noqa: ANN401
        """``run_job`` for work on the case's files: ``fn(assets, *args)`` runs in a worker, with the assets
        ``case_assets`` would give (access checked and audited here; their bytes read in the worker, so a
        large file never passes through the web process). Rendering a frame or a region goes this way."""
        ...

    def send_to_source(self, case_id: int, request: Any) -> str:  # noqa: ANN401 - a gr.Request
        """Send the case on screen's answers and report findings back to the data source its images came from
        (the domain's ``send_to_source`` in a worker; access checked, audited); returns what to tell the user."""
        ...

    def save_report(self, case_id: int, request: Any, text: str, findings: list[dict]) -> int:  # noqa: ANN401
        """Store a new version of the case's report (e.g. a radiology report) with a checker's findings."""
        ...

    def latest_report(self, case_id: int, request: Any) -> dict | None:  # noqa: ANN401 - a gr.Request
        """The newest report version: ``{"id", "text", "findings", "signed_off"}``, or None."""
        ...

    def sign_off_report(self, case_id: int, request: Any, report_id: int) -> int:  # noqa: ANN401 - a gr.Request
        """Sign report version ``report_id`` off, the one the reviewer was shown (reviewer role; refused and
        audited otherwise); refused when a newer version has been saved since."""
        ...

    def model(self, request: Any) -> tuple[Any, str]:  # noqa: ANN401 - a gr.Request; a core VLM
        """The app's loaded model and a label for it (its id, "demo weights" when it has no real ones),
        for a tool that asks the model something itself. Signed-in users only; raises ModelUnavailable."""
        ...

    def set_viewer(self, render: Callable[[list[AssetView], list[dict]], str]) -> None:
        """Replace the default viewer: ``render`` turns the open case's assets into HTML, with the
        citations (``{"page", "box", "text"}``) of the answer being looked at highlighted."""
        ...


@runtime_checkable
class Domain(Protocol):
    name: str  # stable id stored with each case
    title: str  # tab label
    accepts: tuple[str, ...]  # file suffixes offered in the upload dialog, e.g. (".png", ".jpg")
    # Optional ``upload_budget``: the budget an upload to this tab is held to, "max_bytes" (the default: the
    # domain reads it whole) or "max_stream_bytes" (it reads it in parts).
    # Optional ``upload_note``: what the new-case form says is kept of an upload (the default speaks of
    # photos: metadata removed, pixel limit).
    system_prompt: str
    default_detail: str  # "low" | "standard" | "high": how much of each image the model sees by default
    # download name (also the file's extension: "zip", "geojson") -> media type, served by /case-export/<case>/<name>
    export_formats: dict[str, str]

    def ingest(self, source: Path | BinaryIO, limits: Budgets,
               progress: Callable[[int, int], None] | None = None) -> list[IngestedAsset]:
        """Validate and preprocess an upload: a path (the spooled upload) or a readable binary stream, read
        with ``core.ingest_io`` (whole within ``max_bytes``, or in parts within ``max_stream_bytes``); a
        large result goes back as a file (``file_asset``). Raises InputRejected with a user-facing reason.
        Long work reports ``progress(done, total)`` (pages, frames, tiles) when given a callback."""
        ...

    # Optional: ``send_to_source(assets, answers, findings) -> str`` writes a case's results back where its
    # images came from (e.g. a DICOM SR to the PACS) and says what it did.
    # Optional: ``open_item(location: str, limits, progress) -> list[IngestedAsset]`` opens an item of a data
    # source where it lives (``location``: a path or a GDAL /vsicurl/ address). The asset read by reference
    # has ``meta["by_reference"]`` true and no bytes; the others (a thumbnail) are stored as usual.
    # Optional, for a viewer of frames (``frame_stack_element``): ``stack_info(assets) -> dict`` (count, modality,
    # window, presets, fps), ``stack_frame(assets, n) -> (facts, bytes)`` (one frame's values and placement),
    # ``stack_tags(assets, n) -> dict`` (its header as text rows). Run in workers, the assets by path.

    def context(self, assets: Sequence[IngestedAsset], question: str) -> VisualContext:
        """Build what the model sees for a question about a case's stored assets (in stored order).
        The same case and question must give the same context, so a follow-up continues the cached
        conversation."""
        ...

    def export(self, assets: Sequence[IngestedAsset], name: str, answers: Sequence[dict] = ()) -> bytes:
        """A case's content in one of ``export_formats`` (the app checks access and audits the export).
        ``answers``: the case's answers, oldest first, as ``{"id", "text", "citations"}``."""
        ...

    def cite(self, assets: Sequence[IngestedAsset], answer: str, context_meta: dict[str, Any]) -> list[dict]:
        """The parts of the case an answer relied on, as ``{"page", "box", "text"}`` (box in the asset's
        pixels); stored with the answer and highlighted by the viewer. ``[]`` when the domain has none."""
        ...

    def build_tab(self, tab: DomainTab) -> None:
        """Add this domain's viewer, tools and prompts to its tab (called while the app builds its UI)."""
        ...


class DomainLoadError(RuntimeError):
    pass


def discover() -> dict[str, Domain]:
    """Instantiate every registered domain, keyed by its ``name``."""
    domains: dict[str, Domain] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            domain = ep.load()()
        except Exception as exc:  # a broken plugin must not take the app down
            raise DomainLoadError(f"domain plugin {ep.name!r} failed to load: {exc}") from exc
        if not isinstance(domain, Domain):
            raise DomainLoadError(f"domain plugin {ep.name!r} does not implement the Domain contract")
        domains[domain.name] = domain
    return domains
