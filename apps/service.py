"""What the app and CLI do with a case: ingest an upload, ask a question, review an answer.

It joins the core pieces (store, domains, model slot); the Gradio layer only draws it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from loupe.core.cases.assets import AssetStore
from loupe.core.cases.db import open_database
from loupe.core.cases.models import Case, User
from loupe.core.cases.store import CaseStore
from loupe.core.config import Settings
from loupe.core.errors import AccessDenied, InputRejected, LoupeError, ModelUnavailable
from loupe.core.jobs import JobRunner, report_progress
from loupe.core.plugins import ENTRY_POINT_GROUP, Domain, IngestedAsset, VisualContext, discover
from loupe.core.sources import SourceSpec, check_item, item_location, item_under, search_items
from loupe.core.sources.credentials import use_credentials
from loupe.core.sources.dicomweb import KIND as DICOMWEB
from loupe.core.sources.dicomweb import search_filters
from loupe.core.sources.locations import MAX_ITEM_CHARS
from loupe.core.sources.stac import stac_asset_path
from loupe.core.sources.stac_api import KIND as STAC_API
from loupe.core.sources.stac_api import api_image_href, item_ref
from loupe.core.vlm.base import VLM, GenerationOptions, Message, RunRecord
from loupe.core.vlm.features import clear_directory
from loupe.core.vlm.registry import resolve
from loupe.core.vlm.slot import ModelSlot, model_slot


@dataclass
class AnswerProgress:
    """One step of a streamed answer: the text so far; ``message_id``/``run`` once it is saved."""

    text: str
    message_id: int | None = None
    run: RunRecord | None = None


def answering_model(settings: Settings, model: str | None = None) -> VLM:
    """The model a command line tool answers with, as the app would: the served one (LOUPE_MODEL_SERVER) or
    ``model`` (default LOUPE_MODEL) in this process with the app's engine settings."""
    slot = model_slot(settings)
    slot.load(model or settings.model)
    return slot.get()  # ModelUnavailable with the reason when the load failed


def conversation_messages(system_prompt: str, context: VisualContext, turns: Sequence[tuple[str, str]],
                          queries: bool) -> list[Message]:
    """The model's messages for a case conversation. The context opens it (the first user turn), so
    every follow-up starts with the same tokens and continues the cached conversation instead of
    reading everything again. With ``queries`` the context's layout goes through the OCR query module."""
    queried = queries and bool(context.layout)
    intro = context.query_text if queried else context.extra_text
    if context.layout:  # the run record says how the page text reached the model
        context.meta["ocr_text"] = "query tokens" if queried else "prompt"
    messages = [Message("system", system_prompt)]
    for i, (role, content) in enumerate(turns):
        first = i == 0
        messages.append(Message(role, f"{intro}\n{content}".strip() if first else content,  # type: ignore[arg-type]
                                context.images if first else (), context.layout if first and queried else ()))
    return messages


def configured_domains(settings: Settings) -> dict[str, Domain]:
    """Every installed domain, given the settings it asks for (paths, keys) through its optional ``configure``."""
    domains = discover()
    for domain in domains.values():
        configured(domain, settings)
    return domains


def configured(domain: Domain, settings: Settings) -> Domain:
    configure = getattr(domain, "configure", None)  # optional: a domain that needs paths or keys
    if configure is not None:
        configure(settings)
    return domain


def worker_preload() -> list[str]:
    """Modules a worker process imports once, in the fork server, so each job starts warm."""
    from importlib.metadata import entry_points

    return [*(ep.value.split(":")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)), __name__]


_worker_domains: dict[tuple[type, Settings], Domain] = {}


def ingest_in_worker(settings: Settings, domain_class: type, source: Path | BinaryIO) -> list[IngestedAsset]:
    """A worker job: the domain's ingest of one upload (its spooled file, or a stream), under the settings'
    budgets. A large result comes back as a file for the store to move into place, not as bytes.

    The domain travels as its class (plugins are built without arguments, then configured): the worker makes
    its own instance once, so whatever it loads (OCR models, decoders) stays warm for the next upload.
    """
    return _worker_domain(settings, domain_class).ingest(source, settings.budgets, report_progress)


