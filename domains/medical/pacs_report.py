"""A case's answers and report-check findings sent back to the PACS its series came from, as a DICOM
Comprehensive SR (highdicom) stored with STOW-RS, where clinicians look: next to the study in their viewer.

The document follows the shape of TID 2000 (Basic Diagnostic Imaging Report): a Diagnostic Imaging Report
container observed by a device (Loupe, and the model that answered), a Findings container with one Finding
per answer (the question and the answer as text), each inferred from the slices it read (IMAGE references
to the source instances), and a Comment per report-check finding. It belongs to the source study: patient
and study come from the PACS's own instances, so it is built in the worker that sends it and never kept
in Loupe.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from loupe.core.errors import InputRejected
from loupe.core.plugins import IngestedAsset
from loupe.core.sources.dicomweb import client, parse_location, request

from .pacs import PIXEL_TAGS, series_frames

SOURCE = Code("260753009", "SCT", "Source")  # an image an observation was made from
SERIES_NUMBER = 9901  # Loupe's reports in a study: a number no modality uses
MAX_TEXT = 10_000  # one TEXT item: UT holds more, but a reader's viewer shows this much at most


def _instance_header(location: str, uid: str) -> Dataset:
    """One source instance's header (no pixels), as evidence: its patient, study and SOP class."""
    ref = parse_location(location)
    found = request("instance metadata",
                    lambda: client(ref.base).retrieve_instance_metadata(ref.study, ref.series, uid))
    return Dataset.from_json({tag: value for tag, value in found.items() if tag not in PIXEL_TAGS})


def structured_report(series: IngestedAsset, answers: Sequence[dict], findings: Sequence[dict],
                      observer: str) -> Dataset:
    """The SR of a case read by reference from ``series``: ``answers`` as {"question", "text", "model",
    "citations"} (a citation's "slice" indexes the series), report-check ``findings`` as the checker's
    flags ({"kind", "section", "text", "reason"})."""
    import highdicom as hd

    if not answers and not findings:
        raise InputRejected("This case has no answer and no report-check finding to send.")
    frames = series_frames(series)
    uid_of = {slice_: uid for slice_, uid, _, _ in frames}
    cited = sorted({c["slice"] for a in answers for c in a.get("citations", []) if c.get("slice") in uid_of})
    middle = len(uid_of) // 2
    headers = {s: _instance_header(str(series.path), uid_of[s]) for s in dict.fromkeys([middle, *cited])}
    models = sorted({_model_name(a.get("model") or "") for a in answers} - {""})
    context = [
        hd.sr.CodeContentItem(codes.DCM.ObserverType, codes.DCM.Device, relationship_type="HAS OBS CONTEXT"),
        hd.sr.UIDRefContentItem(codes.DCM.DeviceObserverUID, observer, relationship_type="HAS OBS CONTEXT"),
        hd.sr.TextContentItem(codes.DCM.DeviceObserverName, "Loupe", relationship_type="HAS OBS CONTEXT"),
        *(hd.sr.TextContentItem(codes.DCM.AlgorithmName, model[:64], relationship_type="HAS OBS CONTEXT")
          for model in models)]
    found = hd.sr.ContainerContentItem(codes.DCM.Findings, relationship_type="CONTAINS")
    found.ContentSequence = []
    for answer in answers:
        text = f"Question: {answer.get('question', '')}\nAnswer: {answer['text']}"[:MAX_TEXT]
        item = hd.sr.TextContentItem(codes.DCM.Finding, text, relationship_type="CONTAINS")
        slices = [c["slice"] for c in answer.get("citations", []) if c.get("slice") in headers]
        if slices:
            item.ContentSequence = [
                hd.sr.ImageContentItem(SOURCE, headers[s].SOPClassUID, headers[s].SOPInstanceUID,
                                       relationship_type="INFERRED FROM") for s in slices]
        found.ContentSequence.append(item)
    comments = [hd.sr.TextContentItem(codes.DCM.Comment, _finding_text(f)[:MAX_TEXT], relationship_type="CONTAINS")
                for f in findings]
    root = hd.sr.ContainerContentItem(codes.LN.DiagnosticImagingReport, template_id="2000")
    root.ContentSequence = [*context, *([found] if answers else []), *comments]
    evidence = list(headers.values())
    return hd.sr.ComprehensiveSR(
        evidence=evidence, content=root, series_instance_uid=generate_uid(), series_number=SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="Loupe",
        series_description="Loupe answers (not verified)", is_complete=True, is_final=False, is_verified=False)


def _model_name(model_id: str) -> str:
    """A hub id as it is; a local checkpoint by its folder's name (a server path says nothing to a reader
    and tells the PACS about the server's disk)."""
    return PurePosixPath(model_id).name if model_id.startswith(("/", "~", ".")) else model_id


def _finding_text(finding: dict) -> str:
    where = f" in the {finding['section']}" if finding.get("section") else ""
    return (f"Report check ({finding.get('kind', 'flag')}){where}: \"{finding.get('text', '')}\" - "
            f"{finding.get('reason', '')}").rstrip(" -")


def send_report(series: IngestedAsset, answers: Sequence[dict], findings: Sequence[dict], observer: str) -> dict:
    """Build the SR and store it in the source PACS (STOW-RS); returns what the user is told."""
    report = structured_report(series, answers, findings, observer)
    ref = parse_location(str(series.path))
    request("storing the report", lambda: client(ref.base).store_instances([report], ref.study))
    return {"answers": len(answers), "findings": len(findings), "sop_instance_uid": str(report.SOPInstanceUID)}
