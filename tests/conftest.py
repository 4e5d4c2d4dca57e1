"""Shared fixtures: tiny real-architecture models, databases (SQLite and PostgreSQL), settings."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from loupe.core.budgets import Budgets
from loupe.core.config import Settings
from loupe.core.vlm.tiny import make_tiny

REQUIRE_SERVICES = os.environ.get("LOUPE_REQUIRE_SERVICES") == "1"


def _share_the_cores() -> None:
    """Under pytest-xdist, each test process (and the servers it starts) gets its share of the cores for
    torch's and OpenMP's threads: two processes each spinning one thread per core slowed the suite's
    model tests two- to threefold."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        share = max(1, (os.cpu_count() or 1) // workers)
        os.environ.setdefault("OMP_NUM_THREADS", str(share))
        torch.set_num_threads(share)


_share_the_cores()
# One engine measurement per model for the whole run (each test has its own LOUPE_HOME, and measuring on every
# load cost about 2.7 s); the tests of the measurement itself give their own cache file.
os.environ.setdefault("LOUPE_ENGINE_CACHE", str(Path(tempfile.gettempdir()) / "loupe-tests" / (
    f"engines-{os.environ.get('PYTEST_XDIST_TESTRUNUID') or os.getpid()}.json")))


def missing_service(reason: str) -> None:
    """Skip locally, fail in CI: a test that silently does not run proves nothing."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required test service missing: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def _a_loupe_home_of_this_run(tmp_path_factory: pytest.TempPathFactory):
    """Whatever a test leaves to LOUPE_HOME's default (the engine measurements, settings built without a home)
    goes to a folder of this run, never to the developer's ~/.loupe."""
    before = os.environ.get("LOUPE_HOME")
    os.environ["LOUPE_HOME"] = str(tmp_path_factory.mktemp("loupe-home"))
    yield
    if before is None:
        os.environ.pop("LOUPE_HOME", None)
    else:
        os.environ["LOUPE_HOME"] = before


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory):
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = make_tiny(family, tmp_path_factory.mktemp(f"tiny-{family}"))
        return built[family]

    return get


def _postgres_database() -> str:
    admin_url = os.environ.get("LOUPE_TEST_POSTGRES_URL")
    if not admin_url:
        missing_service("LOUPE_TEST_POSTGRES_URL is not set (make test starts a server)")
    name = f"loupe_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def _drop_postgres_database(url: str) -> None:
    admin_url = os.environ["LOUPE_TEST_POSTGRES_URL"]
    name = url.rsplit("/", 1)[1]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'loupe.db'}"
        return
    url = _postgres_database()
    yield url
    _drop_postgres_database(url)


@pytest.fixture
def store(db_url: str, tmp_path: Path):
    """A case store on SQLite or PostgreSQL (see ``db_url``), blobs under ``tmp_path``."""
    from loupe.core.cases.assets import AssetStore
    from loupe.core.cases.db import open_database
    from loupe.core.cases.store import CaseStore

    return CaseStore(open_database(db_url), AssetStore(tmp_path / "assets"))


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(home=tmp_path / "home", database_url=db_url, model="unused",
                    budgets=Budgets(5 * 2**20, 4_000_000))


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", database_url=None, model="unused",
                    budgets=Budgets(5 * 2**20, 4_000_000))


# The files that take longest, longest first (per-file totals of a full run, 2026-12-06, later): pytest-xdist hands
# whole files to its processes in collection order, so a long file collected last would run alone at the end.
LONG_FILES = ("test_case_binding.py", "test_browser.py", "test_served_model.py", "test_stored_metadata.py",
              "test_finetune.py", "test_ocr_queries.py", "test_pacs.py", "test_medical.py", "test_batch_tools.py",
              "test_ocr.py", "test_serve.py", "test_viewers.py", "test_department.py", "test_pacs_slides.py",
              "test_cli.py", "test_crash_safety.py", "test_sharing.py", "test_app.py", "test_sources.py",
              "test_http.py", "test_reports.py", "test_csrf.py", "test_stac_api.py", "test_documents.py",
              "test_bench_gpu.py", "test_s3_source.py", "test_accounts.py", "test_injection.py", "test_sessions.py",
              "test_remote_sensing.py", "test_slides.py", "test_ops_endpoints.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: place for place, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable: order within a file kept
