"""The DICOM viewer's routes (``core.plugins.frame_stack_element``): a case's frames read in a job worker by
the domain (``stack_info``, ``stack_frame``, ``stack_tags``) and sent to Cornerstone3D in the page.

``/case-stack/CASE/stack.json`` opens the view (access-checked, audited once as ``case.view``); each frame
``/case-stack/CASE/N.bin`` and its header ``/case-stack/CASE/N/tags.json`` are access-checked on every read.
A frame is its values as little-endian bytes; what they are (size, type, spacing, position, window) goes in
the ``X-Loupe-Frame`` header, numbers only.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from loupe.core.errors import InputRejected, LoupeError
from loupe.core.jobs import JobFailed, QueueFull

from .bundles import bundle_head
from .gate import WebSecurity

FRAME_HEADER = "X-Loupe-Frame"
HEAD = bundle_head("loupe-stack", "loupe-dicom")  # the viewer's script, loaded early


def build_router(security: WebSecurity) -> APIRouter:
    router = APIRouter()
    service = security.service

    def read(request: Request, case_id: int, method: str, args: tuple, audit: bool = False,
             ) -> tuple[object, JSONResponse | None]:
        user = security.user_for(request.scope)
        if user is None:
            return None, JSONResponse({"detail": "Not authenticated"}, status_code=401)
        try:
            return service.view_case(user, case_id, method, args, audit=audit), None
        except QueueFull as exc:  # the viewer asks again a moment later
            return None, JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": "1"})
        except JobFailed as exc:  # over the job's time or memory, or its worker died: said as such
            return None, JSONResponse({"detail": str(exc)}, status_code=503)
        except InputRejected as exc:  # a budget, an undecodable frame: said, not hidden
            return None, JSONResponse({"detail": str(exc)}, status_code=422)
        except LoupeError:  # no such case, or not this user's: the same answer
            return None, JSONResponse({"detail": "Not Found"}, status_code=404)

    @router.get("/case-stack/{case_id}/stack.json", include_in_schema=False)
    def stack_info(case_id: int, request: Request) -> Response:
        info, refused = read(request, case_id, "stack_info", (), audit=True)
        return refused or JSONResponse(info)  # the gate marks every case read no-store

    @router.get("/case-stack/{case_id}/{number}.bin", include_in_schema=False)
    def stack_frame(case_id: int, number: int, request: Request) -> Response:
        result, refused = read(request, case_id, "stack_frame", (number,))
        if refused is not None:
            return refused
        facts, data = result
        return Response(data, media_type="application/octet-stream", headers={FRAME_HEADER: json.dumps(facts)})

    @router.get("/case-stack/{case_id}/{number}/tags.json", include_in_schema=False)
    def stack_tags(case_id: int, number: int, request: Request) -> Response:
        tags, refused = read(request, case_id, "stack_tags", (number,))
        return refused or JSONResponse(tags)

    return router
