"""The Admin tab's data source panel: the places cases are opened from by reference, and who may read each."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from loupe.core.cases.models import User
from loupe.core.cases.store import ROLES
from loupe.core.errors import LoupeError
from loupe.core.sources import KINDS, SourceSpec, credentials

from ..service import LoupeService

COLUMNS = ["Source", "Kind", "Tab", "Readers", "Location", "Credentials"]


class SourcePanel:
    def __init__(self, service: LoupeService, admin: Callable[[gr.Request, str], User]) -> None:
        self.service = service
        self._admin = admin  # the signed-in admin, or an audited refusal

    def _named(self, name_text: str | None) -> SourceSpec:
        name = (name_text or "").strip()
        spec = next((s for s in self.service.store.sources() if s.name == name), None)
        if spec is None:
            raise LoupeError("Give the name of an existing source above.")
        return spec

    def build(self, status: gr.Markdown) -> None:
        store = self.service.store
        gr.Markdown("Users open items of a source in its tab, by reference: giant images stay where they are. "
                    "Readers are `role:NAME` or `user:NAME`, comma-separated; administrators read every source. "
                    "Credentials never go in the location: set them below or with `loupe sources credentials "
                    "NAME` on the server (kept owner-only in LOUPE_HOME/secrets, never shown again).")
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

        with gr.Accordion("Credentials of the source named above", open=False):
            gr.Markdown("One `key=value` per line. s3: `access_key_id`, `secret_access_key`, and optionally "
                        "`session_token`, `region`, `endpoint` (an S3-compatible store); http, stac-api and "
                        "dicomweb: `username` and `password`, or `token`. Setting replaces what the source had.")
            secret = gr.Textbox(label="Credentials", lines=3, max_lines=6, show_label=False,
                                elem_id="admin-source-secret", elem_classes=["loupe-secret"])
            with gr.Row():
                set_secret = gr.Button("Set credentials", size="sm", elem_id="admin-source-secret-set")
                clear_secret = gr.Button("Clear credentials", size="sm", variant="stop",
                                         elem_id="admin-source-secret-clear")

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

        def set_credentials(name_text: str, text: str, request: gr.Request):
            """The typed values go to the secrets file and nowhere else: the box is emptied, the audit names
            the keys only."""
            try:
                actor = self._admin(request, "source.credentials")
                spec = self._named(name_text)
                values = credentials.parse(spec.kind, (text or "")[:64 * 1024])
                if not values:
                    raise LoupeError("Type key=value lines, or use Clear credentials.")
                credentials.save(self.service.settings.home, spec.name, spec.kind, spec.location, values)
                store.audit(actor, "source.credentials", detail={"source": spec.name, "keys": sorted(values)})
            except LoupeError as exc:
                return f"⚠️ {exc}", gr.update(), ""
            return f"Credentials of {spec.name} set ({', '.join(sorted(values))}).", rows(request), ""

        def clear_credentials(name_text: str, request: gr.Request):
            try:
                actor = self._admin(request, "source.credentials")
                spec = self._named(name_text)
                removed = credentials.remove(self.service.settings.home, spec.name)
                store.audit(actor, "source.credentials", detail={"source": spec.name, "cleared": removed})
            except LoupeError as exc:
                return f"⚠️ {exc}", gr.update(), ""
            return f"Credentials of {spec.name} {'removed' if removed else 'were not set'}.", rows(request), ""

        free = dict(concurrency_limit=None)
        self.load_handler = (rows, table)
        refresh.click(rows, None, table, api_name="admin_sources", **free)
        add.click(add_source, [name, kind, domain, location, readers], [status, table], api_name="admin_source_add",
                  **free)
        remove.click(remove_source, name, [status, table], api_name="admin_source_remove", **free)
        set_secret.click(set_credentials, [name, secret], [status, table, secret], api_name="admin_source_credentials",
                         **free)
        clear_secret.click(clear_credentials, name, [status, table, secret], api_name="admin_source_credentials_clear",
                           **free)
