"""The Gradio web app: login, case list, new case by upload, viewer, streaming chat, review."""

from __future__ import annotations

import io
import logging
import os
import shutil
from pathlib import Path

import gradio as gr
from PIL import Image

from loupe.core.errors import LoupeError
from loupe.core.vlm.slot import SlotStatus

from .service import LoupeService

log = logging.getLogger(__name__)

DEMO_BANNER = ("**Demo weights: the model has random weights and its answers are not meaningful.** "
               "Use them to try the workflow only.")
CASE_COLUMNS = ["id", "title", "domain", "owner", "created", "messages"]


def status_banner(status: SlotStatus) -> str:
    if status.state == "ready":
        note = f"\n\n⚠️ {DEMO_BANNER}" if status.demo else ""
        return f"Model: `{status.model_id}` is ready.{note}"
    if status.state == "loading":
        return f"Model: loading `{status.model_id}`…"
    return (f"⛔ **No model is available.** {status.error}\n\n"
            "Answers need a model: configure `LOUPE_MODEL` (hub id or local path) and restart, "
            "or press *Use demo model* to try the workflow on random weights.")


def _read_upload(path: str | None) -> bytes:
    """Read an upload, then delete Gradio's copy: its file name (which may carry PHI) must not linger."""
    if not path:
        raise LoupeError("Choose a file to upload first.")
    upload = Path(path)
    try:
        return upload.read_bytes()
    finally:
        upload.unlink(missing_ok=True)
        if upload.parent.is_dir() and not any(upload.parent.iterdir()):
            shutil.rmtree(upload.parent, ignore_errors=True)