def open_item_in_worker(settings: Settings, domain_class: type, location: str) -> list[IngestedAsset]:
    """A worker job: a data source item's assets, read where it lives (the giant part by reference)."""
    return _worker_domain(settings, domain_class).open_item(location, settings.budgets, report_progress)


def _worker_domain(settings: Settings, domain_class: type) -> Domain:
    domain = _worker_domains.get((domain_class, settings))
    if domain is None:
        domain = _worker_domains[domain_class, settings] = configured(domain_class(), settings)
    return domain


def _read(assets: Sequence[IngestedAsset]) -> list[IngestedAsset]:
    """In a worker: the assets with their bytes, read from the store's files (never a lazy one's)."""
    return [a.with_bytes() for a in assets]


def on_assets(fn: Callable[..., object], assets: Sequence[IngestedAsset], *args: object) -> object:
    """A worker job: ``fn(assets, *args)`` with the assets' bytes read here, from the store's files."""
    return fn(_read(assets), *args)


def call_domain(domain: object, method: str, assets: Sequence[IngestedAsset], *args: object) -> object:
    """A worker job: a domain's own read of a case (its viewer's frames), the assets by path."""
    return getattr(domain, method)(assets, *args)


def context_in_worker(settings: Settings, domain_class: type, assets: Sequence[IngestedAsset],
                      question: str) -> VisualContext:
    """A worker job: what the model sees for a question (decoded views, rendered pages, OCR text), made from
    the case's files read here."""
    return _worker_domain(settings, domain_class).context(_read(assets), question)


def export_in_worker(settings: Settings, domain_class: type, assets: Sequence[IngestedAsset], name: str,
                     answers: Sequence[dict]) -> bytes:
    """A worker job: the domain's export of a case (assets read here, from the store's files)."""
    return _worker_domain(settings, domain_class).export(_read(assets), name, answers)


def send_in_worker(settings: Settings, domain_class: type, assets: Sequence[IngestedAsset], answers: Sequence[dict],
                   findings: Sequence[dict]) -> str:
    """A worker job: the domain sends the case's results back to its data source."""
    return _worker_domain(settings, domain_class).send_to_source(assets, answers, findings)


def _answers(case: Case) -> list[dict]:
    """The case's answers, oldest first: id, text, citations, the question asked and the model."""
    out, question = [], ""
    for m in case.messages:
        if m.role == "user":
            question = m.content
        elif m.role == "assistant" and m.model_run is not None:
            out.append({"id": m.id, "text": m.content, "question": question, "model": m.model_run.model_id,
                        "citations": list((m.model_run.extra or {}).get("citations") or [])})
    return out


