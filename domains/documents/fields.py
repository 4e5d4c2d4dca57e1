"""Key fields of a receipt or invoice (company, date, address, total) from its OCR lines, by rules.

A training-free baseline that needs no model: the issuer is the first line carrying a company form
(SDN BHD, LTD, GmbH …) or else the first line of words; the address is the lines under it until a
tax, phone or document-number line; the date is the first date written in a common form; the total is
the largest amount on a line labelled as a total (not a quantity, tax or subtotal line).
"""

from __future__ import annotations

import re

from loupe.core.ocr.base import Page

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Receipt or invoice key fields",
    "type": "object",
    "properties": {
        "company": {"type": ["string", "null"], "description": "who issued the document"},
        "date": {"type": ["string", "null"], "description": "the document date, as written"},
        "address": {"type": ["string", "null"], "description": "the issuer's address, one line"},
        "total": {"type": ["string", "null"], "description": "the amount to pay, digits and decimal point"},
    },
    "required": ["company", "date", "address", "total"],
    "additionalProperties": False,
}

_COMPANY = re.compile(r"\b(SDN\.?\s*BHD|S/B|BHD|LTD|LLC|INC|GMBH|AG|SARL|PLC|ENTERPRISE|TRADING|CO\.)\b", re.I)
_DATE = re.compile(r"\b(\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{4}-\d{2}-\d{2}|\d{1,2}\s+[A-Z][a-z]{2,8}\.?\s+\d{4})\b")
_AMOUNT = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})*\.\d{2})(?![\d.])")
_TOTAL = re.compile(r"\bTOTAL\b|\bAMOUNT\s+DUE\b|\bNETT?\b|\bGRAND\b|\bBALANCE\s+DUE\b", re.I)
# Quantities, subtotals, amounts before tax or discount, and the tax itself are not what is paid.
_NOT_TOTAL = re.compile(r"\bQTY\b|\bQUANTITY\b|SUB\s*-?\s*TOTAL|\bEXCL|\bDISCOUNT\b|\bSAVINGS?\b|\bITEMS?\b"
                        r"|TOTAL\s+(GST|TAX|VAT)\b|\b(GST|TAX|VAT)\s+SUMMARY\b", re.I)
_ADDRESS_END = re.compile(r"\bGST\b|\bTEL\b|\bPHONE\b|\bMOBILE\b|\bFAX\b|\bE-?MAIL\b|\bWWW\.|\bREG\b"
                          r"|\bCO\.?\s*NO\b|\bINVOICE\b|\bRECEIPT\b|\bTAX\b|\bID\b", re.I)
_DOCUMENT_TYPE = re.compile(r"^\W*(TAX\s+INVOICE|INVOICE|RECEIPT|OFFICIAL\s+RECEIPT|CASH\s+BILL|BILL)\W*$", re.I)
_REGISTRATION = re.compile(r"\(\s*[A-Z0-9][A-Z0-9 -]{3,}\)", re.I)


def _rows(page: Page) -> list[str]:
    """Lines that share a row joined left to right (a label and its amount are often two boxes)."""
    rows: list[list] = []
    for line in page.lines:
        centre = (line.box[1] + line.box[3]) / 2
        height = line.box[3] - line.box[1]
        for row in rows:
            ref = row[0]
            if abs(centre - (ref.box[1] + ref.box[3]) / 2) <= max(height, ref.box[3] - ref.box[1]) / 2:
                row.append(line)
                break
        else:
            rows.append([line])
    return [" ".join(ln.text for ln in sorted(row, key=lambda ln: ln.box[0])) for row in rows]


def _wordy(text: str) -> bool:
    letters = sum(ch.isalpha() for ch in text)
    return letters >= 4 and letters >= 0.6 * len(text.replace(" ", ""))


def _totals(rows: list[str]) -> list[float]:
    """Amounts on total rows; a label whose amount sits on the next row takes that one."""
    found = []
    for i, row in enumerate(rows):
        if not _TOTAL.search(row) or _NOT_TOTAL.search(row):
            continue
        amounts = _AMOUNT.findall(row) or (_AMOUNT.findall(rows[i + 1]) if i + 1 < len(rows) else [])
        found += [float(a.replace(",", "")) for a in amounts]
    return found


# How far each field's rule is to be trusted (measured on the SROIE receipts by `loupe bench ocr`: a
# company form or a labelled total is rarely wrong; the first line of words often is: a cover's title, a
# letter's recipient).
CONFIDENCE = {"company_form": 0.9, "company_first_line": 0.5, "date": 0.8, "address": 0.6, "total": 0.9}


def fields_with_confidence(page: Page) -> dict[str, dict]:
    """The key fields, each with how far its rule is to be trusted (None: not found)."""
    found, how = _extract(page)
    return {name: {"value": value, "confidence": CONFIDENCE[how[name]] if value and name in how else None}
            for name, value in found.items()}


def extract_fields(page: Page) -> dict[str, str | None]:
    return _extract(page)[0]


def _extract(page: Page) -> tuple[dict[str, str | None], dict[str, str]]:
    # Top to bottom: a receipt header is one centred column, whatever the page's reading order.
    lines = [ln.text.strip() for ln in sorted(page.lines, key=lambda ln: ln.box[1]) if ln.text.strip()]
    totals = _totals(_rows(page))
    header = [(i, t) for i, t in enumerate(lines[:8]) if not _DOCUMENT_TYPE.match(t)]
    company_at = next((i for i, t in header if _COMPANY.search(t)), None)
    how = {"date": "date", "address": "address", "total": "total",
           "company": "company_form" if company_at is not None else "company_first_line"}
    # Without a company form, the first line of words names the issuer only on a receipt or an invoice (a
    # total, or the document says what it is): on a book cover or a letter it is a title or a recipient.
    if company_at is None and (totals or any(_DOCUMENT_TYPE.match(t) for t in lines[:8])):
        company_at = next((i for i, t in header if _wordy(t)), None)
    company = _REGISTRATION.sub("", lines[company_at]).strip() if company_at is not None else None
    address_lines = []
    if company_at is not None:
        for text in lines[company_at + 1:company_at + 7]:
            if _ADDRESS_END.search(text) or _DATE.search(text):
                break
            if cleaned := _REGISTRATION.sub("", text).strip():
                address_lines.append(cleaned)
    date = next((m.group(1) for t in lines for m in [_DATE.search(t)] if m), None)
    return {"company": company or None, "date": date, "address": " ".join(address_lines) or None,
            "total": f"{max(totals):.2f}" if totals else None}, how
