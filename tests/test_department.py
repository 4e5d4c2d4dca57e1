"""A department's deployment (README "For a department"): two ``loupe serve`` processes on one database behind
docs/nginx-loupe.conf, with Loupe's own login form. Each browser stays with one process; logins live in the
database, so when a process dies its users carry on, signed in, on the other."""

from __future__ import annotations

import httpx
from helpers import free_port
from nginxsite import running_nginx, site_config
from prometheus_client.parser import text_string_to_metric_families
from servers import kill_group, start_serve, wait_up

from loupe.core.cases.assets import AssetStore
from loupe.core.cases.db import open_database
from loupe.core.cases.store import CaseStore

USERS = [f"user{i}" for i in range(16)]


def _config_reads(port: int) -> float:
    """How many GET /config this process answered (its own /metrics, read from loopback)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "loupe_http_requests_total" and sample.labels.get("route") == "/config")


def test_two_processes_behind_nginx_share_logins_and_a_dead_one_s_users_carry_on(tmp_path):
    home = tmp_path / "home"
    store = CaseStore(open_database(f"sqlite:///{home / 'loupe.db'}"), AssetStore(home / "assets"))
    for name in USERS:
        store.add_user(name, f"{name}-password", "user")
    ports, nginx_port = (free_port(), free_port()), free_port()
    processes = [start_serve(home, port, LOUPE_TRUSTED_PROXIES="127.0.0.1") for port in ports]
    (tmp_path / "nginx").mkdir()
    try:
        for port, process in zip(ports, processes, strict=True):
            wait_up(f"http://127.0.0.1:{port}", process)
        with running_nginx(tmp_path / "nginx", site_config(nginx_port, ports), nginx_port) as url:
            browsers = {name: httpx.Client(base_url=url, timeout=60) for name in USERS}
            served_by: dict[str, int] = {}
            for name, browser in browsers.items():
                assert browser.post("/login", data={"username": name, "password": f"{name}-password"}).status_code \
                    == 200
                before = [_config_reads(port) for port in ports]
                for _ in range(3):
                    assert browser.get("/config").status_code == 200
                grew = [after - was for after, was in zip([_config_reads(port) for port in ports], before,
                                                          strict=True)]
                assert sorted(grew) == [0, 3]  # all three reads by one process: the browser stays with it
                served_by[name] = ports[grew.index(3)]
            assert set(served_by.values()) == set(ports)  # and the users are spread over both

            kill_group(processes[0])  # one process dies mid-morning
            before = _config_reads(ports[1])
            for name, browser in browsers.items():  # everyone carries on, still signed in (the database knows)
                assert browser.get("/config").status_code == 200, name
                assert browser.get("/gradio_api/user").json() == name
            assert _config_reads(ports[1]) - before == len(USERS)  # the survivor served them all
            moved = [n for n, port in served_by.items() if port == ports[0]]
            leaving = browsers[moved[0]]
            assert leaving.post("/logout").status_code == 200
            assert leaving.get("/config").status_code == 401
    finally:
        for process in processes:
            kill_group(process)
