"""nginx for the tests: the app's runner of docs/nginx-loupe.conf (apps/nginx_site.py), with Debian's
nginx found or the test skipped locally / failed in CI."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import missing_service

from loupe.apps import nginx_site
from loupe.apps.nginx_site import site_config

__all__ = ["nginx_binary", "running_nginx", "site_config"]


def nginx_binary() -> str:
    found = os.environ.get("LOUPE_TEST_NGINX") or shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if not found:
        missing_service("nginx is not installed (.ci/with-services.sh installs it and sets LOUPE_TEST_NGINX)")
    return found


@contextmanager
def running_nginx(folder: Path, site: str, port: int) -> Iterator[str]:
    """nginx serving ``site`` on ``port`` (from ``free_port``), in the foreground; yields its URL."""
    try:
        with nginx_site.running_nginx(nginx_binary(), folder, site, port) as url:
            yield url
    except RuntimeError as exc:
        pytest.fail(str(exc))
