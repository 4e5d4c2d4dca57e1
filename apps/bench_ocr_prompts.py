"""One document page asked three ways, side by side: what it costs the model to read it.

- ``high image``: the page at the high detail level, no OCR (what a plain VLM app does for fine print);
- ``low image + OCR text``: the documents tab's default, a low-detail page plus its OCR text;
- ``low image + query tokens``: a low-detail page plus the OCR query module's K tokens.

The page goes through the documents domain (ingest, context) and the service's message builder, on
the app's default engine; weights are random (real-size architecture), so only costs are meaningful.
Every run starts cold (no cached features or conversation).
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import tempfile
from pathlib import Path

QUESTION = "What is the total amount?"
NEW_TOKENS = 8


def _measure(page: str, family: str, size: str, repeats: int, out: mp.Queue) -> None:
    from loupe.apps.service import conversation_messages
    from loupe.core.ocr.queries import OCRQueryEncoder
    from loupe.core.plugins import Budgets, VisualContext
    from loupe.core.vlm import worker
    from loupe.core.vlm.base import GenerationOptions
    from loupe.core.vlm.hf import HFVLM
    from loupe.core.vlm.tiny import make_tiny
    from loupe.domains.documents import DocumentsDomain

    try:
        domain = DocumentsDomain()
        assets = domain.ingest(Path(page), Budgets(50 * 2**20, 89_478_485))
        context = domain.context(assets, QUESTION)
        with tempfile.TemporaryDirectory() as tmp:
            vlm = HFVLM.from_pretrained(make_tiny(family, Path(tmp) / family, size=size))
        module = worker.call(OCRQueryEncoder.for_model, vlm.model, base_model=f"{family}-{size}")
        styles = {
            "high image": (VisualContext(images=context.images), "high", None),
            "low image + OCR text": (context, domain.default_detail, None),
            "low image + query tokens": (context, domain.default_detail, module),
        }
        rows = []
        for name, (ctx, detail, queries) in styles.items():
            vlm.attach_queries(queries)
            messages = conversation_messages(domain.system_prompt, ctx, [("user", QUESTION)], queries is not None)
            runs = []
            for _ in range(repeats):
                vlm.forget()  # cold: a new page is encoded for its first question
                runs.append(vlm.chat(messages, GenerationOptions(NEW_TOKENS, NEW_TOKENS, detail=detail)).run)
            rows.append({"style": name, "detail": detail, "engine": vlm.engine.name,
                         "visual_tokens": runs[0].visual_tokens, "prompt_tokens": runs[0].prompt_tokens,
                         "ocr_query_tokens": runs[0].extra.get("ocr_query_tokens", 0),
                         "ttft_s": round(statistics.median(r.time_to_first_token_s for r in runs), 3)})
        out.put({"family": family, "size": size, "page": Path(page).name, "ocr_lines": len(context.layout),
                 "query_module_parameters": sum(p.numel() for p in module.parameters()), "rows": rows})
    except Exception as exc:  # the OCR rows must still be reported
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def run_prompt_styles(page: Path, family: str = "smolvlm", size: str = "real", repeats: int = 2) -> dict:
    """Runs in a child process, so the model's memory does not count against the OCR rows."""
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(str(page), family, size, repeats, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def style_ratios(result: dict) -> dict:
    """Time to first token of each low-detail style as a fraction of the high-detail image's."""
    ttft = {row["style"]: row["ttft_s"] for row in result.get("rows", [])}
    high = ttft.get("high image")
    if not high:
        return {}
    return {"ttft_fraction_low_ocr_text_vs_high": round(ttft["low image + OCR text"] / high, 3),
            "ttft_fraction_low_query_tokens_vs_high": round(ttft["low image + query tokens"] / high, 3)}
