"""The admin tab: model, users, adapters, data sources, purge of archived cases, the audit log. Every handler
re-checks the role."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import gradio as gr

from loupe.core.cases.models import User
from loupe.core.cases.store import ROLES
from loupe.core.errors import LoupeError

from ..firstrun import ADMIN, forget_initial_password
from ..service import LoupeService
from .adapters_admin import AdapterPanel
from .render import model_label, plain_reason, status_banner
from .sources_admin import SourcePanel

SWITCH_WAIT_S = 600  # the switch handler reports until then; the banner says the rest

USER_COLUMNS = ["User", "Role", "Status", "Created"]
AUDIT_COLUMNS = ["When (UTC)", "User", "Action", "Case", "Detail"]


class AdminPage:
    def __init__(self, service: LoupeService) -> None:
        self.service = service

    def _admin(self, request: gr.Request, action: str) -> User:
        user = self.service.user(request.username if request else None)
        self.service.store.require_admin(user, action)  # audited refusal for anyone else
        return user

    def build(self, banner: gr.Markdown) -> None:
        store = self.service.store
        status = gr.Markdown(elem_id="admin-status")
        with gr.Accordion("Model", open=True):
            gr.Markdown(f"Configured model: **{model_label(self.service.settings.model)}** "
                        f"(`LOUPE_MODEL`). The demo model has random weights: answers are not meaningful.")
            with gr.Row():
                reload_model = gr.Button("Load configured model", size="sm")
                demo_model = gr.Button("Use demo model", size="sm", variant="secondary", elem_id="use-demo")
        with gr.Accordion("Users", open=True):
            users = gr.Dataframe(headers=USER_COLUMNS, interactive=False, elem_id="admin-users", show_label=False)
            with gr.Row():
                name = gr.Textbox(label="User name", elem_id="admin-user-name")
                role = gr.Dropdown(list(ROLES), value="user", label="Role", elem_id="admin-user-role")
                password = gr.Textbox(label="New password (8+ characters)", type="password",
                                      elem_id="admin-user-password")
            with gr.Row():
                add = gr.Button("Add user", size="sm", variant="primary", elem_id="admin-add-user")
                set_role = gr.Button("Set role", size="sm")
                set_password = gr.Button("Set password", size="sm")
                disable = gr.Button("Disable", size="sm", variant="stop")
                enable = gr.Button("Enable", size="sm", variant="secondary")
        with gr.Accordion("Fine-tuned adapters", open=False):
            self.adapters = AdapterPanel(self.service, self._admin)
            self.adapters.build(status)
        with gr.Accordion("Data sources", open=False):
            self.sources = SourcePanel(self.service, self._admin)
            self.sources.build(status)
        with gr.Accordion("Purge an archived case", open=False):
            gr.Markdown("Purging deletes the case, its images, conversation and reviews for good. "
                        "The audit trail is kept. Only archived cases can be purged.")
            with gr.Row():
                purge_id = gr.Number(label="Case #", precision=0, elem_id="admin-purge-id")
                confirm = gr.Textbox(label="Type PURGE to confirm", elem_id="admin-purge-confirm")
            purge = gr.Button("Purge case", variant="stop", size="sm", elem_id="admin-purge")
        with gr.Accordion("Audit log (newest 200 events)", open=False):
            audit = gr.Dataframe(headers=AUDIT_COLUMNS, interactive=False, wrap=True, elem_id="admin-audit",
                                 show_label=False, max_height=400)
            refresh_audit = gr.Button("Refresh", size="sm", variant="secondary", elem_id="admin-audit-refresh")

        def user_rows(request: gr.Request) -> list[list]:
            self._admin(request, "user.list")
            return [[u.username, u.role, "active" if u.active else "disabled", u.created_at.strftime("%Y-%m-%d")]
                    for u in store.list_users()]

        def audit_rows(request: gr.Request) -> list[list]:
            try:
                self._admin(request, "audit.read")
            except LoupeError:
                return []  # refused and audited
            return [[e.at, e.user, e.action, e.case_id or "", e.detail] for e in store.audit_log()]

        def switch(demo: bool) -> Callable:
            def handler(request: gr.Request) -> Iterator[tuple]:
                """The switch as it goes: the page says when the new model answers, or why it does not (and
                which model still does) without a reload."""
                slot = self.service.slot
                try:
                    self.service.switch_model(self.service.user(request.username), demo)
                except LoupeError as exc:
                    yield f"⚠️ {exc}", gr.update()
                    return
                started = time.monotonic()
                while (slot.status.switching_to or slot.status.state == "loading") and \
                        time.monotonic() - started < SWITCH_WAIT_S:
                    yield f"Loading… {time.monotonic() - started:.0f} s", status_banner(slot.status)
                    time.sleep(1)
                status = slot.status
                if status.switch_error:
                    said = f"⚠️ The switch failed: {plain_reason(status.switch_error)} The model before still answers."
                elif status.state == "failed":
                    said = f"⚠️ The switch failed: {plain_reason(status.error or '')} No model is loaded."
                elif status.switching_to or status.state == "loading":
                    said = "Still loading: the banner says when it is ready."
                else:
                    said = "Model switched."
                yield said, status_banner(status)
            return handler

        def account(action: Callable[[User, str, str, str], str]) -> Callable:
            def handler(username: str, role_value: str, new_password: str, request: gr.Request):
                try:
                    actor = self._admin(request, "user.manage")
                    note = action(actor, (username or "").strip(), role_value, new_password or "")
                except LoupeError as exc:
                    return f"⚠️ {exc}", gr.update(), gr.update()
                return note, user_rows(request), ""  # the password box is emptied
            return handler

        def purge_case(case_id: float | None, confirmation: str, request: gr.Request):
            try:
                actor = self._admin(request, "case.purge")
                if case_id is None or confirmation.strip() != "PURGE":
                    return "⚠️ Enter the case number and type PURGE to confirm."
                self.service.purge_case(actor, int(case_id))
            except LoupeError as exc:
                return f"⚠️ {exc}"
            return f"Case {int(case_id)} purged."

        free = dict(concurrency_limit=None)
        self.load_handler = (user_rows, users)
        reload_model.click(switch(False), None, [status, banner], api_name="admin_load_model", **free)
        demo_model.click(switch(True), None, [status, banner], api_name="use_demo_model", **free)
        def add_user(actor: User, n: str, r: str, p: str) -> str:
            store.add_user(n, p, r, actor=actor)
            return f"User {n} added as {r}."

        def change_role(actor: User, n: str, r: str, p: str) -> str:
            store.set_role(actor, n, r)
            return f"{n} is now {r}."

        def change_password(actor: User, n: str, r: str, p: str) -> str:
            store.set_password(actor, n, p)
            if n == ADMIN:
                forget_initial_password(self.service.settings.initial_password_file)
            return f"Password of {n} changed."

        def disable_user(actor: User, n: str, r: str, p: str) -> str:
            store.set_active(actor, n, False)
            return f"{n} is disabled and can no longer log in."

        def enable_user(actor: User, n: str, r: str, p: str) -> str:
            store.set_active(actor, n, True)
            return f"{n} is enabled."

        for button, fn, api_name in ((add, add_user, "admin_add_user"), (set_role, change_role, "admin_set_role"),
                                     (set_password, change_password, "admin_set_password"),
                                     (disable, disable_user, "admin_disable_user"),
                                     (enable, enable_user, "admin_enable_user")):
            button.click(account(fn), [name, role, password], [status, users, password], api_name=api_name, **free)
        purge.click(purge_case, [purge_id, confirm], status, api_name="admin_purge_case", **free)
        refresh_audit.click(audit_rows, None, audit, api_name="admin_audit_log", **free)
