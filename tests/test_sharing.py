"""Sharing, reviewer sign-off, archive and purge, case search: on SQLite and PostgreSQL, every refusal audited."""

from __future__ import annotations

import pytest
from helpers import run_record, stored_asset
from sqlalchemy import func, select

from loupe.core.cases.models import Asset, Case, CaseReport, CaseShare, ChatMessage, ModelRun, Review
from loupe.core.cases.store import CaseStore
from loupe.core.errors import AccessDenied, LoupeError


@pytest.fixture
def people(store):
    """alice and bob (plain users), rita (reviewer), root (admin)."""
    return {"alice": store.add_user("alice", "password-a"), "bob": store.add_user("bob", "password-b"),
            "rita": store.add_user("rita", "password-r", "reviewer"),
            "root": store.add_user("root", "password-x", "admin")}


def _answered_case(store: CaseStore, owner, title: str = "left wrist", data: bytes = b"pixels") -> tuple[int, int]:
    case_id = store.create_case(owner, "general", title, [stored_asset(data)])
    store.add_question(owner, case_id, "Is there a fracture?")
    return case_id, store.add_answer(owner, case_id, "No fracture.", run_record(), demo_weights=False)


def _events(store: CaseStore, action: str) -> list[tuple[int | None, int | None, dict]]:
    return [(e.user_id, e.case_id, e.detail) for e in store.audit_events() if e.action == action]


def _ids(store: CaseStore, user, **filters) -> list[int]:
    return [c.id for c in store.list_cases(user, **filters)]


# -- sharing ------------------------------------------------------------------------------------


def test_share_makes_a_case_visible_and_unshare_takes_it_back(store, people):
    alice, bob = people["alice"], people["bob"]
    case_id = store.create_case(alice, "general", "left wrist", [stored_asset()])
    with pytest.raises(AccessDenied):
        store.open_case(bob, case_id)

    store.share_case(alice, case_id, "bob")
    [summary] = store.list_cases(bob)
    assert (summary.id, summary.owner, summary.shared_with_me) == (case_id, "alice", True)
    assert not store.list_cases(alice)[0].shared_with_me
    case = store.open_case(bob, case_id)
    assert [s.user.username for s in case.shares] == ["bob"]
    assert store.read_asset(bob, case.assets[0].id)[1] == b"pixels"
    store.share_case(alice, case_id, "bob")  # sharing twice is harmless
    assert len(store.open_case(alice, case_id).shares) == 1

    store.share_case(alice, case_id, " bob ", share=False)
    assert store.list_cases(bob) == []
    with pytest.raises(AccessDenied):
        store.open_case(bob, case_id)
    assert _events(store, "case.share") == [(alice.id, case_id, {"user": "bob"})] * 2
    assert _events(store, "case.unshare") == [(alice.id, case_id, {"user": "bob"})]


def test_a_shared_case_says_who_asked_each_question(store, people):
    """Once a case is read by several people, each question shows who asked it (as text); a case nobody else
    reads shows none."""
    from loupe.apps.web.render import conversation

    alice, bob = people["alice"], people["bob"]
    case_id, _ = _answered_case(store, alice)
    solo, _ = conversation(store.open_case(alice, case_id))
    assert "asked by" not in solo[0]["content"]
    store.share_case(alice, case_id, "bob")
    store.add_question(bob, case_id, "<b>And the scaphoid?</b>")
    history, _ = conversation(store.open_case(bob, case_id))
    asked = [m["content"] for m in history if m["role"] == "user"]
    assert asked[0].startswith("<sub>asked by alice · ") and asked[1].startswith("<sub>asked by bob · ")
    assert "<b>And" not in asked[1] and "And the scaphoid?" in asked[1]  # the question itself stays text


def test_only_the_owner_or_an_admin_may_share(store, people):
    alice, bob, rita, root = people["alice"], people["bob"], people["rita"], people["root"]
    case_id = store.create_case(alice, "general", "left wrist", [stored_asset()])
    store.share_case(alice, case_id, "rita")
    with pytest.raises(AccessDenied, match="owner or an administrator"):
        store.share_case(rita, case_id, "bob")  # seeing a shared case is not owning it
    with pytest.raises(AccessDenied):
        store.share_case(bob, case_id, "bob")  # cannot share a case with oneself into view
    assert store.list_cases(bob) == []
    assert (rita.id, case_id, {"needs": "owner"}) in _events(store, "case.denied")
    assert (bob.id, None, {"asked_for": f"case {case_id}"}) in _events(store, "case.denied")

    store.share_case(root, case_id, "bob")
    assert [c.id for c in store.list_cases(bob)] == [case_id]
    assert (root.id, case_id, {"user": "bob"}) in _events(store, "case.share")


