"""Case database on SQLite and PostgreSQL: schema, users, visibility, audit, runs, reviews."""

import pytest
from helpers import run_record, stored_asset
from sqlalchemy import inspect, select, text

from loupe.core.cases.db import current_revision, head_revision, make_engine, open_database, upgrade
from loupe.core.cases.models import AuditEvent, CaseReport, ModelRun
from loupe.core.cases.store import CaseSummary
from loupe.core.errors import AccessDenied, LoupeError


def test_migrations_create_every_table_at_head(db_url):
    engine = make_engine(db_url)
    open_database(db_url)
    assert head_revision() == "0008"
    assert current_revision(engine) == "0008"
    schema = inspect(engine)
    tables = set(schema.get_table_names())
    assert {"users", "cases", "case_shares", "assets", "messages", "model_runs", "reviews", "audit_events",
            "adapters"} <= tables
    assert "archived_at" in {c["name"] for c in schema.get_columns("cases")}
    assert "signed_off" in {c["name"] for c in schema.get_columns("reviews")}
    # The audit trail of a purged case must outlive it: no foreign key from audit_events to cases.
    assert [fk["referred_table"] for fk in schema.get_foreign_keys("audit_events")] == ["users"]
    assert {"ix_audit_events_case_id", "ix_audit_events_user_id"} <= {i["name"] for i in
                                                                       schema.get_indexes("audit_events")}
    assert {"case_reports", "report_checks"} <= tables and "ix_case_reports_case_id" in {i["name"] for i in
                                                                      schema.get_indexes("case_reports")}
    assert {"web_sessions", "login_failures"} <= tables  # shared by every web process (0007)
    assert {c["name"] for c in schema.get_columns("web_sessions")} == {"key", "username", "created", "last_seen",
                                                                        "epoch"}
    assert "data_sources" in tables  # items read where they live (0008)
    assert {"source_id", "item"} <= {c["name"] for c in schema.get_columns("assets")}
    assert sorted(fk["referred_table"] for fk in schema.get_foreign_keys("assets")) == ["cases", "data_sources"]
    open_database(db_url)  # applying again is a no-op
    assert current_revision(engine) == "0008"


def test_upgrade_from_0001_keeps_existing_rows(db_url):
    engine = make_engine(db_url)
    upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id, username, password_hash, role, active, created_at) "
                          "VALUES (1, 'alice', 'x', 'user', true, CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO cases (id, owner_id, domain, title, created_at) "
                          "VALUES (1, 1, 'general', 'old case', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO messages (id, case_id, role, content, created_at) "
                          "VALUES (1, 1, 'assistant', 'old answer', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO reviews (id, message_id, reviewer_id, verdict, created_at) "
                          "VALUES (1, 1, 1, 'accepted', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO audit_events (id, user_id, action, case_id, detail, created_at) "
                          "VALUES (1, 1, 'case.create', 1, '{}', CURRENT_TIMESTAMP)"))
    open_database(db_url)
    assert current_revision(engine) == "0008"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT title, archived_at FROM cases")).one() == ("old case", None)
        assert conn.execute(text("SELECT signed_off FROM reviews")).scalar() in (False, 0)
        assert conn.execute(text("SELECT action, case_id FROM audit_events")).one() == ("case.create", 1)
    assert [fk["referred_table"] for fk in inspect(engine).get_foreign_keys("audit_events")] == ["users"]


def test_a_purged_case_id_is_never_given_to_a_new_case(store):
    admin = store.add_user("root", "long enough", "admin")
    first = store.create_case(admin, "general", "one", [stored_asset(b"a")])
    last = store.create_case(admin, "general", "two", [stored_asset(b"b")])
    store.archive_case(admin, last)
    store.purge_case(admin, last)  # the highest id: SQLite without AUTOINCREMENT hands it out again
    new = store.create_case(admin, "general", "three", [stored_asset(b"c")])
    assert new > last > first
    trail = [(e.action, e.case_id) for e in store.audit_events() if e.case_id == new]
    assert trail == [("case.create", new)], "the new case must not inherit the purged case's audit trail"


def test_upgrade_after_a_purge_starts_above_ids_the_audit_trail_names(db_url, tmp_path):
    """A case purged before 0006 is gone from `cases` but named by audit events: no new case gets its id."""
    engine = make_engine(db_url)
    upgrade(engine, "0005")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id, username, password_hash, role, active, created_at) "
                          "VALUES (1, 'alice', 'x', 'admin', true, CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO cases (id, owner_id, domain, title, created_at) "
                          "VALUES (9, 1, 'general', 'kept', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO audit_events (user_id, action, case_id, detail, created_at) "
                          "VALUES (1, 'case.purge', 10, '{}', CURRENT_TIMESTAMP)"))
    from loupe.core.cases.assets import AssetStore
    from loupe.core.cases.store import CaseStore

    store = CaseStore(open_database(db_url), AssetStore(tmp_path / "assets"))
    new = store.create_case(store.get_user("alice"), "general", "new", [stored_asset()])
    if engine.dialect.name == "sqlite":  # PostgreSQL's sequence never handed out 10: it starts at 1 here
        assert new == 11
    assert new != 10


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
    case_id = store.create_case(alice, "general", "left wrist", [stored_asset()])
    [summary] = store.list_cases(alice)
    assert summary == CaseSummary(id=case_id, title="left wrist", domain="general", owner="alice",
                                  created_at=summary.created_at, answers=0, reviewed=0, shared_with_me=False,
                                  archived=False)
    assert store.list_cases(bob) == []
    # Admins see every case, but it is not "shared with" them.
    assert [(c.owner, c.shared_with_me) for c in store.list_cases(admin)] == [("alice", False)]
    with pytest.raises(AccessDenied):
        store.open_case(bob, case_id)
    with pytest.raises(AccessDenied):
        store.open_case(bob, case_id + 100)  # missing and forbidden read the same
    assert store.open_case(admin, case_id).title == "left wrist"
    events = [(e.action, e.user_id) for e in store.audit_events()]
    assert ("case.denied", bob.id) in events and ("case.read", admin.id) in events


