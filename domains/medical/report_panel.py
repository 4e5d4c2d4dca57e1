"""The medical tab's report panel: write the report, check it (the rule checker, with the study's
laterality), see each flagged span marked with its kind and reason, and have a reviewer sign it off.
Every version is stored with its findings (``DomainTab.save_report``)."""

from __future__ import annotations

import html
from collections.abc import Sequence

import gradio as gr  # at module level: Gradio reads the handlers' type hints to pass the request

from loupe.core.budgets import BudgetExceeded, Budgets
from loupe.core.errors import LoupeError
from loupe.core.plugins import DomainTab, IngestedAsset

from .ingest import png_image
from .reports.rules import Flag, check_rules
from .reports.sections import parse_report
from .reports.vlm_check import VLMChecker, combine

TEMPLATE = "FINDINGS:\n\nIMPRESSION:\n"


def image_laterality(assets: Sequence[IngestedAsset]) -> str | None:
    for asset in assets:
        side = asset.meta.get("ImageLaterality") or asset.meta.get("Laterality")
        if side in ("L", "R"):
            return side
    return None


def check_text(text: str, assets: Sequence[IngestedAsset], vlm=None,  # noqa: ANN001 - a core VLM
               limits: Budgets | None = None) -> list[dict]:
    """The rules (with the study's laterality), and with ``vlm`` the model's vote over the report and
    the study's first image too. A report longer than ``limits.max_text_chars`` (default: the budgets the
    environment sets) is refused with ``BudgetExceeded`` before it is read."""
    flags = rule_flags(text, image_laterality(assets), limits)
    if vlm is not None:
        flags = combine(flags, model_flags(text, assets, vlm)[1])
    return [flag.as_dict() for flag in flags]


def rule_flags(text: str, side: str | None, limits: Budgets | None = None) -> list[Flag]:
    """The rules' flags over ``text`` (the app runs this as a worker job: its cost grows with the text)."""
    limits = limits or Budgets.from_env()
    limits.check("max_text_chars", len(text), "The report")
    return check_rules(parse_report("case", text), image_laterality=side, limits=limits)


def model_flags(text: str, assets: Sequence[IngestedAsset], vlm) -> tuple[str, list[Flag]]:  # noqa: ANN001
    """The model's vote over the report with the study's first image (in the process that holds the model):
    what to tell the user of it, and its flags."""
    views = [a for a in assets if a.meta.get("kind") == "view"]
    checker = VLMChecker(vlm)
    vote, flags = checker.vote_and_flags(parse_report("case", text), png_image(views[0]) if views else None)
    asked = len(checker.prompts)
    said = round(vote.share * asked)
    verdict = (f"found an error ({vote.kind or 'kind not named'}): {said} of {asked} prompts said so"
               if vote.has_error else f"found no error: {said} of {asked} prompts said there is one")
    return verdict, flags


# A flagged span in yellow; the words it contradicts (the other side) in blue, underlined.
MARK_STYLE = ("<style>.loupe-report mark.loupe-flag-other{background:#d6e6ff;text-decoration:underline dashed}"
              "</style>")


def _marks(findings: list[dict], section: str) -> list[tuple[int, int, str, str]]:
    """(start, end, css class, title) of each span to mark in ``section``: every flag's own span, and the other
    side of a contradiction (the words it contradicts), marked apart."""
    spans = {(f["span"][0], f["span"][1], "loupe-flag", f"{f['kind']}: {f['reason']}")
             for f in findings if f["section"] == section}
    spans |= {(f["related"][1], f["related"][2], "loupe-flag loupe-flag-other",
               f"contradicted by the {f['section']}: {f['reason']}")
              for f in findings if f.get("related") and f["related"][0] == section}
    return sorted(spans, key=lambda span: (span[0], -span[1]))


def marked(text: str, findings: list[dict]) -> str:
    """The report's sections with every flagged span (and what it contradicts) marked; the reasons below."""
    report = parse_report("case", text)
    parts = []
    for section, body in report.sections.items():
        out, cursor = [], 0
        for start, end, css, title in _marks(findings, section):
            if start < cursor:  # overlapping flags: the first one marks the text
                continue
            out.append(html.escape(body[cursor:start]))
            out.append(f'<mark class="{css}" title="{html.escape(title)}">{html.escape(body[start:end])}</mark>')
            cursor = end
        out.append(html.escape(body[cursor:]))
        parts.append(f"<p><strong>{section.title()}:</strong> {''.join(out)}</p>")
    if findings:
        items = "".join(f"<li><strong>{html.escape(f['kind'].replace('_', ' '))}</strong> in the {f['section']}: "
                        f"{html.escape(f['reason'])}{_against(report, f)} (confidence {f['confidence']:.2f})</li>"
                        for f in findings)
        summary = f"<p>{len(findings)} possible error{'s' if len(findings) != 1 else ''}:</p><ul>{items}</ul>"
    else:
        summary = "<p>No possible error found by the rules (they cannot see everything: read it again).</p>"
    return f'{MARK_STYLE}<div class="loupe-report">{"".join(parts)}{summary}</div>'