def test_sharing_needs_an_active_user_other_than_the_owner(store, people):
    alice = people["alice"]
    case_id = store.create_case(alice, "general", "left wrist", [stored_asset()])
    store.set_active(None, "bob", False)
    with pytest.raises(LoupeError, match="no active user named 'nobody'"):
        store.share_case(alice, case_id, "nobody")
    with pytest.raises(LoupeError, match="no active user named 'bob'"):
        store.share_case(alice, case_id, "bob")
    with pytest.raises(LoupeError, match="alice owns this case already"):
        store.share_case(alice, case_id, "alice")
    assert store.open_case(alice, case_id).shares == []
    assert _events(store, "case.share") == []


# -- reviewers and sign-off ---------------------------------------------------------------------


def test_reviewer_sees_only_shared_and_own_cases_and_signs_off(store, people):
    alice, bob, rita = people["alice"], people["bob"], people["rita"]
    shared_id, answer_id = _answered_case(store, alice, "shared wrist")
    _answered_case(store, bob, "bob's knee")
    own_id = store.create_case(rita, "general", "rita's own", [stored_asset(b"other")])
    assert _ids(store, rita) == [own_id]

    store.share_case(alice, shared_id, "rita")
    assert _ids(store, rita) == [own_id, shared_id]
    review_id = store.review(rita, answer_id, "accepted", sign_off=True)

    [review] = store.open_case(rita, shared_id).messages[1].reviews
    assert (review.id, review.verdict, review.signed_off) == (review_id, "accepted", True)
    assert (review.reviewer.username, review.reviewer_id) == ("rita", rita.id)
    assert review.created_at is not None
    assert _events(store, "review") == [(rita.id, shared_id,
                                        {"message_id": answer_id, "verdict": "accepted", "signed_off": True})]
    assert [c.reviewed for c in store.list_cases(alice)] == [1]


def test_a_report_sign_off_names_its_version_and_is_refused_once_a_newer_one_is_saved(store, people):
    """Issue 18: rita read version 2, alice saved version 3 meanwhile; rita's sign-off must not land on 3."""
    alice, rita = people["alice"], people["rita"]
    case_id = store.create_case(alice, "medical", "chest", [stored_asset()])
    store.share_case(alice, case_id, "rita")
    store.save_report(alice, case_id, "FINDINGS: one.\nIMPRESSION: one.", [])
    second = store.save_report(alice, case_id, "FINDINGS: two.\nIMPRESSION: two.", [])
    read = store.latest_report(rita, case_id).id
    assert read == second
    third = store.save_report(alice, case_id, "FINDINGS: three.\nIMPRESSION: changed.", [])  # the race
    with pytest.raises(LoupeError, match="changed since you read it"):
        store.sign_off_report(rita, case_id, read)
    assert all(r.signed_off_by is None for r in _reports(store, case_id))
    assert _events(store, "signoff.stale") == [(rita.id, case_id, {"report_id": second, "latest": third})]
    assert _events(store, "report.sign_off") == []
    assert store.sign_off_report(rita, case_id, store.latest_report(rita, case_id).id) == third
    assert [r.id for r in _reports(store, case_id) if r.signed_off_by == rita.id] == [third]


def _reports(store: CaseStore, case_id: int) -> list[CaseReport]:
    with store.sessions() as s:
        return list(s.scalars(select(CaseReport).where(CaseReport.case_id == case_id)))


@pytest.mark.parametrize("row_id", [0, -1, 2**31, 2**63, 10**20])
def test_ids_no_row_can_have_are_not_found_and_audited(store, people, row_id):
    """Issue 18: an id beyond the INTEGER columns (or not positive) made SQLite and PostgreSQL raise (a 500)."""
    alice = people["alice"]
    for read in (lambda: store.open_case(alice, row_id), lambda: store.read_asset(alice, row_id),
                 lambda: store.add_question(alice, row_id, "?"), lambda: store.latest_report(alice, row_id)):
        with pytest.raises(AccessDenied):
            read()
    assert [e.action for e in store.audit_events() if e.action.endswith(".denied")] == [
        "case.denied", "asset.denied", "case.denied", "case.denied"]
    assert store.list_cases(alice, search=f"#{row_id}") == []


