"""The admin endpoints' names are listed to admins only.

Gradio lists every named endpoint in ``/gradio_api/info``, in ``/config`` and in the page (``window.gradio_config``
and ``window.gradio_api_info``). gradio_client needs the first two, so for anyone else the admin endpoints are
taken out of the listings (their dependencies stay, renamed and undocumented: the page keeps working). The admin
handlers check the role themselves whether or not they are listed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, MutableMapping
from typing import Any

# Paths whose answer lists endpoints: the page, its config and the API description.
LISTING = re.compile(r"^/(|config/?|gradio_api/info/?)$")
ADMIN_API = re.compile(r"^/?(admin_\w*|use_demo_model)$")
_PAGE_JSON = re.compile(rb"(<script>window\.(gradio_config|gradio_api_info) = )(.*?)(;</script>)", re.DOTALL)


def _hide(data: Any) -> Any:  # noqa: ANN401 - parsed JSON
    """``data`` (a config or an API description) without the admin endpoints' names."""
    if not isinstance(data, dict):
        return data
    for key in ("named_endpoints", "unnamed_endpoints"):
        if isinstance(data.get(key), dict):
            data[key] = {name: spec for name, spec in data[key].items() if not ADMIN_API.match(name)}
    for dependency in data.get("dependencies") or []:
        if isinstance(dependency, dict) and ADMIN_API.match(str(dependency.get("api_name") or "")):
            # Renamed, and undocumented rather than private: gradio_client can still call it by fn_index, so the
            # handler's own role check answers (and audits) instead of the client refusing on its behalf.
            dependency.update(api_name=f"endpoint_{dependency.get('id')}", api_visibility="undocumented")
    return data


def _page_json(match: re.Match[bytes]) -> bytes:
    text = json.dumps(_hide(json.loads(match.group(3))))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")  # as Gradio's toorjson
    return match.group(1) + text.encode() + match.group(4)


def hide_admin_api(body: bytes, html: bool) -> bytes:
    if html:
        return _PAGE_JSON.sub(_page_json, body)
    try:
        return json.dumps(_hide(json.loads(body))).encode()
    except ValueError:
        return body


def listing_for_non_admin(send: Callable) -> Callable:
    """Wrap ``send``: the response body is held, the admin endpoints are taken out, then it goes out whole."""
    start: MutableMapping[str, Any] | None = None
    chunks: list[bytes] = []

    async def wrapped(message: MutableMapping[str, Any]) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        if message["type"] != "http.response.body" or start is None:
            return await send(message)
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        html = any(k.lower() == b"content-type" and b"text/html" in v for k, v in headers)
        body = b"".join(chunks)
        if start.get("status") == 200 and not any(k.lower() == b"content-encoding" for k, _ in headers):
            body = hide_admin_api(body, html)
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return wrapped
