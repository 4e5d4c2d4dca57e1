"""The upload box of each tab: Gradio's File, handing the handler the spooled upload's path.

The upload itself is written to disk as it arrives (gate.py re-writes the multipart body part by part;
Gradio spools it), so the web process never holds it; the handler passes the path to a worker. Gradio's
own ``type="filepath"`` (6.31) leaves an empty temporary file in its cache on every call, so the box's
file step is replaced on the instance (a subclass would make Gradio write a .pyi stub into the package).
"""

from __future__ import annotations

import types

import gradio as gr
from gradio.utils import NamedString
from gradio_client import utils as client_utils


def _spooled_path(box: gr.File, f) -> NamedString:  # noqa: ANN001 - Gradio's FileData
    if box.file_types and not client_utils.is_valid_file(f.path, box.file_types):
        raise gr.Error(f"Invalid file type. Please upload a file that is one of these formats: {box.file_types}")
    return NamedString(f.path)


def spooled_file(**kwargs: object) -> gr.File:
    box = gr.File(type="filepath", **kwargs)
    box._process_single_file = types.MethodType(_spooled_path, box)  # noqa: SLF001 - see the module's docstring
    return box
