"""The Admin tab's data source panel: the places cases are opened from by reference, and who may read each."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from loupe.core.cases.models import User
from loupe.core.cases.store import ROLES
from loupe.core.errors import LoupeError
from loupe.core.sources import KINDS, credentials

from ..service import LoupeService

COLUMNS = ["Source", "Kind", "Tab", "Readers", "Location", "Credentials"]


class SourcePanel:
    def __init__(self, service: LoupeService, admin: Callable[[gr.Request, str], User]) -> None:
        self.service = service
        self._admin = admin  # the signed-in admin, or an audited refusal

    def build(self, status: gr.Markdown) -> None:
        store = self.service.store
        gr.Markdown("Users open items of a source in its tab, by reference: giant images stay where they are. "
                    "Readers are `role:NAME` or `user:NAME`, comma-separated; administrators read every source. "
                    "Credentials never go in the location: set them with `loupe sources credentials NAME` on "
                    "the server (kept owner-only in LOUPE_HOME/secrets).")
        table = gr.Dataframe(headers=COLUMNS, interactive=False, elem_id="admin-sources", show_label=False)
        with gr.Row():
            name = gr.Textbox(label="Name", placeholder="e.g. scenes", elem_id="admin-source-name")
            kind = gr.Dropdown(list(KINDS), value="http", label="Kind", elem_id="admin-source-kind")
            domain = gr.Dropdown(sorted(self.service.domains), value=None, label="Tab",
                                 elem_id="admin-source-domain")
        location = gr.Textbox(label="Location (a folder's absolute path, an https:// or s3:// prefix, a STAC "
                                    "catalogue or a DICOMweb root)",
                              elem_id="admin-source-location")
        readers = gr.Textbox(label="Readers", placeholder=f"role:{ROLES[0]}, user:ana", elem_id="admin-source-readers")
        with gr.Row():
            add = gr.Button("Add source", size="sm", variant="primary", elem_id="admin-source-add")
            remove = gr.Button("Remove source", size="sm", variant="stop", elem_id="admin-source-remove")
            refresh = gr.Button("Refresh", size="sm", variant="secondary", elem_id="admin-sources-refresh")

        def rows(request: gr.Request) -> list[list]:
            try:
                self._admin(request, "source.list")
            except LoupeError:
                return []  # refused and audited
            home = self.service.settings.home
            return [[s.name, s.kind, s.domain, ", ".join(s.readers) or "administrators", s.location,
                     "set" if credentials.has(home, s.name) else "none"] for s in store.sources()]

        def add_source(name_text: str, kind_value: str, domain_value: str | None, location_text: str,
                       readers_text: str, request: gr.Request):
            try:
                actor = self._admin(request, "source.add")
                if domain_value not in self.service.domains:
                    raise LoupeError("Choose the tab the source's items open in.")
                who = tuple(r.strip() for r in (readers_text or "").split(",") if r.strip())
                spec = store.add_source(actor, (name_text or "").strip(), kind_value, (location_text or "").strip(),
                                        domain_value, who)
            except LoupeError as exc:
                return f"⚠️ {exc}", gr.update()
            return f"Source {spec.name} added.", rows(request)

        def remove_source(name_text: str, request: gr.Request):
            try:
                actor = self._admin(request, "source.remove")
                cases = store.remove_source(actor, (name_text or "").strip())
                credentials.remove(self.service.settings.home, (name_text or "").strip())
            except LoupeError as exc:
                return f"⚠️ {exc}", gr.update()
            kept = f" {cases} case(s) read from it: they now say it was removed." if cases else ""
            return f"Source {name_text.strip()} removed.{kept}", rows(request)

        free = dict(concurrency_limit=None)
        self.load_handler = (rows, table)
        refresh.click(rows, None, table, api_name="admin_sources", **free)
        add.click(add_source, [name, kind, domain, location, readers], [status, table], api_name="admin_source_add",
                  **free)
        remove.click(remove_source, name, [status, table], api_name="admin_source_remove", **free)