class LoupeService:
    def __init__(self, settings: Settings, store: CaseStore, domains: dict[str, Domain], slot: ModelSlot) -> None:
        self.settings = settings
        self.store = store
        self.domains = domains
        self.slot = slot
        self.limits = settings.budgets
        # Each job takes in the data sources' credentials as they are now (a changed file is read again).
        self.jobs = JobRunner(settings.budgets, preload=worker_preload(),
                              prepare=functools.partial(use_credentials, settings.home))
        self.answer_hooks: list[Callable[[RunRecord], None]] = []  # each saved answer's run record (metrics)

    @classmethod
    def open(cls, settings: Settings, slot: ModelSlot | None = None) -> LoupeService:
        settings.ensure_dirs()
        store = CaseStore(open_database(settings.db_url), AssetStore(settings.assets_dir))
        return cls(settings, store, configured_domains(settings), slot or model_slot(settings))

    def ask_concurrency(self) -> dict:
        """Gradio's concurrency for answering. In-process, one answer per domain at a time (the torch thread
        runs them in turn anyway). Served, up to LOUPE_SERVED_CONCURRENCY answers across domains stream at
        once, which the server batches."""
        if not self.settings.model_server:
            return {}
        return {"concurrency_id": "served-answers", "concurrency_limit": self.settings.served_concurrency}

    def user(self, username: str | None) -> User:
        user = self.store.get_user(username or "")
        if user is None:
            raise AccessDenied("not logged in")
        return user

    def domain(self, name: str) -> Domain:
        try:
            return self.domains[name]
        except KeyError:
            raise LoupeError(f"unknown domain {name!r}; installed: {', '.join(self.domains)}") from None

    def create_case(self, user: User, domain_name: str, source: Path | BinaryIO, title: str = "",
                    progress: Callable[[int, int], None] | None = None,
                    waiting: Callable[[int], None] | None = None,
                    cancelled: Callable[[], bool] = lambda: False) -> int:
        """Ingest an upload in a worker process (budgets, time and memory limits) and store it as a new case.

        Nothing is written before the worker returns: a refused, failed or cancelled upload leaves no case.
        ``waiting(position)`` hears how many jobs are ahead while it waits for a worker.
        """
        domain = self.domain(domain_name)
        assets = self.jobs.run(user.username, "Reading the file", ingest_in_worker,
                               (self.settings, type(domain), source), progress=progress, waiting=waiting,
                               cancelled=cancelled)
        return self.store.create_case(user, domain.name, title, assets)

    def open_item(self, user: User, source_name: str, item: str, title: str = "",
                  progress: Callable[[int, int], None] | None = None) -> int:
        """A new case from an item of a data source the user may read, by reference: a worker reads what the
        viewer needs (a thumbnail from the item's overviews); the item itself stays where it is. An item of a
        STAC API is read through the http or s3 source holding its picture, which the user must read too."""
        _, source = self.store.readable_source(user, source_name)
        domain = self.domain(source.domain)
        if not hasattr(domain, "open_item"):
            raise LoupeError(f"The {domain.title} tab cannot open items from data sources yet.")
        found_in = source
        if source.kind == "stac":  # the item's image, found in the catalogue (which may be remote): in a worker
            if not 0 < len(item) <= MAX_ITEM_CHARS:
                raise InputRejected(f"An item id is 1-{MAX_ITEM_CHARS} characters.")
            item = self.jobs.run(user.username, "Reading the catalogue", stac_asset_path, (source.location, item))
        elif source.kind == STAC_API:
            href = self.jobs.run(user.username, "Asking the catalogue", api_image_href, (source.location, item))
            title = title or f"From {source.name}: {item_ref(item)[1]}"
            source, item = self._source_holding(user, href)
        item = check_item(item)
        location = item_location(source, item)
        assets = self.jobs.run(user.username, "Opening the item", open_item_in_worker,
                               (self.settings, type(domain), location), progress=progress)
        assets = [replace(a, reference=(source.name, item)) if a.meta.get("by_reference") else a for a in assets]
        case_id = self.store.create_case(user, domain.name, title or f"From {source.name}", assets)
        for opened in dict.fromkeys((found_in.name, source.name)):
            self.store.audit(user, "source.open", case_id=case_id, detail={"source": opened})
        return case_id

    def _source_holding(self, user: User, href: str) -> tuple[SourceSpec, str]:
        """The http or s3 source ``user`` reads whose prefix holds ``href``, and the item it names there."""
        for candidate in self.store.sources(user):
            inside = item_under(candidate, href)
            if inside is not None:
                return candidate, inside
        where = urlsplit(href)
        raise InputRejected(f"This item's picture is at {where.scheme}://{where.netloc}/…, under no data source "
                            "you may read: an administrator can add its prefix as an http or s3 source.")

    def source_items(self, user: User, source_name: str, search: str = "") -> list[tuple[str, str]]:
        """(label, item) pairs of a source the user may read, found in a worker: a folder's files its domain
        can open or a STAC catalogue's item ids containing ``search``, a PACS's series matching its filters.
        Audited as a listing (the filters' names, not their values: a patient ID is one)."""
        _, source = self.store.readable_source(user, source_name)
        domain = self.domain(source.domain)
        items = self.jobs.run(user.username, "Searching the source", search_items,
                              (source, search, tuple(domain.accepts)))
        keys = sorted(search_filters(search)) if source.kind == DICOMWEB else []
        self.store.audit(user, "source.list", detail={"source": source.name, "found": len(items)}
                         | ({"filters": keys} if keys else {}))
        return items

    def switch_model(self, user: User, demo: bool) -> None:
        """Admins only: load the configured model again, or the random-weight demo model."""
        self.store.require_admin(user, "model.switch")
        target = "demo" if demo else self.settings.model
        self.store.audit(user, "model.switch", detail={"model": target})
        if demo:
            self.slot.load_demo(self.settings.models_dir, keep_current=True)
        else:
            self.slot.load(self.settings.model, background=True, keep_current=True)

    def purge_case(self, user: User, case_id: int) -> None:
        """Admins only: delete an archived case, and whatever the model derived from its images.

        The vision feature cache is keyed by pixels, not by case, so all of it goes (it refills as
        cases are opened); the case's own conversation cache goes too.
        """
        self.store.purge_case(user, case_id)
        try:
            forget = getattr(self.slot.get(), "forget", None)
        except ModelUnavailable:  # no model loaded: only what is on disk is left
            forget = None
        if forget is not None:
            forget(f"case-{case_id}")  # its memory and disk features, and the case's conversation
        else:
            clear_directory(self.settings.feature_cache_dir)

    def export_case(self, user: User, case_id: int, name: str) -> tuple[bytes, str]:
        """A case in one of its domain's export formats, for a user with access; audited as case.export."""
        case = self.store.open_case(user, case_id)  # raises AccessDenied (audited) for anyone else
        domain = self.domain(case.domain)
        if name not in domain.export_formats:
            raise LoupeError(f"Cases of this kind have no {name!r} export.")
        answers = _answers(case)
        data = self.jobs.run(user.username, "Preparing the export", export_in_worker,
                             (self.settings, type(domain), self._assets(user, case, with_bytes=False), name, answers))
        self.store.audit(user, "case.export", case_id=case_id, detail={"format": name})
        return data, domain.export_formats[name]

    def send_to_source(self, user: User, case_id: int) -> str:
        """Send a case's answers and its report's check findings back to the data source its images came from
        (a PACS: a DICOM SR in the source study), for a user who sees the case and reads the source; audited
        as case.send. Returns what the user is told."""
        case = self.store.open_case(user, case_id)  # raises AccessDenied (audited) for anyone else
        domain = self.domain(case.domain)
        if not hasattr(domain, "send_to_source"):
            raise LoupeError(f"Cases of the {domain.title} tab cannot be sent back to a data source.")
        report = self.store.latest_report(user, case_id)
        findings = list(report.findings or []) if report is not None else []
        answers = _answers(case)
        said = self.jobs.run(user.username, "Sending to the PACS", send_in_worker,
                             (self.settings, type(domain), self._assets(user, case, with_bytes=False), answers,
                              findings))
        self.store.audit(user, "case.send", case_id=case_id, detail={"answers": len(answers),
                                                                      "findings": len(findings)})
        return said

    def case_assets(self, user: User, case_id: int, with_bytes: bool = True) -> list[IngestedAsset]:
        """A case's stored assets for a domain tool; access-checked and audited as a case read."""
        return self._assets(user, self.store.open_case(user, case_id), with_bytes)

    def run_on_case(self, user: User, case_id: int, label: str, fn: Callable[..., object],
                    args: tuple = ()) -> object:
        """``fn(assets, *args)`` in a worker on a case's assets (access-checked and audited as a case read
        here; their bytes read in the worker)."""
        assets = self._assets(user, self.store.open_case(user, case_id), with_bytes=False)
        return self.jobs.run(user.username, label, on_assets, (fn, assets, *args))

    def view_case(self, user: User, case_id: int, method: str, args: tuple = (), audit: bool = False) -> object:
        """A viewer's read, the domain's ``method(assets, *args)`` in a worker, the assets by path (the worker
        reads only what it needs); access-checked every time, audited with ``audit`` (once per view)."""
        case = self.store.case_for_view(user, case_id, audit)
        domain = self.domain(case.domain)
        if not callable(getattr(domain, method, None)):
            raise LoupeError(f"The {domain.title} tab has no such view.")
        return self.jobs.run(user.username, "Showing the image", call_domain,
                             (domain, method, self._assets(user, case, with_bytes=False), *args))

    def _assets(self, user: User, case: Case, with_bytes: bool = True) -> list[IngestedAsset]:
        """The case's assets; lazy ones (giant images), and all of them without ``with_bytes``, by path only.
        An item read by reference comes with its location in its data source, if ``user`` may read that
        source (checked and audited per read)."""
        out = []
        for a in case.assets:
            if a.source_id is not None:
                out.append(IngestedAsset(b"", a.media_type, a.width, a.height, a.meta,
                                         self.store.asset_location(user, a)))
                continue
            path = self.store.assets.path_for(a.sha256)
            data = b"" if (a.meta or {}).get("lazy") or not with_bytes else self.store.assets.read(a.sha256)
            out.append(IngestedAsset(data, a.media_type, a.width, a.height, a.meta, path))
        return out

    def answering_adapter(self, vlm: VLM, domain: str) -> str | None:
        """The adapter ``domain`` answers with, loaded into ``vlm`` beside the base weights (once per
        version of its files); None: the base model. Set with ``loupe adapters activate`` or on the
        Admin tab; read at every question, so a switch applies to the next answer."""
        record = self.store.active_adapter(domain)
        if record is None:
            return None
        load = getattr(vlm, "load_adapter", None)
        if load is None:
            raise ModelUnavailable(f"The {domain} adapter {record.name!r} needs a transformers model loaded in Loupe.")
        if resolve(record.base_model) != vlm.model_id:
            raise ModelUnavailable(
                f"The {domain} adapter {record.name!r} was trained on {record.base_model}, but the app runs "
                f"{vlm.model_id}. An administrator can switch the adapter off on the Admin tab.")
        load(record.path, record.name)
        return record.name

    def ask(self, user: User, case_id: int, question: str,
            options: GenerationOptions | None = None) -> Iterator[AnswerProgress]:
        question = question.strip()
        if not question:
            raise LoupeError("Type a question first.")
        self.limits.check("max_question_chars", len(question), "The question")  # before any model time is spent
        vlm = self.slot.get()  # fail before anything is stored if no model is up
        demo_weights = self.slot.status.demo  # of this model, even if the slot switches mid-answer
        case = self.store.open_case(user, case_id)
        if case.archived_at is not None:
            raise LoupeError("This case is archived: restore it to ask new questions.")
        domain = self.domain(case.domain)
        options = replace(options or GenerationOptions(self.settings.max_answer_tokens, detail=domain.default_detail),
                          adapter=self.answering_adapter(vlm, domain.name))
        assets = self._assets(user, case, with_bytes=False)
        context = self.jobs.run(user.username, "Preparing the images", context_in_worker,
                                (self.settings, type(domain), assets, question))
        if context.pyramid is not None:  # a giant image: the question steers which tiles the model reads
            from loupe.core.pyramid.answer import focused_images

            use_credentials(self.settings.home)  # its tiles are read here, beside the model

            images, placed, record = focused_images(vlm, context.pyramid, question, options.adapter)
            for asset in case.assets:  # an image read by reference: which of its tiles this answer read
                if asset.source_id is not None:
                    self.store.audit_tiles(user, asset, record.get("focus", {}).get("scored", []))
            context.images = images
            context.extra_text = f"{context.extra_text}\n{placed}".strip()
            context.meta.update(record)
        turns = [(past.role, past.content) for past in case.messages] + [("user", question)]
        messages = conversation_messages(domain.system_prompt, context, turns, getattr(vlm, "query_tokens", 0) > 0)
        self.store.add_question(user, case_id, question)

        text = ""
        for chunk in vlm.stream(messages, options, conversation=f"case-{case_id}"):
            text += chunk.text
            if chunk.run is None:
                yield AnswerProgress(text)
            else:
                chunk.run.extra.update(context.meta)
                chunk.run.extra["citations"] = domain.cite(assets, text, context.meta)
                message_id = self.store.add_answer(user, case_id, text, chunk.run, demo_weights)
                for hook in self.answer_hooks:
                    hook(chunk.run)
                yield AnswerProgress(text, message_id, chunk.run)
