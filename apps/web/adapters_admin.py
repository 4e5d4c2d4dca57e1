"""The Admin tab's adapter panel: every fine-tuned adapter with its card, and which one each domain uses."""

from __future__ import annotations

import json
from collections.abc import Callable

import gradio as gr

from loupe.core.cases.models import User
from loupe.core.errors import LoupeError
from loupe.core.finetune.card import read_card

from ..service import LoupeService
from .render import model_label

COLUMNS = ["Adapter", "Domain", "In use", "Base model", "Steps", "Train loss", "Eval loss", "Exact match",
           "Trainable", "Size"]
BASE = "base model (no adapter)"


def _size(nbytes: int | None) -> str:
    return f"{nbytes / 2**20:.1f} MB" if nbytes else ""


def adapter_row(adapter, card: dict | None) -> list:  # noqa: ANN001 - loupe.core.cases.models.Adapter
    metrics = adapter.metrics or {}
    evals = (card or {}).get("evaluations") or []
    exact = evals[-1].get("exact_match") if evals else None
    fraction = metrics.get("trainable_fraction")
    return [adapter.name, adapter.domain, "✅" if adapter.active else "", model_label(adapter.base_model),
            metrics.get("steps", ""), metrics.get("final_train_loss", ""), metrics.get("best_eval_loss") or "",
            "" if exact is None else f"{exact:.0%}", "" if fraction is None else f"{fraction:.2%}",
            _size(metrics.get("adapter_bytes"))]


class AdapterPanel:
    def __init__(self, service: LoupeService, admin: Callable[[gr.Request, str], User]) -> None:
        self.service = service
        self._admin = admin  # the signed-in admin, or an audited refusal

    def build(self, status: gr.Markdown) -> None:
        store = self.service.store
        gr.Markdown("Each domain answers with its adapter in use, or with the base model. A switch applies to the "
                    "next question; the base model is not reloaded. Train adapters with `loupe finetune`.")
        table = gr.Dataframe(headers=COLUMNS, interactive=False, elem_id="admin-adapters", show_label=False)
        with gr.Row():
            chosen = gr.Dropdown([], label="Adapter", elem_id="admin-adapter-name",
                                 allow_custom_value=True)  # the handlers look the name up
            domain = gr.Dropdown(sorted(self.service.domains), value=None, label="Domain",  # no silent default
                                 elem_id="admin-adapter-domain", allow_custom_value=True)
        with gr.Row():
            activate = gr.Button("Use for its domain", size="sm", variant="primary", elem_id="admin-adapter-use")
            base = gr.Button("Answer with the base model", size="sm", elem_id="admin-adapter-base")
            refresh = gr.Button("Refresh", size="sm", variant="secondary", elem_id="admin-adapters-refresh")
        card = gr.Code(label="Adapter card", language="json", interactive=False, elem_id="admin-adapter-card")

        def rows(request: gr.Request):
            try:
                self._admin(request, "adapter.list")
            except LoupeError:
                return [], gr.update(choices=[])  # refused and audited
            adapters = store.adapters()
            listed = [adapter_row(a, read_card(a.path)) for a in adapters]
            return listed, gr.update(choices=[a.name for a in adapters])

        def show_card(name: str | None, request: gr.Request) -> str:
            try:
                self._admin(request, "adapter.card")
            except LoupeError:
                return ""
            found = store.adapter(name or "")
            if found is None:
                return ""
            data = read_card(found.path)
            return json.dumps(data, indent=1) if data else f"// No adapter_card.json beside {found.path}"

        def switch(use_adapter: bool) -> Callable:
            def handler(name: str | None, domain_name: str | None, request: gr.Request):
                try:
                    actor = self._admin(request, "adapter.activate")
                    if use_adapter:
                        found = store.adapter(name or "")
                        if found is None:
                            raise LoupeError("Choose an adapter first.")
                        store.activate_adapter(found.name, found.domain, actor=actor)
                        note = f"{found.domain} now answers with {found.name}."
                    else:
                        if domain_name not in self.service.domains:
                            raise LoupeError("Choose the domain that should answer with the base model.")
                        store.activate_adapter(None, domain_name, actor=actor)
                        note = f"{domain_name} now answers with the base model."
                except LoupeError as exc:
                    return f"⚠️ {exc}", gr.update(), gr.update()
                listed, choices = rows(request)
                return note, listed, choices
            return handler

        free = dict(concurrency_limit=None)
        self.load_handler = (rows, [table, chosen])
        refresh.click(rows, None, [table, chosen], api_name="admin_adapters", **free)
        chosen.change(show_card, chosen, card, api_name="admin_adapter_card", **free)
        activate.click(switch(True), [chosen, domain], [status, table, chosen], api_name="admin_adapter_use", **free)
        base.click(switch(False), [chosen, domain], [status, table, chosen], api_name="admin_adapter_base", **free)
