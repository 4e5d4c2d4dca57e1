"""One domain's tab: the shared case list, new-case form, viewer, chat, review and case actions.

Every handler resolves the session user first and lets the store check that user's right to the case.
Case images reach the browser only through ``/case-assets/<id>`` (access-checked, audited), never through
Gradio's file cache.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import gradio as gr

from loupe.core.budgets import Budgets
from loupe.core.cases.models import Case, User
from loupe.core.errors import LoupeError
from loupe.core.plugins import AssetView, Domain, IngestedAsset
from loupe.core.vlm.base import GenerationOptions

from ..service import LoupeService
from .render import (
    answer_choices,
    answered_note,
    case_header,
    citations,
    conversation,
    md_text,
    model_label,
    quoted,
    typed_text,
    viewer_html,
)
from .screen import Screens
from .spooled_file import spooled_file

log = logging.getLogger(__name__)

CASE_COLUMNS = ["#", "Title", "Owner", "Reviewed"]  # the creation date is in the case header
DETAIL_CHOICES = [("Low (fastest)", "low"), ("Standard", "standard"), ("High (slowest)", "high")]
# Visual tokens kept after the image encoder (core/tokens): fewer tokens, faster answers, less detail.
EFFICIENCY_CHOICES = [("All image tokens", 1.0), ("Fewer (keep 25%)", 0.25), ("Fewest (keep 10%)", 0.1)]
NO_CASE = "No case open. Click a case in the list, or create one."


def upload_limit(domain: Domain, limits: Budgets) -> int:
    """The largest upload ``domain``'s tab takes: ``max_bytes``, or ``max_stream_bytes`` for one that reads
    uploads in parts."""
    return int(getattr(limits, getattr(domain, "upload_budget", "max_bytes")))


class UploadKeeper(Protocol):
    """The security gate's record of each session's spooled uploads."""

    def upload_of(self, cookie_header: str | None, path: str) -> Path | None: ...

    def release_upload(self, cookie_header: str | None, path: str) -> None: ...


PROMPT_SLOTS = 5  # ready-made questions a case can be offered (the buttons exist; the case sets their text)


class Workspace:
    """Builds one domain tab; implements the :class:`loupe.core.plugins.DomainTab` the domain extends."""

    def __init__(self, service: LoupeService, domain: Domain, uploads: UploadKeeper) -> None:
        self.service = service
        self.domain = domain
        self.uploads = uploads  # the session's spooled uploads: which are whose, and their removal once read
        self.render_viewer: Callable[[list[AssetView], list[dict]], str] = viewer_html
        self._prompt_row: gr.Row | None = None
        self.screen = Screens()  # the case on each screen: actions for any other case are refused

    # -- DomainTab -----------------------------------------------------------------------------
    def add_prompts(self, questions: Sequence[str],
                    for_case: Callable[[Sequence[IngestedAsset]], Sequence[str]] | None = None) -> None:
        slots = max(len(questions), PROMPT_SLOTS if for_case else 0)
        with self._prompt_row:
            buttons = [gr.Button(questions[n] if n < len(questions) else "", size="sm", variant="secondary",
                                 min_width=0, visible=n < len(questions), elem_classes="loupe-prompt")
                       for n in range(slots)]
        for button in buttons:  # a click puts the button's current question in the box
            button.click(lambda text: text, button, self.question, api_name=False, concurrency_limit=None)
        if for_case is None:
            return

        def fitting(case_id: float | None, request: gr.Request) -> list:
            texts = list(questions)
            if case_id is not None:
                with contextlib.suppress(LoupeError):  # no access: the general questions (nothing is shown)
                    texts = list(for_case(self.case_assets(int(case_id), request, with_bytes=False)))
            return [gr.update(value=texts[n], visible=True) if n < len(texts) else gr.update(visible=False)
                    for n in range(slots)]

        self.shown_case.change(fitting, self.shown_case, buttons, api_name=False, concurrency_limit=None)

    def case_assets(self, case_id: int, request: gr.Request, with_bytes: bool = True) -> list[IngestedAsset]:
        return self.service.case_assets(self._user(request), int(case_id), with_bytes)

    def run_on_case(self, request: gr.Request, case_id: int, label: str, fn: Callable[..., object],
                    args: tuple = ()) -> object:
        return self.service.run_on_case(self._user(request), int(case_id), label, fn, args)

    @property
    def budgets(self) -> Budgets:
        return self.service.limits

    def run_job(self, request: gr.Request, label: str, fn: Callable[..., object], args: tuple = ()) -> object:
        return self.service.jobs.run(self._user(request).username, label, fn, args)

    def send_to_source(self, case_id: int, request: gr.Request) -> str:
        self.screen.check(request, case_id)  # only the case on screen is sent
        return self.service.send_to_source(self._user(request), int(case_id))

    def save_report(self, case_id: int, request: gr.Request, text: str, findings: list[dict]) -> int:
        self.screen.check(request, case_id)  # a report is written for the case on screen only
        return self.service.store.save_report(self._user(request), int(case_id), text, findings)

    def latest_report(self, case_id: int, request: gr.Request) -> dict | None:
        report = self.service.store.latest_report(self._user(request), int(case_id))
        if report is None:
            return None
        return {"id": report.id, "text": report.text, "findings": report.findings,
                "signed_off": report.signed_off_by is not None}

    def sign_off_report(self, case_id: int, request: gr.Request, report_id: int) -> int:
        self.screen.check(request, case_id)
        return self.service.store.sign_off_report(self._user(request), int(case_id), int(report_id))

    def model(self, request: gr.Request) -> tuple[object, str]:
        self._user(request)
        vlm = self.service.slot.get()
        status = self.service.slot.status  # named as people name it: never a server path
        return vlm, model_label(status.model_id, status.demo) + (" (its answers mean nothing)" if status.demo else "")

    def set_viewer(self, render: Callable[[list[AssetView], list[dict]], str]) -> None:
        self.render_viewer = render

    # -- layout --------------------------------------------------------------------------------
    def build(self) -> None:
        d = self.domain.name
        limits = self.service.limits
        # The case on screen, server side (for steps that follow it; no write reads it: a queued job would get
        # the value of when it runs, not of when the user clicked).
        self.case_id = gr.State(None)
        self.message_ids = gr.State([])
        pinned = gr.State(None)  # the answer the user picked for review; None: follow the newest answer
        picked = gr.State(None)  # the case clicked in the list, for the step that opens it
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=300):
                with gr.Tabs():
                    with gr.Tab("Cases"):
                        with gr.Row():
                            search = gr.Textbox(show_label=False, placeholder="Search title, owner or #id",
                                                elem_id=f"{d}-search", scale=3, container=False)
                            archived = gr.Checkbox(label="Archived", value=False, scale=1, container=False,
                                                   elem_id=f"{d}-archived")
                        cases = gr.Dataframe(headers=CASE_COLUMNS, interactive=False, wrap=True,
                                             elem_id=f"{d}-cases", show_label=False, max_height=360)
                        gr.Markdown("Click a case to open it.", elem_classes="hint")
                        refresh = gr.Button("Refresh list", size="sm", variant="secondary")
                    with gr.Tab("New case"):
                        # "binary": Gradio's "filepath" mode leaves an empty temp file behind on every call.
                        upload = spooled_file(label="File", file_types=list(self.domain.accepts),
                                         elem_id=f"{d}-upload")
                        kept = getattr(self.domain, "upload_note", None) or (
                            f"up to {limits.max_pixels / 1e6:.1f} megapixels. Metadata (names, dates, GPS) is "
                            "removed; the file name is not kept.")
                        gr.Markdown(f"Accepted: {', '.join(self.domain.accepts)} · up to "
                                    f"{upload_limit(self.domain, limits) / 2**20:,.0f} MiB, {kept}",
                                    elem_classes="hint")
                        title = gr.Textbox(label="Title", placeholder="Short description, no patient names")
                        with gr.Row():
                            create = gr.Button("Create case", variant="primary", elem_id=f"{d}-create", scale=3)
                            stop_reading = gr.Button("Cancel", variant="secondary", elem_id=f"{d}-cancel-create",
                                                     scale=1)
                    by_reference = hasattr(self.domain, "open_item")
                    with gr.Tab("From a data source", visible=by_reference):
                        gr.Markdown("Open an item where it lives (a server folder, a COG by URL, a series in the "
                                    "PACS): only what the viewer needs is copied; tiles and slices are read when "
                                    "they are looked at or a question needs them.",
                                    elem_classes="hint")
                        source = gr.Dropdown([], value=None, label="Data source", elem_id=f"{d}-source",
                                             allow_custom_value=True)  # the store refuses a source not the user's
                        with gr.Row():
                            item_search = gr.Textbox(
                                show_label=False, elem_id=f"{d}-item-search", scale=3, container=False,
                                placeholder="Search: a path; a PACS: CT, a date, a patient ID; a STAC API: a "
                                            "collection, 2024-05, a box W,S,E,N")
                            list_items_button = gr.Button("List", size="sm", variant="secondary", scale=1,
                                                          elem_id=f"{d}-list-items")
                        item = gr.Dropdown([], value=None, label="Item (its path, or a PACS series)",
                                           allow_custom_value=True, elem_id=f"{d}-item")
                        source_title = gr.Textbox(label="Title", placeholder="Short description, no patient names",
                                                  elem_id=f"{d}-source-title")
                        open_source_item = gr.Button("Open as a case", variant="primary",
                                                     elem_id=f"{d}-open-item")
                with gr.Accordion("Sharing and archive", open=False):
                    share_with = gr.Textbox(label="User name", placeholder="e.g. a reviewer",
                                            elem_id=f"{d}-share-user")
                    with gr.Row():
                        share = gr.Button("Share", size="sm", elem_id=f"{d}-share")
                        unshare = gr.Button("Stop sharing", size="sm", variant="secondary")
                    with gr.Row():
                        archive = gr.Button("Archive case", size="sm", variant="stop", elem_id=f"{d}-archive")
                        restore = gr.Button("Restore case", size="sm", variant="secondary")
            with gr.Column(scale=4, min_width=320):
                header = gr.Markdown(NO_CASE, elem_id=f"{d}-case-header")
                # The case id shown with the header. A component, not a gr.State: the page sends its value with
                # the click, so an action queued behind other users' work still names the case it was made for.
                # Every action that writes to a case takes its case id from here (``shown_case``).
                self.shown_case = gr.Number(None, precision=0, visible="hidden", show_label=False,
                                            container=False, interactive=False, elem_id=f"{d}-shown-case")
                viewer = gr.HTML(self.render_viewer([], []), elem_id=f"{d}-viewer")
                self.tools = gr.Column()
            with gr.Column(scale=5, min_width=360):
                status = gr.Markdown(elem_id=f"{d}-status")
                chat = gr.Chatbot(label="Conversation", elem_id=f"{d}-chat", height=420, buttons=["copy"],
                                  elem_classes="loupe-chat")
                self.question = gr.Textbox(label="Question", placeholder="Ask about this case", lines=2,
                                           elem_id=f"{d}-question")
                self._prompt_row = gr.Row(elem_classes="prompts")
                with gr.Row(equal_height=True):
                    detail = gr.Radio(DETAIL_CHOICES, value=self.domain.default_detail, label="Detail",
                                      info="Higher detail reads finer print but takes longer.",
                                      elem_id=f"{d}-detail", scale=3)
                    ask = gr.Button("Ask", variant="primary", elem_id=f"{d}-ask", scale=1)
                efficiency = gr.Radio(EFFICIENCY_CHOICES, value=getattr(self.domain, "default_visual_keep", 1.0),
                                      label="Efficiency", elem_id=f"{d}-efficiency",
                                      info="Keep fewer image tokens after the encoder: faster, may miss detail.")
                with gr.Accordion("Review an answer", open=True, elem_id=f"{d}-review"):
                    gr.Markdown("Pick the answer (or click it in the conversation), then record your verdict.",
                                elem_classes="hint")
                    # Custom values let the store, not the widget, refuse (and audit) a foreign answer id.
                    choice = gr.Dropdown([], label="Answer", value=None, allow_custom_value=True,
                                         elem_id=f"{d}-answer-choice")
                    shown = gr.Markdown(elem_id=f"{d}-answer-shown")
                    verdict = gr.Radio([("Accept", "accepted"), ("Correct it", "edited"), ("Reject", "rejected")],
                                       value=None, label="Verdict", elem_id=f"{d}-verdict")
                    corrected = gr.Textbox(label="Corrected answer (for 'Correct it')", lines=3,
                                           elem_id=f"{d}-corrected")
                    sign_off = gr.Checkbox(label="Sign off as reviewer", value=False, visible=False,
                                           elem_id=f"{d}-sign-off")
                    save_review = gr.Button("Save review", elem_id=f"{d}-save-review")
                    review_note = gr.Markdown(elem_id=f"{d}-review-note")
        with self.tools:
            self.domain.build_tab(self)
        viewer.value = self.render_viewer([], [])

        # The shown case comes last (it is set with the header): the API's outputs keep their positions.
        case_outputs = [self.case_id, header, viewer, chat, self.message_ids, choice, shown, status, self.shown_case]
        list_inputs = [search, archived]

        def list_cases(search_text: str, show_archived: bool, request: gr.Request) -> list[list]:
            user = self._user(request)
            return [[c.id, c.title, c.owner, f"{c.reviewed}/{c.answers}"] for c in
                    self.service.store.list_cases(user, search=search_text or "", domain=d,
                                                  archived=bool(show_archived))]

        def readable_sources(user: User) -> dict:
            names = [spec.name for spec in self.service.store.sources(user, domain=d)] if by_reference else []
            return gr.update(choices=names, value=names[0] if len(names) == 1 else None)

        def on_load(request: gr.Request):
            user = self._user(request)
            return list_cases("", False, request), gr.update(visible=user.role == "reviewer"), readable_sources(user)

        def find_items(source_name: str | None, search_text: str, request: gr.Request):
            user = self._user(request)
            try:
                if not source_name:
                    raise LoupeError("Choose a data source first.")
                found = self.service.source_items(user, source_name, search_text or "")
            except LoupeError as exc:
                return gr.update(choices=[]), f"⚠️ {exc}"
            note = f"{len(found)} item{'s' * (len(found) != 1)} found." if found else "No item matches."
            return gr.update(choices=found, value=found[0][1] if len(found) == 1 else None), note

        def open_item(source_name: str | None, item_path: str | None, title_text: str, request: gr.Request,
                      progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
            user = self._user(request)
            with self.screen.switch(request) as switch:
                try:
                    if not source_name or not item_path:
                        raise LoupeError("Choose a data source and an item first.")
                    case_id = self.service.open_item(user, source_name, item_path, title_text,
                                                     lambda done, total: progress((done, total), desc="Opening"))
                except LoupeError as exc:
                    return (gr.update(),) * 7 + (f"⚠️ {exc}", gr.update(), gr.update(), gr.update())
                log.info("case %d opened from a data source", case_id)
                view = self._case_view(request, switch, self.service.store.open_case(user, case_id),
                                       f"Case {case_id} opened from {source_name}.")
            return (*view, list_cases("", False, request), "")

        def open_case(case_id: float | int | None, request: gr.Request) -> tuple:
            with self.screen.switch(request) as switch:
                if case_id is None:
                    return (gr.update(),) * 7 + ("Choose a case.", gr.update())
                try:
                    case = self.service.store.open_case(self._user(request), int(case_id))
                except LoupeError as exc:
                    if not self.screen.end(request, switch, None):
                        return (gr.update(),) * 9
                    return None, NO_CASE, self.render_viewer([], []), [], [], gr.update(choices=[], value=None), \
                        "", f"⚠️ {exc}", None
                return self._case_view(request, switch, case, f"Opened case {case.id}.")

        def pick_case(evt: gr.SelectData, request: gr.Request) -> tuple:
            row = evt.row_value or []
            return (row[0] if row else None, *lock(request))

        def lock(request: gr.Request) -> tuple:
            # A case is about to change on this screen: no action is taken for the old one meanwhile.
            self.screen.begin(request)
            return (gr.update(interactive=False),) * len(controls)

        def unlock() -> tuple:
            return (gr.update(interactive=True),) * len(controls)

        def create_case(upload: str | None, title_text: str, request: gr.Request, progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
            user = self._user(request)

            def reading(done: int, total: int) -> None:
                progress((done, total), desc="Reading the file", unit="pages")

            def waiting(ahead: int) -> None:  # shown until a worker takes the file
                progress(0.0, desc=f"Waiting for a worker: {ahead} job{'s' * (ahead != 1)} ahead" if ahead
                         else "Starting")

            with self.screen.switch(request) as switch:
                cookie = request.headers.get("cookie")
                try:
                    if upload is None:
                        raise LoupeError("Choose a file to upload first.")
                    spooled = self.uploads.upload_of(cookie, upload)
                    if spooled is None:  # a path this session did not upload: never read it
                        raise LoupeError("That file is no longer here: choose it again.")
                    # The worker reads the spooled file itself: the web process never holds the upload.
                    case_id = self.service.create_case(user, d, spooled, title_text, reading, waiting,
                                                       lambda: self.screen.stop_requested(request, switch))
                except LoupeError as exc:
                    return (gr.update(),) * 7 + (f"⚠️ {exc}", gr.update(), gr.update(), None, gr.update())
                finally:
                    if upload is not None:
                        self.uploads.release_upload(cookie, upload)
                log.info("case %d created", case_id)
                view = self._case_view(request, switch, self.service.store.open_case(user, case_id),
                                       f"Case {case_id} created.")
            return (*view, list_cases("", False, request), None, "")

        def stop_creating(request: gr.Request) -> str:
            self._user(request)
            if self.screen.request_stop(request):
                return "Stopping: the file is not kept."
            return gr.update()

        def ask_question(case_id: int | None, question: str, detail_level: str, keep_share: float,
                         request: gr.Request):
            if case_id is None:
                yield gr.update(), gr.update(), "⚠️ Open or create a case first.", gr.update(), gr.update()
                return
            user = self._user(request)
            try:
                self.screen.check(request, case_id)  # asked for the case on screen, or not at all
                case = self.service.store.open_case(user, int(case_id))
                history, ids = conversation(case)
                history += [{"role": "user", "content": typed_text(question)}, {"role": "assistant", "content": ""}]
                # At once (a real model needs seconds to start); the review panel follows the newest answer again.
                yield history, "", "Answering…", gr.update(), None
                options = GenerationOptions(max_new_tokens=self.service.settings.max_answer_tokens,
                                            detail=detail_level or self.domain.default_detail,
                                            visual_keep=float(keep_share) if keep_share else None)
                shown = True
                for step in self.service.ask(user, int(case_id), question, options):
                    shown = self.screen.shows(request, case_id)  # another case opened meanwhile: not on its screen
                    history[-1] = {"role": "assistant", "content": md_text(step.text)}
                    if not shown:
                        continue
                    if step.run is None:
                        yield history, "", "Answering…", gr.update(), gr.update()
                    else:
                        # Re-read: reviews saved while this answer streamed are shown under their answers.
                        history, ids = conversation(self.service.store.open_case(user, int(case_id)))
                        demo = bool(self.service.slot.status.demo)
                        yield history, "", answered_note(step.run, demo), ids, gr.update()
                if not shown:
                    yield (gr.update(), gr.update(), f"The answer to your question about case {case_id} is stored "
                           f"in case {case_id}.", gr.update(), gr.update())
            except LoupeError as exc:
                yield gr.update(), question, f"⚠️ {exc}", gr.update(), gr.update()

        def refresh_choices(case_id: int | None, pin: int | None, request: gr.Request):
            # The newest answer, unless the user picked another since asking.
            if case_id is None or not self.screen.shows(request, case_id):
                return gr.update()
            case = self.service.store.open_case(self._user(request), int(case_id))
            choices = answer_choices(case)
            ids = [v for _, v in choices]
            return gr.update(choices=choices, value=pin if pin in ids else (ids[-1] if ids else None))

        def show_answer(message_id: int | None, case_id: int | None, request: gr.Request):
            if not str(message_id or "").isdigit() or case_id is None:
                return "", "", gr.update()
            case = self.service.store.open_case(self._user(request), int(case_id))
            message = next((m for m in case.messages if m.id == int(message_id)), None)
            if message is None:
                return "", "", gr.update()
            # The viewer highlights what this answer quoted.
            return (quoted(message.content), message.content,
                    self.render_viewer(self._views(case), citations(case, message.id)))

        def pick_from_chat(evt: gr.SelectData, ids: list[int]):
            index = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
            if isinstance(index, int) and 0 <= index < len(ids) and ids[index] > 0:
                return ids[index], ids[index]
            return gr.update(), gr.update()

        def review(message_id: int | None, verdict_value: str, corrected_text: str, signing: bool,
                   case_id: int | None, request: gr.Request):
            if not str(message_id or "").isdigit():
                return "⚠️ Pick the answer to review first.", gr.update(), gr.update()
            if not verdict_value:
                return "⚠️ Choose a verdict first: accept, correct or reject.", gr.update(), gr.update()
            user = self._user(request)
            try:
                self.screen.check(request, case_id)
                # The answer must be one of the case on screen (0: no case is, so no answer is).
                self.service.store.review(user, int(message_id), verdict_value, corrected_text or None,
                                          sign_off=bool(signing), in_case=int(case_id or 0))
            except LoupeError as exc:
                return f"⚠️ {exc}", gr.update(), gr.update()
            case = self.service.store.open_case(user, int(case_id))
            history, _ = conversation(case)
            number = next((n for n, (_, v) in enumerate(answer_choices(case), start=1) if v == message_id), "")
            what = "signed off" if signing else {"accepted": "accepted", "edited": "corrected",
                                                  "rejected": "rejected"}[verdict_value]
            return (f"Review saved: answer {number} {what}.", history,
                    gr.update(choices=answer_choices(case), value=message_id))

        def share_case(case_id: int | None, username: str, request: gr.Request, on: bool = True):
            if case_id is None:
                return "⚠️ Open a case first.", gr.update()
            user = self._user(request)
            try:
                self.screen.check(request, case_id)
                self.service.store.share_case(user, int(case_id), username or "", share=on)
            except LoupeError as exc:  # it quotes the name as typed
                return f"⚠️ {md_text(str(exc))}", gr.update()
            case = self.service.store.open_case(user, int(case_id))
            name = md_text(username.strip())
            return (f"Case shared with {name}." if on else f"Stopped sharing with {name}."), \
                case_header(case)

        def archive_case(case_id: int | None, search_text: str, show_archived: bool, request: gr.Request,
                         on: bool = True):
            if case_id is None:
                return "⚠️ Open a case first.", gr.update(), gr.update()
            user = self._user(request)
            try:
                self.screen.check(request, case_id)
                self.service.store.archive_case(user, int(case_id), archived=on)
            except LoupeError as exc:
                return f"⚠️ {exc}", gr.update(), gr.update()
            case = self.service.store.open_case(user, int(case_id))
            note = f"Case {case_id} archived: it is listed under 'Archived'." if on else f"Case {case_id} restored."
            return note, case_header(case), list_cases(search_text, show_archived, request)  # the list as filtered

        def unshare_case(case_id: int | None, username: str, request: gr.Request):
            return share_case(case_id, username, request, on=False)

        def restore_case(case_id: int | None, search_text: str, show_archived: bool, request: gr.Request):
            return archive_case(case_id, search_text, show_archived, request, on=False)

        # Handlers that do not touch the model run side by side (a review is never queued behind an answer).
        free = dict(concurrency_limit=None)
        gr.on([refresh.click, search.submit, archived.change], list_cases, list_inputs, cases,
              api_name=f"{d}_list_cases", **free)
        self.load_handler = (on_load, [cases, sign_off, source])
        # While a case opens or is created, the actions that write to a case are off (the server refuses them too).
        controls = [ask, self.question, save_review, share, unshare, archive, restore, create, open_source_item]
        # Quick steps run through the queue too (the gate serves no /run/predict) but wait for nothing.
        quick = dict(api_name=False, show_progress="hidden", **free)
        cases.select(pick_case, None, [picked, *controls], **quick).then(
            open_case, picked, case_outputs, api_name=False, **free).then(unlock, None, controls, **quick)
        open_api = gr.Number(visible=False, precision=0)
        open_api.change(open_case, open_api, case_outputs, api_name=f"{d}_open_case", **free)
        create.click(lock, None, controls, **quick).then(
            create_case, [upload, title], [*case_outputs, cases, upload, title], api_name=f"{d}_create_case",
            **free).then(unlock, None, controls, **quick)
        stop_reading.click(stop_creating, None, status, **quick)
        gr.on([list_items_button.click, item_search.submit], find_items, [source, item_search], [item, status],
              api_name=f"{d}_source_items", **free)
        open_source_item.click(lock, None, controls, **quick).then(
            open_item, [source, item, source_title], [*case_outputs, cases, source_title],
            api_name=f"{d}_open_item", **free).then(unlock, None, controls, **quick)
        asked = gr.on([ask.click, self.question.submit], ask_question,
                      [self.shown_case, self.question, detail, efficiency],
                      [chat, self.question, status, self.message_ids, pinned], api_name=f"{d}_ask",
                      **self.service.ask_concurrency())
        asked.then(refresh_choices, [self.shown_case, pinned], choice, api_name=False, **free)
        choice.change(show_answer, [choice, self.case_id], [shown, corrected, viewer], api_name=False, **free)
        choice.input(lambda picked_id: picked_id, choice, pinned, **quick)  # the user's own pick is kept
        chat.select(pick_from_chat, self.message_ids, [choice, pinned], api_name=False, **free)
        save_review.click(review, [choice, verdict, corrected, sign_off, self.shown_case], [review_note, chat, choice],
                          api_name=f"{d}_review", **free)
        share.click(share_case, [self.shown_case, share_with], [status, header], api_name=f"{d}_share", **free)
        unshare.click(unshare_case, [self.shown_case, share_with], [status, header],
                      api_name=f"{d}_unshare", **free)
        archive.click(archive_case, [self.shown_case, search, archived], [status, header, cases],
                      api_name=f"{d}_archive", **free)
        restore.click(restore_case, [self.shown_case, search, archived],
                      [status, header, cases], api_name=f"{d}_restore", **free)

    # -- helpers -------------------------------------------------------------------------------
    def _user(self, request: gr.Request) -> User:
        return self.service.user(request.username if request else None)

    @staticmethod
    def _views(case: Case) -> list[AssetView]:
        return [AssetView(a.id, f"/case-assets/{a.id}", a.media_type, a.width, a.height,
                          str((a.meta or {}).get("note", "")), a.meta or {}, case.id) for a in case.assets]

    def _case_view(self, request: gr.Request, switch: int, case: Case, note: str) -> tuple:
        """The case's outputs, putting it on screen; no change if a newer switch began (its case comes last)."""
        if not self.screen.end(request, switch, case.id):
            return (gr.update(),) * 9
        views = self._views(case)
        history, ids = conversation(case)
        choices = answer_choices(case)
        newest = choices[-1][1] if choices else None
        notes = [v.note for v in views if v.note]
        return (case.id, case_header(case), self.render_viewer(views, citations(case, newest)), history, ids,
                gr.update(choices=choices, value=newest), "", " ".join([note, *notes]), case.id)
