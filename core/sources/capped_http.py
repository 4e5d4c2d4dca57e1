"""An HTTP session whose answers are bounded: a PACS or catalogue cannot make Loupe hold more than a budget.

A response is refused when it declares a larger body (Content-Length) and, for servers that do not say
(chunked answers), as soon as what arrived passes the bound; the bound counts decoded bytes, so a
gzip-compressed answer cannot inflate past it either. Callers that stream (``stream=True``) read the body
themselves and get only the declared-size check.
"""

from __future__ import annotations

import requests

from ..budgets import BudgetExceeded, Budgets, describe, over_budget

CHUNK = 1 << 16


class CappedSession(requests.Session):
    def __init__(self, max_bytes: int, what: str) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.what = what  # starts the refusal: "One answer of the PACS"

    def _refuse(self, response: requests.Response, declared: int | None) -> BudgetExceeded:
        response.close()
        if declared is not None:
            return BudgetExceeded(over_budget("max_bytes", declared, self.max_bytes, self.what), "max_bytes")
        setting = Budgets.__dataclass_fields__["max_bytes"].metadata["limit"].setting
        return BudgetExceeded(f"{self.what} passed {describe('max_bytes', self.max_bytes)}, as much as Loupe accepts; "
                              f"it stopped reading (an administrator can raise {setting}).", "max_bytes")

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
        streamed = bool(kwargs.get("stream", False))
        kwargs["stream"] = True  # read the body here, in parts, counting
        response = super().send(request, **kwargs)
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise self._refuse(response, int(declared))
        if streamed:
            return response
        body = bytearray()
        for chunk in response.iter_content(CHUNK):
            body += chunk
            if len(body) > self.max_bytes:
                raise self._refuse(response, None)
        # What requests itself sets once it has read a body: later reads of .content/.text use it.
        response._content = bytes(body)
        response._content_consumed = True
        return response
