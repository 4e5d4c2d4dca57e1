"""Start the real web app on a loopback port and log in to it the ways users and clients do."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from gradio_client import Client
from helpers import free_port

from loupe.apps.service import LoupeService
from loupe.apps.web import launch
from loupe.apps.web.server import RunningApp
from loupe.core.budgets import Budgets
from loupe.core.config import Settings
from loupe.core.vlm.slot import ModelSlot, model_slot


@dataclass
class Served:
    service: LoupeService
    app: RunningApp
    url: str
    home: Path

    def http(self, username: str | None = None, password: str | None = None) -> httpx.Client:
        """An HTTP client, logged in when a user is given."""
        client = httpx.Client(base_url=self.url, timeout=60)
        if username:
            password = password or f"{username}-password"
            response = client.post("/login", data={"username": username, "password": password})
            assert response.status_code == 200, response.text
        return client

    def client(self, username: str, password: str | None = None) -> Client:
        return Client(self.url, auth=(username, password or f"{username}-password"), verbose=False)

    def files(self, folder: str = "tmp/gradio") -> list[Path]:
        return [p for p in (self.home / folder).rglob("*") if p.is_file()]


@contextmanager
def serve(home: Path, model: Path | None = None, users: dict[str, str] | None = None,
          loader: Callable | None = None, domains: dict | None = None, **settings: object) -> Iterator[Served]:
    """Run the app; ``users`` maps names to roles, each with the password ``<name>-password``."""
    options = dict(budgets=Budgets(2**20, 1_000_000)) | settings
    service_settings = Settings(home=home, database_url=None, model="unused", **options)
    slot = ModelSlot(loader, dtype="fp32") if loader else model_slot(service_settings)  # the app's own engine
    if model is not None:
        slot.load(model)
    service = LoupeService.open(service_settings, slot)
    service.domains.update(domains or {})  # extra plugins, as another installed package would add them
    for name, role in (users or {}).items():
        service.store.add_user(name, f"{name}-password", role)
    app, url = launch(service, port=free_port(), block=False)
    try:
        yield Served(service, app, url, home)
    finally:
        app.server.force_exit = True  # no second of grace for the test clients' idle keep-alive connections
        app.close()
