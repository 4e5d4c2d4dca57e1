"""The upload box of each tab: Gradio's File, handing the handler the spooled upload's path.

The upload itself is written to disk as it arrives (gate.py re-writes the multipart body part by part;
Gradio spools it), so the web process never holds it; the handler passes the path to a worker. Gradio's
own ``type="filepath"`` (6.31) leaves an empty temporary file in its cache on every call, so the box's
file step is replaced on the instance (a subclass would make Gradio write a .pyi stub into the package).
The file's name is not checked here: the tab's domain reads its content and refuses what it is not.
"""

from __future__ import annotations

import types

import gradio as gr
from gradio.utils import NamedString


def _spooled_path(_box: gr.File, f) -> NamedString | None:  # noqa: ANN001 - Gradio's FileData
    path = getattr(f, "path", None)
    return NamedString(path) if isinstance(path, str) and path else None


def spooled_file(**kwargs: object) -> gr.File:
    box = gr.File(type="filepath", **kwargs)
    box._process_single_file = types.MethodType(_spooled_path, box)  # noqa: SLF001 - see the module's docstring
    return box