def build_app(service: LoupeService) -> gr.Blocks:
    domains = service.domains
    accepted = sorted({suffix for d in domains.values() for suffix in d.accepts})

    def list_cases(request: gr.Request) -> list[list]:
        user = service.user(request.username)
        return [[c.id, c.title, c.domain, c.owner, c.created_at, c.messages] for c in service.store.list_cases(user)]

    def model_status():
        return status_banner(service.slot.status)

    def use_demo_model():
        service.slot.load_demo(service.settings.models_dir)
        return status_banner(service.slot.status)

    def create_case(upload: str | None, domain_name: str, title: str, request: gr.Request):
        user = service.user(request.username)
        try:
            case_id = service.create_case(user, domain_name, _read_upload(upload), title)
        except LoupeError as exc:
            return f"⚠️ {exc}", gr.update(), gr.update(), gr.update(), gr.update(), None
        log.info("case %d created", case_id)
        image, history, _ = _open(case_id, request)
        return f"Case {case_id} created.", case_id, list_cases(request), image, history, None

    def _open(case_id: int, request: gr.Request):
        user = service.user(request.username)
        case = service.store.open_case(user, int(case_id))
        asset = case.assets[0]
        image = Image.open(io.BytesIO(service.store.assets.read(asset.sha256)))
        history = [{"role": m.role, "content": m.content} for m in case.messages]
        return image, history, f"Case {case.id}: {case.title}"

    def open_case(case_id: float | None, request: gr.Request):
        if case_id is None:
            return gr.update(), gr.update(), "Choose a case id.", None
        try:
            image, history, note = _open(int(case_id), request)
        except LoupeError as exc:
            return None, [], f"⚠️ {exc}", None
        return image, history, note, int(case_id)

    def ask(case_id: int | None, question: str, history: list, request: gr.Request):
        if case_id is None:
            yield history, "⚠️ Open or create a case first.", None
            return
        user = service.user(request.username)
        history = [*history, {"role": "user", "content": question}, {"role": "assistant", "content": ""}]
        try:
            for step in service.ask(user, int(case_id), question):
                history[-1] = {"role": "assistant", "content": step.text}
                if step.run is None:
                    yield history, "Answering…", None
                else:
                    run = step.run
                    note = (f"Answer saved (message {step.message_id}). {run.output_tokens} tokens, "
                            f"first token {run.time_to_first_token_s:.2f} s, {run.tokens_per_s:.1f} tok/s, "
                            f"{run.visual_tokens} visual tokens, {run.model_id}")
                    if service.slot.status.demo:
                        note += " — demo weights, not a meaningful answer"
                    yield history, note, step.message_id
        except LoupeError as exc:
            yield history[:-2], f"⚠️ {exc}", None

    def review(message_id: int | None, verdict: str, edited: str, request: gr.Request):
        if message_id is None:
            return "⚠️ There is no answer to review yet."
        user = service.user(request.username)
        try:
            review_id = service.store.review(user, int(message_id), verdict, edited or None)
        except LoupeError as exc:
            return f"⚠️ {exc}"
        return f"Review {review_id} saved ({verdict})."

    # delete_cache: Gradio-cached files (uploads, rendered images) are removed after an hour.
    with gr.Blocks(title="Loupe", delete_cache=(3600, 3600)) as app:
        case_state = gr.State(None)
        answer_state = gr.Number(None, visible=False, precision=0, label="Answer id")
        gr.Markdown("# Loupe")
        banner = gr.Markdown(elem_id="model-status")
        with gr.Row():
            demo_button = gr.Button("Use demo model", size="sm", variant="secondary", scale=0)
            gr.Button("Log out", link="/logout", size="sm", scale=0)
        with gr.Row():
            with gr.Column(scale=2):
                with gr.Tab("New case"):
                    upload = gr.File(label="Image", file_types=accepted, type="filepath", elem_id="upload")
                    domain_choice = gr.Dropdown([(d.title, d.name) for d in domains.values()],
                                                value=next(iter(domains), None), label="Domain")
                    title = gr.Textbox(label="Title", placeholder="Short description (optional)")
                    create = gr.Button("Create case", variant="primary", elem_id="create-case")
                with gr.Tab("My cases"):
                    cases = gr.Dataframe(headers=CASE_COLUMNS, interactive=False, label="Cases")
                    with gr.Row():
                        case_id_box = gr.Number(label="Case id", precision=0)
                        open_button = gr.Button("Open")
                    refresh = gr.Button("Refresh", size="sm")
                status = gr.Markdown(elem_id="status")
                viewer = gr.Image(label="Case image", interactive=False, format="png")
            with gr.Column(scale=3):
                chat = gr.Chatbot(label="Conversation", elem_id="chat", height=420)
                question = gr.Textbox(label="Question", placeholder="Ask about the image", elem_id="question")
                ask_button = gr.Button("Ask", variant="primary", elem_id="ask")
                with gr.Accordion("Review the last answer", open=False):
                    verdict = gr.Radio(["accepted", "edited"], value="accepted", label="Verdict")
                    edited_text = gr.Textbox(label="Corrected answer (for 'edited')", lines=3)
                    review_button = gr.Button("Save review")
                    review_status = gr.Markdown()

        app.load(model_status, outputs=banner, api_name="model_status")
        app.load(list_cases, outputs=cases, api_name=False)
        demo_button.click(use_demo_model, outputs=banner, api_name="use_demo_model")
        refresh.click(list_cases, outputs=cases, api_name="list_cases")
        create.click(create_case, [upload, domain_choice, title],
                     [status, case_state, cases, viewer, chat, upload], api_name="create_case")
        open_button.click(open_case, case_id_box, [viewer, chat, status, case_state], api_name="open_case")
        ask_event = dict(fn=ask, inputs=[case_state, question, chat], outputs=[chat, status, answer_state])
        ask_button.click(**ask_event, api_name="ask")
        question.submit(**ask_event, api_name=False)
        review_button.click(review, [answer_state, verdict, edited_text], review_status, api_name="review")
    return app


def configure_gradio_env(service: LoupeService) -> None:
    """Keep Gradio's cache under LOUPE_HOME and its analytics off; must run before launch."""
    os.environ["GRADIO_TEMP_DIR"] = str(service.settings.gradio_tmp_dir)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"


def launch(service: LoupeService, host: str = "127.0.0.1", port: int | None = None,
           block: bool = True) -> tuple[gr.Blocks, str]:
    configure_gradio_env(service)
    app = build_app(service)
    app.queue(default_concurrency_limit=1)

    def check_login(username: str, password: str) -> bool:
        return service.store.authenticate(username, password) is not None

    app.launch(server_name=host, server_port=port, auth=check_login, auth_message="Log in to Loupe",
               prevent_thread_lock=not block, show_error=False, quiet=not block)
    return app, app.local_url