def test_every_case_read_is_audited(store):
    alice = store.add_user("alice", "password-a")
    case_id = store.create_case(alice, "general", "", [stored_asset()])
    for _ in range(3):
        case = store.open_case(alice, case_id)
    assert case.title == "Untitled case" and case.assets[0].sha256
    asset, data = store.read_asset(alice, case.assets[0].id)
    assert data == b"pixels"
    reads = [e.action for e in store.audit_events(case_id) if e.action.endswith(".read")]
    assert reads == ["case.read"] * 3 + ["asset.read"]


def test_blobs_are_stored_by_content_hash_only(store, tmp_path):
    alice = store.add_user("alice", "password-a")
    case_id = store.create_case(alice, "general", "t", [stored_asset(b"same"), stored_asset(b"same")])
    case = store.open_case(alice, case_id)
    files = [p for p in (tmp_path / "assets").rglob("*") if p.is_file()]
    assert [p.name for p in files] == [case.assets[0].sha256]
    assert case.assets[0].sha256 == case.assets[1].sha256


def test_failed_case_creation_leaves_no_blob(store, tmp_path):
    ghost = store.add_user("ghost", "password-g")
    ghost.id = 999_999  # no such user: the foreign key makes the insert fail
    with pytest.raises(Exception):  # noqa: B017 - the driver's IntegrityError type differs per database
        store.create_case(ghost, "general", "t", [stored_asset(b"orphan")])
    assert not [p for p in (tmp_path / "assets").rglob("*") if p.is_file()]


def test_answers_keep_their_model_run_and_reviews(store):
    alice = store.add_user("alice", "password-a")
    case_id = store.create_case(alice, "general", "t", [stored_asset()])
    store.add_question(alice, case_id, "Is there a fracture?")
    answer_id = store.add_answer(alice, case_id, "No fracture.", run_record(), demo_weights=True)
    review_id = store.review(alice, answer_id, "edited", "Hairline fracture of the distal radius.")
    case = store.open_case(alice, case_id)
    assert [(m.role, m.content) for m in case.messages] == [("user", "Is there a fracture?"),
                                                           ("assistant", "No fracture.")]
    run = case.messages[1].model_run
    assert (run.visual_tokens, run.output_tokens, run.demo_weights) == (20, 5, True)
    assert case.messages[1].reviews[0].id == review_id
    assert case.messages[1].reviews[0].edited_text.startswith("Hairline")
    with pytest.raises(LoupeError, match="needs the corrected answer"):
        store.review(alice, answer_id, "edited", "  ")
    with pytest.raises(LoupeError, match="Only model answers"):
        store.review(alice, case.messages[0].id, "accepted")
    with pytest.raises(LoupeError, match="unknown verdict 'maybe'"):
        store.review(alice, answer_id, "maybe")
    assert not case.messages[1].reviews[0].signed_off
    [summary] = store.list_cases(alice)
    assert (summary.answers, summary.reviewed) == (1, 1)
    with store.sessions() as s:
        assert s.scalar(select(ModelRun.model_id)) == "m"
        assert s.scalar(select(AuditEvent).where(AuditEvent.action == "review")) is not None


def test_case_reports_keep_versions_findings_and_a_reviewer_sign_off(store):
    alice = store.add_user("alice", "password-a")
    rita = store.add_user("rita", "password-r", "reviewer")
    bob = store.add_user("bob", "password-b")
    case_id = store.create_case(alice, "medical", "t", [stored_asset()])
    assert store.latest_report(alice, case_id) is None
    flags = [{"kind": "laterality", "section": "impression", "span": [6, 11], "reason": "left vs right"}]
    first = store.save_report(alice, case_id, "FINDINGS: Left effusion.\nIMPRESSION: Right effusion.", flags)
    second = store.save_report(alice, case_id, "FINDINGS: Left effusion.\nIMPRESSION: Left effusion.", [])
    latest = store.latest_report(alice, case_id)
    assert latest.id == second > first and latest.findings == [] and latest.signed_off_by is None
    with pytest.raises(LoupeError, match="Write the report first"):
        store.save_report(alice, case_id, "  ", [])
    with pytest.raises(AccessDenied):
        store.save_report(bob, case_id, "not his case", [])
    with pytest.raises(AccessDenied, match="reviewer role"):
        store.sign_off_report(alice, case_id, second)
    store.share_case(alice, case_id, "rita")
    assert store.sign_off_report(rita, case_id, second) == second
    assert store.latest_report(rita, case_id).signed_off_by == rita.id
    actions = [e.action for e in store.audit_events(case_id)]
    assert actions.count("report.save") == 2 and "signoff.denied" in actions and "report.sign_off" in actions
    store.archive_case(alice, case_id)
    admin = store.add_user("root", "password-root", "admin")
    store.purge_case(admin, case_id)
    with store.sessions() as s:
        assert s.scalars(select(CaseReport)).all() == []
