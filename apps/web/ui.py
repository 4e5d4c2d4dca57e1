"""The Gradio UI: a top bar, the model banner, one tab per domain, and an admin tab for admins."""

from __future__ import annotations

import gradio as gr

from ..service import LoupeService
from .admin import AdminPage
from .gate import WebSecurity
from .render import status_banner
from .workspace import Workspace

CSS = """
.loupe-dz-box { border: 2px solid #ffd600; background: rgba(255,214,0,.08); color: #ffd600; font: bold 14px sans-serif;
  text-align: left; vertical-align: top; padding: 2px 4px; cursor: zoom-in; text-shadow: 0 0 3px #000; }
.loupe-map-screen { width: 100%; height: 60vh; background: #111; }
.loupe-map-tools { display: flex; flex-wrap: wrap; gap: 4px; align-items: center; margin-bottom: 4px; }
.loupe-map-tools select { font-size: .85rem; padding: 2px 8px; width: auto; }
.loupe-map-histogram { display: block; width: 100%; max-width: 320px; height: 64px; background: #fafafa;
  border: 1px solid #e0e0e0; margin-bottom: 4px; }
.loupe-map-readout, .loupe-map-values { font-size: .9em; margin: .3em 0; font-variant-numeric: tabular-nums; }
.loupe-stack-tools { display: flex; flex-wrap: wrap; gap: 4px; align-items: center; margin-bottom: 4px; }
.loupe-stack-tools button, .loupe-stack-tools select, .loupe-stack-tools input { font-size: .85rem;
  padding: 2px 8px; border: 1px solid var(--border-color-primary); border-radius: 4px; background: none;
  color: inherit; width: auto; min-width: 0; }
.loupe-stack-tools button[aria-pressed=true] { background: var(--color-accent-soft); font-weight: 600; }
.loupe-stack-tools .loupe-stack-fps { width: 4.5em; }
.loupe-stack-screen { width: 100%; aspect-ratio: 1 / 1; max-height: 75vh; background: #000; position: relative; }
.loupe-stack-status { font-size: .9em; margin: .3em 0; }
.loupe-stack-measurements { font-size: .9em; margin: 0 0 .3em 1.2em; }
.loupe-stack-tag-table { font-size: .8em; border-collapse: collapse; width: 100%; }
.loupe-stack-tag-table td, .loupe-stack-tag-table th { border-bottom: 1px solid var(--border-color-primary);
  padding: 1px 4px; text-align: left; vertical-align: top; word-break: break-word; }
.loupe-viewer { margin: 0; }
.loupe-viewer img { display: block; max-width: 100%; max-height: 70vh; margin: 0 auto; image-rendering: auto; }
.loupe-viewer figcaption { font-size: .85em; color: var(--body-text-color-subdued); padding: .3em 0; }
.loupe-viewer.empty { padding: 3em 1em; text-align: center; color: var(--body-text-color-subdued);
  border: 1px dashed var(--border-color-primary); border-radius: 8px; }
.hint { font-size: .85em; color: var(--body-text-color-subdued); }
#topbar { align-items: center; }
/* The conversation lives in the case database: a "clear" button would only hide it, so it is not offered. */
.loupe-chat button[aria-label="Clear"] { display: none; }
/* Reviews under an answer: written by the app as HTML, which no typed or generated text can produce. */
.loupe-review { margin-top: .5em; padding: .3em .6em; border-left: 3px solid var(--color-accent);
  background: var(--background-fill-secondary); border-radius: 4px; }
.loupe-review blockquote { margin: .3em 0 0; }
/* Secrets typed into a multi-line box: masked like a password field (Chromium, Safari, Firefox >= 124). */
.loupe-secret textarea { -webkit-text-security: disc; }
#logout { padding: .3em .9em; border-radius: var(--button-small-radius); border: 1px solid var(--border-color-primary);
  background: var(--button-secondary-background-fill); color: var(--button-secondary-text-color); cursor: pointer;
  font-size: var(--button-small-text-size); }
"""
LOGOUT_FORM = '<form method="post" action="/logout"><button type="submit" id="logout">Log out</button></form>'


def build_ui(service: LoupeService, security: WebSecurity) -> gr.Blocks:
    with gr.Blocks(title="Loupe", delete_cache=(600, 900)) as blocks:
        with gr.Row(elem_id="topbar"):
            gr.Markdown("## Loupe")
            whoami = gr.Markdown(elem_id="whoami")
            # A POST from this page (the gate checks its origin): a link or an image elsewhere cannot log out.
            gr.HTML(LOGOUT_FORM, js_on_load=None, scale=0, min_width=0, elem_id="logout-form")
        banner = gr.Markdown(elem_id="model-status")
        workspaces = []
        with gr.Tabs():
            # The general tab first (what a new user expects to land on), then the rest by title.
            for domain in sorted(service.domains.values(), key=lambda d: (d.name != "general", d.title)):
                with gr.Tab(domain.title, id=f"tab-{domain.name}"):
                    workspace = Workspace(service, domain, security)
                    workspace.build()
                    workspaces.append(workspace)
            with gr.Tab("Admin", id="tab-admin", visible=False) as admin_tab:
                admin = AdminPage(service)
                admin.build(banner)

        def who(request: gr.Request):
            user = service.user(request.username if request else None)
            return f"Signed in as **{user.username}** ({user.role})", gr.update(visible=user.is_admin)

        def model_status() -> str:
            return status_banner(service.slot.status)

        blocks.load(who, None, [whoami, admin_tab], api_name=False)
        for workspace in workspaces:
            fn, outputs = workspace.load_handler
            blocks.load(fn, None, outputs, api_name=False)
        user_rows, users_table = admin.load_handler

        def admin_rows(request: gr.Request) -> list[list]:
            # Only admins get rows; everyone else's (hidden) table stays empty.
            return user_rows(request) if service.user(request.username).is_admin else []

        blocks.load(admin_rows, None, users_table, api_name=False)
        adapter_rows, adapter_outputs = admin.adapters.load_handler

        def admin_adapters(request: gr.Request):
            if not service.user(request.username).is_admin:
                return [], gr.update()
            return adapter_rows(request)

        blocks.load(admin_adapters, None, adapter_outputs, api_name=False)
        source_rows, source_table = admin.sources.load_handler

        def admin_sources(request: gr.Request) -> list[list]:
            return source_rows(request) if service.user(request.username).is_admin else []

        blocks.load(admin_sources, None, source_table, api_name=False)
        blocks.load(model_status, None, banner, api_name="model_status")

        def page_closed(request: gr.Request) -> None:
            # A file still being read for a page that is gone is not kept (and frees its place in the queue).
            for workspace in workspaces:
                workspace.screen.request_stop(request)

        blocks.unload(page_closed)
    return blocks
