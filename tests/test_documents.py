"""The documents domain: PDF and page-image cases, OCR text in the question's context, the page viewer."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pypdfium2 as pdfium
import pytest

import loupe.domains.documents as documents
from loupe.apps.service import LoupeService
from loupe.core.config import Settings
from loupe.core.errors import InputRejected
from loupe.core.plugins import AssetView, Budgets
from loupe.domains.documents.viewer import pages_html

DATA = Path(__file__).parents[1] / "data"
LIMITS = Budgets(50 * 2**20, 89_478_485)
DOMAIN = documents.DocumentsDomain()


def _pdf(*sources: tuple[Path, list[int]], blank: int = 0) -> bytes:
    doc = pdfium.PdfDocument.new()
    for path, pages in sources:
        doc.import_pages(pdfium.PdfDocument(str(path)), pages)
    for _ in range(blank):
        doc.new_page(595, 842)
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


def test_a_mixed_pdf_becomes_one_page_asset_each_with_its_text():
    data = _pdf((DATA / "documents" / "multi_page.pdf", [0]), (DATA / "documents" / "ocr_test.pdf", [0]))
    first, second = DOMAIN.ingest(io.BytesIO(data), LIMITS)
    assert first.media_type == second.media_type == "image/png" and first.data.startswith(b"\x89PNG")
    assert (first.meta["page"], second.meta["page"]) == (1, 2)
    assert first.meta["ocr"]["source"] == "text-layer" and second.meta["ocr"]["source"] == "ocr"
    assert first.meta["ocr"]["lines"][0]["text"] == "The Evolution of the Word Processor"
    assert "Docling bundles PDF" in " ".join(ln["text"] for ln in second.meta["ocr"]["lines"])
    assert "note" not in first.meta


def test_a_receipt_photo_is_read_by_ocr():
    (page,) = DOMAIN.ingest(DATA / "samples" / "sroie_receipt_275.jpg", LIMITS)
    assert any("KLANG" in ln["text"].upper() for ln in page.meta["ocr"]["lines"])


def test_a_very_long_pdf_keeps_its_first_pages_and_says_so():
    data = _pdf((DATA / "documents" / "multi_page.pdf", [0, 1]), blank=1998)  # 2,000 pages
    assets = DOMAIN.ingest(io.BytesIO(data), Budgets(50 * 2**20, 89_478_485, max_pages=2))  # LOUPE_MAX_PAGES
    assert len(assets) == 2 and assets[0].meta["note"].startswith("Only the first 2 of 2000 pages are kept")


@pytest.mark.parametrize(("data", "message"), [
    (b"%PDF-1.4 broken", "not a readable PDF"),
    (b"", "empty"),
    (b"plain text, not a document", "neither a PDF nor a page image"),
])
def test_bad_documents_are_refused_with_a_reason(data, message):
    with pytest.raises(InputRejected, match=message):
        DOMAIN.ingest(io.BytesIO(data), LIMITS)


def test_the_question_picks_the_pages_and_their_text_goes_in_the_prompt():
    steps: list[tuple[int, int]] = []
    assets = DOMAIN.ingest(DATA / "documents" / "multi_page.pdf", LIMITS,
                           lambda done, total: steps.append((done, total)))
    assert steps == [(n, 5) for n in range(1, 6)]  # the app shows this as a progress bar
    assert len(assets) == 5
    texts = [" ".join(ln["text"] for ln in a.meta["ocr"]["lines"]) for a in assets]
    word = next(w for w in texts[3].split() if len(w) > 7 and all(w not in t for t in texts[:3] + texts[4:]))
    context = DOMAIN.context(assets, f"What does the document say about {word}?")
    assert 4 in context.meta["pages_read"] and len(context.images) == len(context.meta["pages_read"]) <= 3
    assert word in context.extra_text and "0-1000 page grid" in context.extra_text
    assert context.extra_text.count("[") >= 5  # lines carry their boxes


def test_viewer_draws_a_box_for_every_line():
    (page,) = DOMAIN.ingest(DATA / "documents" / "ocr_test.pdf", LIMITS)
    view = AssetView(7, "/case-assets/7", "image/png", page.width, page.height, "", page.meta)
    shown = pages_html([view])
    assert shown.count("<rect") == len(page.meta["ocr"]["lines"]) == 3
    assert 'src="/case-assets/7"' in shown and "read by OCR" in shown


def test_viewer_outlines_and_labels_the_region_types():
    assets = DOMAIN.ingest(DATA / "documents" / "multi_page.pdf", LIMITS)
    view = AssetView(4, "/case-assets/4", "image/png", assets[0].width, assets[0].height, "", assets[0].meta)
    shown = pages_html([view])
    assert shown.count('class="region title"') == 4  # the page's four headings
    assert shown.count('<text class="title"') == 4 and "<title>Title</title>" in shown
    many = [AssetView(i, f"/case-assets/{i}", "image/png", a.width, a.height, "", a.meta, 9)
            for i, a in enumerate(assets)]
    shown = pages_html(many, [{"page": 3, "box": [1, 2, 3, 4], "text": "x"}])
    assert shown.count('<a href="#loupe-case-9-page-') == 5 and 'id="loupe-case-9-page-5"' in shown
    assert '<a href="#loupe-case-9-page-3"><strong>3</strong></a>' in shown  # the cited page stands out


def test_an_answer_cites_the_lines_it_quotes_and_the_viewer_highlights_them():
    assets = DOMAIN.ingest(DATA / "documents" / "multi_page.pdf", LIMITS)
    context = DOMAIN.context(assets, "When was the first word processor made?")
    read = context.meta["pages_read"]
    page = next(a for a in assets if a.meta["page"] == read[0])
    quoted = max(page.meta["ocr"]["lines"], key=lambda ln: len(ln["text"]))
    # A model's quote: the words of one line, case changed and one character dropped.
    answer = f'On page {read[0]} it says: "{quoted["text"].lower()[:-1]}". That is all.'
    cited = DOMAIN.cite(assets, answer, context.meta)
    assert cited and cited[0]["page"] == read[0] and cited[0]["text"] == quoted["text"]
    assert cited[0]["box"] == quoted["box"]
    assert DOMAIN.cite(assets, "No.", context.meta) == []
    unread = next(a for a in assets if a.meta["page"] not in read)  # only the pages the model was shown
    other = max(unread.meta["ocr"]["lines"], key=lambda ln: len(ln["text"]))["text"]
    assert all(c["text"] != other for c in DOMAIN.cite(assets, other, context.meta))

    view = AssetView(3, "/case-assets/3", "image/png", page.width, page.height, "", page.meta)
    shown = pages_html([view], cited)
    assert shown.count('class="cited"') == len([c for c in cited if c["page"] == read[0]]) >= 1
    assert "cited</strong>" in shown and 'class="cited"' not in pages_html([view])


def test_asking_about_a_document_case_continues_the_conversation(tmp_path, tiny_model_dir):
    service = LoupeService.open(Settings(home=tmp_path, database_url=None, model="unused"))
    service.slot.load(tiny_model_dir("smolvlm"))
    user = service.store.add_user("dana", "dana-password-1", "user")
    two_pages = _pdf((DATA / "documents" / "multi_page.pdf", [0, 1]))  # within the pages read per question
    case_id = service.create_case(user, "documents", io.BytesIO(two_pages), "history")
    first = list(service.ask(user, case_id, "When was the first word processor made?"))[-1]
    assert first.run.extra["pages_read"] == [1, 2] and first.run.extra["reused_tokens"] == 0
    assert isinstance(first.run.extra["citations"], list)  # stored with the answer (random weights quote nothing)
    follow = list(service.ask(user, case_id, "Who made it?"))[-1]
    assert follow.run.extra["reused_tokens"] > 0  # same pages: the cached conversation went on


def _first_answer_run(home: Path, model: Path, **settings: object):  # noqa: ANN202 - a RunRecord
    service = LoupeService.open(Settings(home=home, database_url=None, model="unused", **settings))
    service.slot.load(model)
    user = service.store.add_user("dana", "dana-password-1", "user")
    case_id = service.create_case(user, "documents", DATA / "documents" / "multi_page.pdf", "history")
    return list(service.ask(user, case_id, "When was the first word processor made?"))[-1].run


def test_with_an_ocr_query_module_configured_the_page_text_goes_in_as_query_tokens(tmp_path, tiny_model_dir):
    from loupe.core.ocr.queries import OCRQueryEncoder
    from loupe.core.vlm.hf import HFVLM

    model = tiny_model_dir("smolvlm")
    base = HFVLM.from_pretrained(model, engine="plain")
    OCRQueryEncoder.for_model(base.model, queries=8, width=32, layers=1, heads=2).save(tmp_path / "queries")
    queried = _first_answer_run(tmp_path / "a", model, ocr_queries=tmp_path / "queries")
    assert queried.extra["ocr_text"] == "query tokens" and queried.extra["ocr_query_tokens"] == 8
    spelled = _first_answer_run(tmp_path / "b", model)  # the default: the text is written into the prompt
    assert spelled.extra["ocr_text"] == "prompt" and "ocr_query_tokens" not in spelled.extra
    assert spelled.prompt_tokens > 3 * queried.prompt_tokens


def test_a_follow_up_about_other_pages_reads_those_pages():
    assets = DOMAIN.ingest(DATA / "documents" / "multi_page.pdf", LIMITS)
    first = DOMAIN.context(assets, "When was the first word processor made?").meta["pages_read"]
    texts = [" ".join(ln["text"] for ln in a.meta["ocr"]["lines"]) for a in assets]
    unread = next(i for i in range(5) if i + 1 not in first)
    word = max((w for w in texts[unread].split() if w.isalpha() and all(w not in t for j, t in enumerate(texts)
                                                                      if j != unread)), key=len)
    assert unread + 1 in DOMAIN.context(assets, f"What about {word}?").meta["pages_read"]


def test_key_fields_of_a_real_receipt():
    (page,) = DOMAIN.ingest(DATA / "samples" / "sroie_receipt_275.jpg", LIMITS)
    expected = json.loads((DATA / "samples" / "sroie_receipt_275.key.json").read_text())
    assert page.meta["fields"]["date"] == expected["date"] and page.meta["fields"]["total"] == expected["total"]
    view = AssetView(1, "/case-assets/1", "image/png", page.width, page.height, "", page.meta)
    assert "Total: <strong>11.50</strong>" in pages_html([view])


def test_key_field_rules_on_a_made_up_invoice():
    from loupe.core.ocr.base import Line, Page
    from loupe.domains.documents.fields import SCHEMA, extract_fields

    def row(y: float, *cells: tuple[str, float]) -> list[Line]:
        return [Line(text, (x, y, x + 10 * len(text), y + 20), 0.9) for text, x in cells]

    lines = [*row(10, ("TAX INVOICE", 100)), *row(40, ("ACME TRADING SDN BHD (123456-X)", 50)),
             *row(70, ("(123456-X)", 80)), *row(100, ("12 HIGH STREET,", 60)), *row(130, ("10000 SOMEWHERE", 60)),
             *row(160, ("TEL: 03-1234 5678", 60)), *row(190, ("DATE: 05/03/2024 10:15", 20)),
             *row(300, ("TOTAL QTY", 20), ("3", 300)), *row(330, ("SUBTOTAL", 20), ("1,200.00", 300)),
             *row(360, ("TOTAL GST", 20), ("72.00", 300)), *row(390, ("TOTAL (INCL. GST)", 20), ("1,272.00", 300))]
    fields = extract_fields(Page(1, 400, 500, lines))
    assert fields == {"company": "ACME TRADING SDN BHD", "date": "05/03/2024",
                      "address": "12 HIGH STREET, 10000 SOMEWHERE", "total": "1272.00"}
    assert set(SCHEMA["required"]) == set(fields)
    # A cover or a letter (no total, no document type): its first line is a title or a recipient, no company.
    cover = [*row(10, ("Front cover", 100)), *row(40, ("The Annual Report of the Society", 20)),
             *row(70, ("Published 12/05/2021", 20))]
    assert extract_fields(Page(1, 400, 500, cover))["company"] is None


def test_markdown_and_json_downloads_are_checked_and_audited(tmp_path, tiny_model_dir):
    from webapp import serve

    with serve(tmp_path / "home", tiny_model_dir("smolvlm"), {"alice": "user", "bob": "user"}) as served:
        alice_user = served.service.user("alice")
        case_id = served.service.create_case(alice_user, "documents",
                                             DATA / "documents" / "ocr_test.pdf", "scan")
        alice, bob, anonymous = served.http("alice"), served.http("bob"), served.http()
        md = alice.get(f"/case-export/{case_id}/md")
        assert md.status_code == 200 and md.headers["content-type"].startswith("text/markdown")
        assert "Docling bundles PDF document conversion" in md.text
        assert md.headers["content-disposition"] == f'attachment; filename="case-{case_id}.md"'
        assert "no-store" in md.headers["cache-control"]
        doc = alice.get(f"/case-export/{case_id}/json").json()
        assert doc["pages"][0]["blocks"][0]["lines"][0]["confidence"] > 0.5
        # the key fields, each with its rule's confidence; a page of prose names no company
        assert set(doc["fields"]) == {"company", "date", "address", "total"}
        assert doc["fields"]["company"] == {"value": None, "confidence": None}
        assert alice.get(f"/case-export/{case_id}/xml").status_code == 404
        assert bob.get(f"/case-export/{case_id}/md").status_code == 404
        assert anonymous.get(f"/case-export/{case_id}/md").status_code == 401
        events = served.service.store.audit_events(case_id)
        assert [e.detail["format"] for e in events if e.action == "case.export"] == ["md", "json"]
        from loupe.core.cases.models import AuditEvent

        with served.service.store.sessions() as s:
            denied = s.query(AuditEvent).filter(AuditEvent.action == "case.denied",
                                                AuditEvent.user_id == served.service.user("bob").id).all()
        assert [e.detail["asked_for"] for e in denied] == [f"case {case_id}"]