def test_plain_users_sign_off_is_refused_and_the_refusal_is_kept(store, people):
    alice = people["alice"]
    case_id, answer_id = _answered_case(store, alice)
    with pytest.raises(AccessDenied, match="reviewer role"):
        store.review(alice, answer_id, "accepted", sign_off=True)
    with pytest.raises(AccessDenied, match="reviewer role"):
        store.review(people["root"], answer_id, "rejected", sign_off=True)  # admins are not reviewers either
    assert store.open_case(alice, case_id).messages[1].reviews == []
    assert [(user_id, c) for user_id, c, _ in _events(store, "signoff.denied")] == [(alice.id, case_id),
                                                                                    (people["root"].id, case_id)]
    assert _events(store, "review") == []

    store.review(alice, answer_id, "edited", "  Hairline fracture.  ")  # a plain review is still allowed
    [review] = store.open_case(alice, case_id).messages[1].reviews
    assert (review.signed_off, review.edited_text) == (False, "Hairline fracture.")


def test_reviewing_someone_elses_answer_reveals_nothing(store, people):
    alice, bob = people["alice"], people["bob"]
    case_id, answer_id = _answered_case(store, alice)
    for message_id in (answer_id, answer_id + 1000):  # someone else's and missing: the same answer
        with pytest.raises(AccessDenied) as denied:
            store.review(bob, message_id, "accepted")
        assert str(denied.value) == "Answer not found."
        assert str(case_id) not in str(denied.value)
    assert _events(store, "case.denied") == [(bob.id, None, {"asked_for": "answer"})] * 2
    assert store.open_case(alice, case_id).messages[1].reviews == []


# -- archive ------------------------------------------------------------------------------------


def test_archive_hides_a_case_and_restore_brings_it_back(store, people):
    alice, bob, root = people["alice"], people["bob"], people["root"]
    kept = store.create_case(alice, "general", "kept", [stored_asset()])
    case_id = store.create_case(alice, "general", "to archive", [stored_asset()])
    store.share_case(alice, case_id, "bob")

    store.archive_case(alice, case_id)
    assert _ids(store, alice) == [kept]
    assert _ids(store, bob) == []
    [summary] = store.list_cases(alice, archived=True)
    assert (summary.id, summary.archived) == (case_id, True)
    assert _ids(store, bob, archived=True) == [case_id]
    assert store.open_case(alice, case_id).archived_at is not None  # archived, not gone

    with pytest.raises(AccessDenied):
        store.archive_case(bob, case_id, archived=False)  # shared with bob, but not his
    store.archive_case(root, case_id, archived=False)
    assert _ids(store, alice) == [case_id, kept]
    assert store.list_cases(alice, archived=True) == []
    assert store.open_case(alice, case_id).archived_at is None
    assert [(u, c) for u, c, _ in _events(store, "case.archive")] == [(alice.id, case_id)]
    assert [(u, c) for u, c, _ in _events(store, "case.restore")] == [(root.id, case_id)]
    assert (bob.id, case_id, {"needs": "owner"}) in _events(store, "case.denied")


def test_only_owner_or_admin_archives(store, people):
    alice, bob = people["alice"], people["bob"]
    case_id = store.create_case(alice, "general", "left wrist", [stored_asset()])
    with pytest.raises(AccessDenied, match="Case .* not found"):
        store.archive_case(bob, case_id)
    assert _ids(store, alice) == [case_id]
    assert _events(store, "case.archive") == []
    assert (bob.id, None, {"asked_for": f"case {case_id}"}) in _events(store, "case.denied")


# -- purge --------------------------------------------------------------------------------------


def _rows(store: CaseStore, case_id: int) -> dict[str, int]:
    with store.sessions() as s:
        count = {t.__name__: s.scalar(select(func.count()).select_from(t).where(t.case_id == case_id))
                 for t in (Asset, ChatMessage, ModelRun, CaseShare)}
        count["Case"] = s.scalar(select(func.count()).select_from(Case).where(Case.id == case_id))
        count["Review"] = s.scalar(select(func.count()).select_from(Review).join(ChatMessage)
                                   .where(ChatMessage.case_id == case_id))
    return count