def _against(report, finding: dict) -> str:  # noqa: ANN001 - a parsed Report
    if not finding.get("related"):
        return ""
    section, start, end = finding["related"]
    return f" — against “{html.escape(report.text(section)[start:end])}” in the {html.escape(section)}"


def add_report_panel(tab: DomainTab) -> None:
    with gr.Accordion("Report", open=True, elem_id="medical-report-tools"):
        text = gr.Textbox(value=TEMPLATE, label="Report", lines=8, elem_id="medical-report",
                          info="Sections start with FINDINGS:, IMPRESSION: (INDICATION:, COMPARISON: too).")
        with gr.Row():
            check = gr.Button("Check report", elem_id="medical-check-report", variant="primary")
            use_model = gr.Checkbox(False, label="Ask the model too", elem_id="medical-check-with-model",
                                    info="Three yes/no prompts with the image, then the kind of error: slower.")
            sign = gr.Button("Sign off report", elem_id="medical-sign-report", variant="secondary")
        shown = gr.HTML(elem_id="medical-report-flags")
        # The id of the report version on screen: the one a sign-off signs. A component, not a gr.State, for the
        # same reason as ``tab.shown_case``: the page sends it with the click, so a queued sign-off signs the
        # version the reviewer read when she clicked, or nothing.
        read = gr.Number(None, precision=0, visible="hidden", show_label=False, container=False,
                         interactive=False, elem_id="medical-report-read")

    def check_report(case_id: int | None, report_text: str, with_model: bool, read_id: int | None,
                     request: gr.Request) -> tuple[str, int | None]:
        if case_id is None:
            return "<p>⚠️ Open or create a case first.</p>", None
        note = ""
        try:
            vlm, label = tab.model(request) if with_model else (None, "")
            assets = tab.case_assets(case_id, request, with_bytes=with_model)  # the model looks at an image
            flags = tab.run_job(request, "Checking the report", rule_flags,
                                (report_text, image_laterality(assets), tab.budgets))
            if vlm is not None:
                verdict, voted = model_flags(report_text, assets, vlm)
                flags = combine(flags, voted)
            findings = [flag.as_dict() for flag in flags]
            saved = tab.save_report(case_id, request, report_text, findings)
        except BudgetExceeded as exc:  # nothing was checked or saved: say so, and what to do
            return (f"<p>⚠️ {html.escape(str(exc))} It was not checked or saved: check a shorter report "
                    "(for example its findings and impression).</p>"), read_id
        except LoupeError as exc:
            return f"<p>⚠️ {html.escape(str(exc))}</p>", read_id
        if with_model:
            note = f"<p>Checked by the rules and by {html.escape(label)}, which {html.escape(verdict)}.</p>"
        return marked(report_text, findings) + note + "<p>Saved as a new version of the case's report.</p>", saved

    def sign_off(case_id: int | None, read_id: int | None, request: gr.Request) -> str:
        if case_id is None:
            return "<p>⚠️ Open or create a case first.</p>"
        if read_id is None:
            return "<p>⚠️ There is no report to sign off yet.</p>"
        try:
            tab.sign_off_report(case_id, request, read_id)  # refused if a newer version was saved meanwhile
        except LoupeError as exc:
            return f"<p>⚠️ {html.escape(str(exc))}</p>"
        report = tab.latest_report(case_id, request)
        return marked(report["text"], report["findings"]) + "<p>✅ Signed off by you.</p>"

    def opened(case_id: int | None, request: gr.Request) -> tuple:
        report = tab.latest_report(case_id, request) if case_id is not None else None
        if report is None:  # a structured report's own text is the first draft to check
            structured = [a for a in tab.case_assets(case_id, request, with_bytes=False)
                          if a.meta.get("kind") == "sr_text"] \
                if case_id is not None else []
            return (structured[0].meta["text"] if structured else TEMPLATE), "", None
        note = "<p>✅ Signed off.</p>" if report["signed_off"] else ""
        return report["text"], marked(report["text"], report["findings"]) + note, report["id"]

    # The case id the page showed when the button was clicked (a queued check runs later, maybe after a switch).
    check.click(check_report, [tab.shown_case, text, use_model, read], [shown, read],
                api_name="medical_check_report")
    sign.click(sign_off, [tab.shown_case, read], shown, api_name="medical_sign_off_report")
    tab.case_id.change(opened, tab.case_id, [text, shown, read], api_name=False)
