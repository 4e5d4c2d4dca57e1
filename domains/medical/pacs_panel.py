"""The medical tab's "Send to PACS": a case opened from a PACS sends its answers and report-check findings
back to the source study as a DICOM structured report (``pacs_report``)."""

from __future__ import annotations

import gradio as gr  # at module level: Gradio reads the handlers' type hints to pass the request

from loupe.core.errors import LoupeError
from loupe.core.plugins import DomainTab


def add_pacs_panel(tab: DomainTab) -> None:
    with gr.Accordion("Send to PACS", open=False, elem_id="medical-pacs"):
        gr.Markdown("For a series opened from a PACS: this case's answers (with the slices each read) and the "
                    "report check's findings are stored in the source study as a DICOM structured report, "
                    "marked unverified, where the PACS viewer shows it.", elem_classes="hint")
        send = gr.Button("Send to PACS", size="sm", elem_id="medical-send-pacs")
        said = gr.Textbox(show_label=False, interactive=False, elem_id="medical-send-status", container=False)

    def sent(case_id: int | None, request: gr.Request) -> str:
        if case_id is None:
            return "Open a case first."
        try:
            return tab.send_to_source(int(case_id), request)
        except LoupeError as exc:
            return f"⚠️ {exc}"

    send.click(sent, tab.case_id, said, api_name="medical_send_to_pacs")