def test_purge_is_for_admins_and_archived_cases_only(store, people):
    alice, root = people["alice"], people["root"]
    case_id, _ = _answered_case(store, alice)
    with pytest.raises(AccessDenied, match="Only administrators"):
        store.purge_case(alice, case_id)
    assert _events(store, "admin.denied") == [(alice.id, None, {"action": "case.purge"})]
    with pytest.raises(LoupeError, match="Archive the case first"):
        store.purge_case(root, case_id)
    with pytest.raises(AccessDenied, match="not found"):
        store.purge_case(root, case_id + 1000)
    store.archive_case(alice, case_id)
    with pytest.raises(AccessDenied):
        store.purge_case(alice, case_id)  # still refused once archived
    assert _rows(store, case_id)["Case"] == 1
    assert _events(store, "case.purge") == []


def test_purge_deletes_rows_and_unshared_blobs_but_keeps_the_audit_trail(store, people, tmp_path):
    alice, root = people["alice"], people["root"]
    case_id = store.create_case(alice, "general", "doomed",
                                [stored_asset(b"only here"), stored_asset(b"also elsewhere")])
    other_id = store.create_case(alice, "general", "survivor", [stored_asset(b"also elsewhere")])
    store.add_question(alice, case_id, "Is there a fracture?")
    answer_id = store.add_answer(alice, case_id, "No fracture.", run_record(), demo_weights=False)
    store.share_case(alice, case_id, "rita")
    store.review(people["rita"], answer_id, "rejected", sign_off=True)
    case = store.open_case(alice, case_id)
    only_here, shared_blob = (a.sha256 for a in case.assets)
    assert all(v >= 1 for v in _rows(store, case_id).values())

    store.archive_case(alice, case_id)
    store.purge_case(root, case_id)

    assert _rows(store, case_id) == dict.fromkeys(("Asset", "ChatMessage", "ModelRun", "CaseShare", "Case",
                                                   "Review"), 0)
    assert not store.assets.path_for(only_here).exists()
    assert store.assets.read(shared_blob) == b"also elsewhere"
    assert store.read_asset(alice, store.open_case(alice, other_id).assets[0].id)[1] == b"also elsewhere"
    with pytest.raises(AccessDenied):
        store.open_case(root, case_id)
    assert _ids(store, root, archived=True) == []
    # The purged case's trail remains, with its case id, ending in the purge itself.
    trail = [(e.action, e.user_id) for e in store.audit_events(case_id)]
    assert trail[0] == ("case.create", alice.id) and trail[-1] == ("case.purge", root.id)
    assert {"case.share", "review", "case.archive", "case.read"} <= {action for action, _ in trail}


# -- search -------------------------------------------------------------------------------------


def test_search_by_title_owner_id_and_domain(store, people):
    alice, bob, root = people["alice"], people["bob"], people["root"]
    wrist = store.create_case(alice, "general", "Left WRIST after fall", [stored_asset()])
    knee = store.create_case(bob, "general", "knee 100% swollen", [stored_asset()])
    chest = store.create_case(alice, "xray", "chest", [stored_asset()])

    assert _ids(store, root, search="wrist") == [wrist]  # case-insensitive fragment
    assert _ids(store, root, search="  left wr ") == [wrist]
    assert _ids(store, root, search="BOB") == [knee]  # owner name
    assert _ids(store, root, search="ali") == [chest, wrist]
    assert _ids(store, root, search=f"#{knee}") == [knee]
    assert _ids(store, root, search=str(chest)) == [chest]
    assert _ids(store, root, search="") == [chest, knee, wrist]
    assert _ids(store, root, domain="xray") == [chest]
    assert _ids(store, root, domain="general", search="e") == [knee, wrist]
    assert _ids(store, alice, search="knee") == []  # search never widens what a user may see
    assert _ids(store, alice, search=f"#{knee}") == []


def test_search_input_is_literal_and_never_crashes(store, people):
    root = people["root"]
    wrist = store.create_case(root, "general", "wrist", [stored_asset()])
    knee = store.create_case(root, "general", "knee 100% swollen", [stored_asset()])
    assert _ids(store, root, search="%") == [knee]  # not a wildcard
    assert _ids(store, root, search="_") == []
    assert _ids(store, root, search="\\") == []
    # Long record numbers and odd digits are searched as text, not passed on as an out-of-range id.
    for term in ("#99999999999", "#99999999999999999999", "²", "#"):
        assert _ids(store, root, search=term) == []
    assert _ids(store, root, search="#0") == []
    assert _ids(store, root, search="wrist") == [wrist]
