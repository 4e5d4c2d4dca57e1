"""Case database on SQLite and PostgreSQL: schema, users, visibility, audit, runs, reviews."""

import pytest
from sqlalchemy import inspect, select, text

from loupe.core.cases.assets import AssetStore
from loupe.core.cases.db import current_revision, make_engine, open_database
from loupe.core.cases.models import AuditEvent, ModelRun
from loupe.core.cases.store import CaseStore
from loupe.core.errors import AccessDenied, LoupeError
from loupe.core.plugins import IngestedAsset
from loupe.core.vlm.base import RunRecord


@pytest.fixture
def store(db_url, tmp_path):
    return CaseStore(open_database(db_url), AssetStore(tmp_path / "assets"))


def _asset(data: bytes = b"pixels") -> IngestedAsset:
    return IngestedAsset(data=data, media_type="image/png", width=4, height=2)


def _run() -> RunRecord:
    return RunRecord(model_id="m", adapter=None, device="cpu", dtype="float32", prompt_tokens=30,
                     visual_tokens=20, output_tokens=5, time_to_first_token_s=0.1, total_time_s=0.3,
                     tokens_per_s=20.0)


def test_migrations_create_every_table_at_head(db_url):
    engine = make_engine(db_url)
    open_database(db_url)
    assert current_revision(engine) == "0001"
    tables = set(inspect(engine).get_table_names())
    assert {"users", "cases", "assets", "messages", "model_runs", "reviews", "audit_events", "adapters"} <= tables
    open_database(db_url)  # applying again is a no-op
    assert current_revision(engine) == "0001"


def test_sqlite_runs_in_wal_mode(sqlite_settings):
    engine = make_engine(sqlite_settings.db_url)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_users_passwords_and_roles(store):
    store.add_user("alice", "correct horse", "reviewer")
    assert store.authenticate("alice", "correct horse").role == "reviewer"
    assert store.authenticate("alice", "wrong password") is None
    assert store.authenticate("nobody", "whatever1") is None
    assert store.get_user("alice").password_hash.startswith("scrypt$")
    with pytest.raises(LoupeError, match="already exists"):
        store.add_user("alice", "another pass")
    with pytest.raises(LoupeError, match="unknown role"):
        store.add_user("bob", "long enough", "root")
    with pytest.raises(LoupeError, match="at least 8"):
        store.add_user("bob", "short")
    actions = [e.action for e in store.audit_events()]
    assert actions.count("login") == 1 and actions.count("login.failed") == 2


def test_cases_are_private_to_their_owner_except_for_admins(store):
    alice = store.add_user("alice", "password-a")
    bob = store.add_user("bob", "password-b")
    admin = store.add_user("root", "password-r", "admin")
    case_id = store.create_case(alice, "general", "left wrist", [_asset()])
    assert [c.id for c in store.list_cases(alice)] == [case_id]
    assert store.list_cases(bob) == []
    assert [c.owner for c in store.list_cases(admin)] == ["alice"]
    with pytest.raises(AccessDenied):
        store.open_case(bob, case_id)
    with pytest.raises(AccessDenied):
        store.open_case(bob, case_id + 100)  # missing and forbidden read the same
    assert store.open_case(admin, case_id).title == "left wrist"
    events = [(e.action, e.user_id) for e in store.audit_events()]
    assert ("case.denied", bob.id) in events and ("case.read", admin.id) in events


def test_every_case_read_is_audited(store):
    alice = store.add_user("alice", "password-a")
    case_id = store.create_case(alice, "general", "", [_asset()])
    for _ in range(3):
        case = store.open_case(alice, case_id)
    assert case.title == "Untitled case" and case.assets[0].sha256
    asset, data = store.read_asset(alice, case.assets[0].id)
    assert data == b"pixels"
    reads = [e.action for e in store.audit_events(case_id) if e.action.endswith(".read")]
    assert reads == ["case.read"] * 3 + ["asset.read"]


def test_blobs_are_stored_by_content_hash_only(store, tmp_path):
    alice = store.add_user("alice", "password-a")
    case_id = store.create_case(alice, "general", "t", [_asset(b"same"), _asset(b"same")])
    case = store.open_case(alice, case_id)
    files = [p for p in (tmp_path / "assets").rglob("*") if p.is_file()]
    assert [p.name for p in files] == [case.assets[0].sha256]
    assert case.assets[0].sha256 == case.assets[1].sha256


def test_failed_case_creation_leaves_no_blob(store, tmp_path):
    ghost = store.add_user("ghost", "password-g")
    ghost.id = 999_999  # no such user: the foreign key makes the insert fail
    with pytest.raises(Exception):  # noqa: B017 - the driver's IntegrityError type differs per database
        store.create_case(ghost, "general", "t", [_asset(b"orphan")])
    assert not [p for p in (tmp_path / "assets").rglob("*") if p.is_file()]


def test_answers_keep_their_model_run_and_reviews(store):
    alice = store.add_user("alice", "password-a")
    case_id = store.create_case(alice, "general", "t", [_asset()])
    store.add_question(alice, case_id, "Is there a fracture?")
    answer_id = store.add_answer(alice, case_id, "No fracture.", _run(), demo_weights=True)
    review_id = store.review(alice, answer_id, "edited", "Hairline fracture of the distal radius.")
    case = store.open_case(alice, case_id)
    assert [(m.role, m.content) for m in case.messages] == [("user", "Is there a fracture?"),
                                                           ("assistant", "No fracture.")]
    run = case.messages[1].model_run
    assert (run.visual_tokens, run.output_tokens, run.demo_weights) == (20, 5, True)
    assert case.messages[1].reviews[0].id == review_id
    assert case.messages[1].reviews[0].edited_text.startswith("Hairline")
    with pytest.raises(LoupeError, match="corrected text"):
        store.review(alice, answer_id, "edited", "  ")
    with pytest.raises(LoupeError, match="only model answers"):
        store.review(alice, case.messages[0].id, "accepted")
    with store.sessions() as s:
        assert s.scalar(select(ModelRun.model_id)) == "m"
        assert s.scalar(select(AuditEvent).where(AuditEvent.action == "review")) is not None
