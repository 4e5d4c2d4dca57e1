"""Case store: the only way apps touch the database. Every case read or export is audited."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, delete, func, or_, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from ..errors import AccessDenied, LoupeError
from ..plugins import IngestedAsset
from ..vlm.base import RunRecord
from .assets import AssetStore
from .models import (
    ROLES,
    Adapter,
    Asset,
    AuditEvent,
    Case,
    CaseReport,
    CaseShare,
    ChatMessage,
    DataSource,
    ModelRun,
    ReportCheck,
    Review,
    User,
    utcnow,
)
from .passwords import check_new_password, dummy_hash, hash_password, verify_password
from .sources import SourceRegistry

VERDICTS = ("accepted", "edited", "rejected")
MAX_ID = 2**31 - 1  # ids are INTEGER columns
_Row = TypeVar("_Row")


def _storable(row_id: int) -> bool:
    """Whether a row can have this id; any other (not positive, or beyond INTEGER: the database would raise)
    simply names no row, so a caller gets the usual audited "not found"."""
    return 0 < row_id <= MAX_ID


def _get(s: Session, model: type[_Row], row_id: int, **options: Any) -> _Row | None:
    return s.get(model, row_id, **options) if _storable(row_id) else None


@dataclass(frozen=True)
class CaseSummary:
    id: int
    title: str
    domain: str
    owner: str
    created_at: str
    answers: int
    reviewed: int
    shared_with_me: bool
    archived: bool


@dataclass(frozen=True)
class AuditEntry:
    at: str
    user: str
    action: str
    case_id: int | None
    detail: str


class CaseStore(SourceRegistry):
    def __init__(self, sessions: sessionmaker[Session], assets: AssetStore) -> None:
        self.sessions = sessions
        self.assets = assets

    # -- users ---------------------------------------------------------------------------------
    # ``actor`` is the logged-in user making a change, or None on the command line (audited as via "cli").
    def add_user(self, username: str, password: str, role: str = "user", actor: User | None = None) -> User:
        self._check_role(role)
        if not username or len(username) > 64 or not username.replace("_", "").replace(".", "").isalnum():
            raise LoupeError("user names are 1-64 letters, digits, '.' or '_'")
        check_new_password(password)
        password_hash = hash_password(password)
        with self.sessions.begin() as s:
            actor_id = self._actor_id(s, actor)
            user = User(username=username, password_hash=password_hash, role=role)
            s.add(user)
            try:
                s.flush()
            except IntegrityError:
                raise LoupeError(f"user {username!r} already exists") from None
            s.add(self._user_event(actor_id, "user.create", username, role=role))
            return user

    def set_password(self, actor: User | None, username: str, new_password: str) -> None:
        check_new_password(new_password)
        password_hash = hash_password(new_password)
        with self.sessions.begin() as s:
            actor_id = self._actor_id(s, actor, may_be=username)
            user = self._target(s, username)
            user.password_hash = password_hash
            self._end_sessions(user)
            s.add(self._user_event(actor_id, "user.passwd", username))

    def set_active(self, actor: User | None, username: str, active: bool) -> None:
        with self.sessions.begin() as s:
            actor_id = self._actor_id(s, actor)
            user = self._target(s, username)
            if not active:
                self._keep_an_admin(s, user, "disable")
            user.active = active
            self._end_sessions(user)
            s.add(self._user_event(actor_id, "user.enable" if active else "user.disable", username))

    def set_role(self, actor: User | None, username: str, role: str) -> None:
        self._check_role(role)
        with self.sessions.begin() as s:
            actor_id = self._actor_id(s, actor)
            user = self._target(s, username)
            if role != "admin":
                self._keep_an_admin(s, user, "demote")
            previous, user.role = user.role, role
            self._end_sessions(user)
            s.add(self._user_event(actor_id, "user.role", username, role=role, previous=previous))

    def list_users(self) -> list[User]:
        with self.sessions() as s:
            return list(s.scalars(select(User).order_by(User.username)))

    def get_user(self, username: str) -> User | None:
        with self.sessions() as s:
            return s.scalar(select(User).where(User.username == username, User.active.is_(True)))

    def authenticate(self, username: str, password: str) -> User | None:
        with self.sessions() as s:
            user = s.scalar(select(User).where(User.username == username))
        usable = user is not None and user.active
        # Missing and disabled users cost one full KDF run too: response time does not reveal names.
        ok = verify_password(password, user.password_hash if usable else dummy_hash()) and usable
        self.audit(user, "login" if ok else "login.failed",
                   detail={"disabled": True} if user is not None and not user.active else None)
        return user if ok else None

    @staticmethod
    def _check_role(role: str) -> None:
        if role not in ROLES:
            raise LoupeError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")

    @staticmethod
    def _actor_id(s: Session, actor: User | None, may_be: str | None = None) -> int | None:
        """The actor's id after checking, from the database, that they are an active admin (or ``may_be``)."""
        if actor is None:
            return None
        current = s.get(User, actor.id)
        if current is None or not current.active or not (current.is_admin or current.username == may_be):
            raise AccessDenied("only an admin can change other users")
        return current.id

    @staticmethod
    def _target(s: Session, username: str) -> User:
        user = s.scalar(select(User).where(User.username == username))
        if user is None:
            raise LoupeError(f"no user named {username!r}")
        return user

    @staticmethod
    def _end_sessions(user: User) -> None:
        """Raise the user's session epoch: the web app ends sessions made under an older one, in every process."""
        user.session_epoch = User.session_epoch + 1  # computed by the database: concurrent changes both count

    @staticmethod
    def _keep_an_admin(s: Session, user: User, verb: str) -> None:
        if not (user.is_admin and user.active):
            return
        # Row locks (PostgreSQL) stop two concurrent demotions from both seeing "another admin is left".
        others = s.scalars(select(User.id).where(User.role == "admin", User.active.is_(True), User.id != user.id)
                           .with_for_update()).all()
        if not others:
            raise LoupeError(f"cannot {verb} {user.username!r}: it is the last active admin; "
                             "make another user admin first")

    @staticmethod
    def _user_event(actor_id: int | None, action: str, username: str, **extra: str) -> AuditEvent:
        detail = {"username": username, **extra} | ({} if actor_id is not None else {"via": "cli"})
        return AuditEvent(user_id=actor_id, action=action, detail=detail)

    # -- cases ---------------------------------------------------------------------------------
    def create_case(self, user: User, domain: str, title: str, assets: Sequence[IngestedAsset]) -> int:
        """Store blobs, then rows in one transaction; on failure, blobs written here are removed. An asset
        with a ``reference`` stores only that (its source must exist): its digest is the reference's. One
        left in a file (``digest`` set) is moved into place, or removed on failure."""
        if not assets:
            raise LoupeError("a case needs at least one asset")
        written: list[str] = []
        try:
            digests = []
            for asset in assets:
                if asset.reference is not None:
                    digests.append(hashlib.sha256("\n".join(asset.reference).encode()).hexdigest())
                    continue
                if asset.digest is not None and asset.path is not None:  # a result left in a file
                    if self.assets.adopt(Path(asset.path), asset.digest):
                        written.append(asset.digest)
                    digests.append(asset.digest)
                    continue
                existed = self._blob_exists(asset.data)
                digest = self.assets.put(asset.data)
                if not existed:
                    written.append(digest)
                digests.append(digest)
            with self.sessions.begin() as s:
                case = Case(owner_id=user.id, domain=domain, title=title.strip()[:200] or "Untitled case")
                s.add(case)
                s.flush()
                for asset, digest in zip(assets, digests, strict=True):
                    source_id, item = self._reference(s, asset)
                    size = self.assets.path_for(digest).stat().st_size if asset.digest else len(asset.data)
                    s.add(Asset(case_id=case.id, sha256=digest, media_type=asset.media_type,
                                size_bytes=size, width=asset.width, height=asset.height,
                                meta=asset.meta, source_id=source_id, item=item))
                s.add(AuditEvent(user_id=user.id, action="case.create", case_id=case.id))
                return case.id
        except BaseException:
            for digest in written:
                self.assets.delete(digest)
            for asset in assets:  # results left in files that were not moved into place
                if asset.digest is not None and asset.path is not None:
                    Path(asset.path).unlink(missing_ok=True)
            raise

    def list_cases(self, user: User, *, search: str = "", domain: str | None = None,
                   archived: bool = False) -> list[CaseSummary]:
        """Cases ``user`` may see (own, shared with them, all for admins), newest first."""
        answers = (select(func.count(ChatMessage.id))
                   .where(ChatMessage.case_id == Case.id, ChatMessage.role == "assistant").scalar_subquery())
        reviewed = (select(func.count(func.distinct(Review.message_id))).join(ChatMessage)
                    .where(ChatMessage.case_id == Case.id).scalar_subquery())
        shared = select(CaseShare.id).where(CaseShare.case_id == Case.id, CaseShare.user_id == user.id).exists()
        query = (select(Case, User.username, answers, reviewed, shared).join(User, Case.owner_id == User.id)
                 .where(self._visible_to(user))
                 .where(Case.archived_at.is_not(None) if archived else Case.archived_at.is_(None))
                 .order_by(Case.id.desc()))
        if domain:
            query = query.where(Case.domain == domain)
        if term := search.strip():
            # '%' and '_' typed by the user are literal characters, not wildcards.
            pattern = "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            matches = [Case.title.ilike(pattern, escape="\\"), User.username.ilike(pattern, escape="\\")]
            number = term.lstrip("#")
            # isdecimal, not isdigit: int("²") fails; ids beyond INTEGER would make PostgreSQL raise.
            if number.isdecimal() and _storable(int(number)):
                matches.append(Case.id == int(number))
            query = query.where(or_(*matches))
        with self.sessions() as s:
            return [CaseSummary(c.id, c.title, c.domain, owner, c.created_at.strftime("%Y-%m-%d %H:%M"), n_answers,
                                n_reviewed, bool(is_shared), c.archived_at is not None)
                    for c, owner, n_answers, n_reviewed, is_shared in s.execute(query)]

    def open_case(self, user: User, case_id: int) -> Case:
        """Load a case with its assets, messages, reviews and shares for ``user``; audited as a read."""
        with self.sessions.begin() as s:
            case = None if not _storable(case_id) else s.scalar(select(Case).where(Case.id == case_id).options(
                selectinload(Case.owner),
                selectinload(Case.shares).selectinload(CaseShare.user),
                selectinload(Case.assets),
                selectinload(Case.messages).selectinload(ChatMessage.model_run),
                selectinload(Case.messages).selectinload(ChatMessage.author),
                selectinload(Case.messages).selectinload(ChatMessage.reviews).selectinload(Review.reviewer)))
            self._check_access(s, user, case, f"case {case_id}")
            s.add(AuditEvent(user_id=user.id, action="case.read", case_id=case_id))
            return case

    def case_for_view(self, user: User, case_id: int, audit: bool) -> Case:
        """A case with its assets for a viewer's reads; access-checked each time, audited (``case.view``) only
        with ``audit``: a viewer audits when it opens, not for each of the 500 slices scrolled through."""
        with self.sessions.begin() as s:
            case = None if not _storable(case_id) else s.scalar(
                select(Case).where(Case.id == case_id).options(selectinload(Case.assets)))
            self._check_access(s, user, case, f"case {case_id}")
            if audit:
                s.add(AuditEvent(user_id=user.id, action="case.view", case_id=case_id))
            return case

    def read_asset(self, user: User, asset_id: int) -> tuple[Asset, bytes]:
        with self.sessions.begin() as s:
            asset = _get(s, Asset, asset_id)
            case = _get(s, Case, asset.case_id) if asset else None
            self._check_access(s, user, case, "image", action="asset.denied")
            if asset.source_id is not None:  # nothing stored: its tiles are read through the case's tools
                raise AccessDenied("Image not found.")
            s.add(AuditEvent(user_id=user.id, action="asset.read", case_id=case.id, detail={"asset_id": asset_id}))
            return asset, self.assets.read(asset.sha256)

    def asset_for_view(self, user: User, asset_id: int, audit: bool = True) -> tuple[Asset, str]:
        """An image asset of a case ``user`` may see, and where its pixels are read from (the store's file, or
        its data source's item, whose readers are checked too). ``audit``: record the view (``asset.view``,
        and ``source.read`` for a source): a zoomable view audits once, its tiles are only checked."""
        with self.sessions.begin() as s:
            asset = _get(s, Asset, asset_id)
            case = _get(s, Case, asset.case_id) if asset else None
            self._check_access(s, user, case, "image", action="asset.denied")
            if audit:
                s.add(AuditEvent(user_id=user.id, action="asset.view", case_id=case.id, detail={"asset_id": asset_id}))
        if asset.source_id is not None:
            return asset, self.asset_location(user, asset, audit=audit)
        return asset, str(self.assets.path_for(asset.sha256))

    def add_question(self, user: User, case_id: int, text: str) -> int:
        with self.sessions.begin() as s:
            self._check_access(s, user, _get(s, Case, case_id), f"case {case_id}")
            msg = ChatMessage(case_id=case_id, author_id=user.id, role="user", content=text)
            s.add(msg)
            s.flush()
            return msg.id

    def add_answer(self, user: User, case_id: int, text: str, run: RunRecord, demo_weights: bool) -> int:
        with self.sessions.begin() as s:
            self._check_access(s, user, _get(s, Case, case_id), f"case {case_id}")
            model_run = ModelRun(
                case_id=case_id, model_id=run.model_id, adapter=run.adapter, device=run.device, dtype=run.dtype,
                prompt_tokens=run.prompt_tokens, visual_tokens=run.visual_tokens, output_tokens=run.output_tokens,
                time_to_first_token_s=run.time_to_first_token_s, total_time_s=run.total_time_s,
                tokens_per_s=run.tokens_per_s, demo_weights=demo_weights, extra=run.extra)
            s.add(model_run)
            s.flush()
            msg = ChatMessage(case_id=case_id, role="assistant", content=text, model_run_id=model_run.id)
            s.add(msg)
            s.flush()
            return msg.id

    def review(self, user: User, message_id: int, verdict: str, edited_text: str | None = None,
               sign_off: bool = False, in_case: int | None = None) -> int:
        """Review one answer. A sign-off is a review by a user with the reviewer role. With ``in_case``, the answer
        must belong to that case (the one on the reviewer's screen); after the access check, so a foreign id is
        still refused as not found."""
        if verdict not in VERDICTS:
            raise LoupeError(f"unknown verdict {verdict!r}; choose one of {', '.join(VERDICTS)}")
        if verdict == "edited" and not (edited_text or "").strip():
            raise LoupeError("An edited review needs the corrected answer.")
        with self.sessions.begin() as s:
            msg = _get(s, ChatMessage, message_id)
            case = _get(s, Case, msg.case_id) if msg else None
            self._check_access(s, user, case, "answer")  # says nothing about which case the id belongs to
            if in_case is not None and case.id != in_case:
                raise LoupeError("That answer is not in the case on screen: nothing was saved.")
            if msg.role != "assistant":
                raise LoupeError("Only model answers can be reviewed.")
            if sign_off and user.role != "reviewer":
                self.audit(user, "signoff.denied", case_id=case.id)
                raise AccessDenied("Only users with the reviewer role can sign answers off.")
            review = Review(message_id=message_id, reviewer_id=user.id, verdict=verdict, signed_off=sign_off,
                            edited_text=edited_text.strip() if verdict == "edited" and edited_text else None)
            s.add(review)
            s.add(AuditEvent(user_id=user.id, action="review", case_id=case.id,
                             detail={"message_id": message_id, "verdict": verdict, "signed_off": sign_off}))
            s.flush()
            return review.id

    # -- case reports ---------------------------------------------------------------------------
    def save_report(self, user: User, case_id: int, text: str, findings: list[dict]) -> int:
        """Store a new version of the case's report with what the checker found in it."""
        if not text.strip():
            raise LoupeError("Write the report first.")
        with self.sessions.begin() as s:
            case = _get(s, Case, case_id, with_for_update=True)  # see sign_off_report
            self._check_access(s, user, case, f"case {case_id}")
            if case.archived_at is not None:
                raise LoupeError("This case is archived: restore it to change its report.")
            report = CaseReport(case_id=case_id, author_id=user.id, text=text.strip(), findings=findings)
            s.add(report)
            s.flush()
            s.add(AuditEvent(user_id=user.id, action="report.save", case_id=case_id,
                             detail={"report_id": report.id, "flags": len(findings)}))
            return report.id

    def latest_report(self, user: User, case_id: int) -> CaseReport | None:
        """The case's newest report version (audited as a read), or None."""
        with self.sessions.begin() as s:
            self._check_access(s, user, _get(s, Case, case_id), f"case {case_id}")
            report = s.scalar(select(CaseReport).where(CaseReport.case_id == case_id)
                              .order_by(CaseReport.id.desc()).limit(1))
            if report is not None:
                s.add(AuditEvent(user_id=user.id, action="report.read", case_id=case_id,
                                 detail={"report_id": report.id}))
            return report

    def sign_off_report(self, user: User, case_id: int, report_id: int) -> int:
        """Sign off version ``report_id`` of the case's report, the one the reviewer read (reviewer role only).

        Refused when a newer version has been saved since: a sign-off names what it signs."""
        with self.sessions.begin() as s:
            # The case row is locked (PostgreSQL) so no new version can be saved between the check and the sign-off.
            self._check_access(s, user, _get(s, Case, case_id, with_for_update=True), f"case {case_id}")
            report = s.scalar(select(CaseReport).where(CaseReport.case_id == case_id)
                              .order_by(CaseReport.id.desc()).limit(1))
            if report is None:
                raise LoupeError("There is no report to sign off yet.")
            if user.role != "reviewer":
                self.audit(user, "signoff.denied", case_id=case_id)  # its own transaction: this one rolls back
                raise AccessDenied("Only users with the reviewer role can sign reports off.")
            if report.id != report_id:
                self.audit(user, "signoff.stale", case_id=case_id, detail={"report_id": report_id,
                                                                          "latest": report.id})
                raise LoupeError("The report has changed since you read it: read the new version, then sign it off.")
            report.signed_off_by, report.signed_off_at = user.id, utcnow()
            s.add(AuditEvent(user_id=user.id, action="report.sign_off", case_id=case_id,
                             detail={"report_id": report.id}))
            return report.id

    def store_report_checks(self, source_digest: str, checker: str, results: Sequence[dict]) -> int:
        """Keep a batch check's results (command line); a result already kept is not added again.
        Returns how many were new. Audited as one ``reports.check`` event."""
        with self.sessions.begin() as s:
            known = set(s.scalars(select(ReportCheck.report_id).where(
                ReportCheck.source_digest == source_digest, ReportCheck.checker == checker)))
            new = [r for r in results if r["id"] not in known]
            s.add_all(ReportCheck(source_digest=source_digest, report_id=r["id"], checker=checker,
                                  has_error=bool(r["has_error"]), findings=r["findings"]) for r in new)
            s.add(AuditEvent(user_id=None, action="reports.check",
                             detail={"via": "cli", "source_digest": source_digest, "checker": checker,
                                     "new": len(new), "flagged": sum(bool(r["has_error"]) for r in new)}))
            return len(new)

    # -- adapters (command line: the installation's operator) ---------------------------------------
    def register_adapter(self, name: str, domain: str, base_model: str, path: str, metrics: dict) -> None:
        """Record a trained adapter (again, for a resumed run: the entry is updated). Audited."""
        with self.sessions.begin() as s:
            adapter = s.scalar(select(Adapter).where(Adapter.name == name))
            if adapter is not None and adapter.domain != domain:
                raise LoupeError(f"An adapter named {name!r} already exists for {adapter.domain}; choose another name.")
            if adapter is None:
                adapter = Adapter(name=name, domain=domain, base_model=base_model, path=path, metrics=metrics)
                s.add(adapter)
            else:
                adapter.base_model, adapter.path, adapter.metrics = base_model, path, metrics
            s.add(AuditEvent(user_id=None, action="adapter.register", detail={"name": name, "domain": domain}))

    def adapters(self) -> list[Adapter]:
        with self.sessions() as s:
            return list(s.scalars(select(Adapter).order_by(Adapter.domain, Adapter.name)))

    def adapter(self, name: str) -> Adapter | None:
        with self.sessions() as s:
            return s.scalar(select(Adapter).where(Adapter.name == name))

    def active_adapter(self, domain: str) -> Adapter | None:
        """The adapter ``domain`` answers with; None: the base model."""
        with self.sessions() as s:
            return s.scalar(select(Adapter).where(Adapter.domain == domain, Adapter.active.is_(True)))

    def activate_adapter(self, name: str | None, domain: str, actor: User | None = None) -> None:
        """Make ``name`` the adapter its domain answers with (the domain's others are switched off);
        None: the domain answers with the base model. ``actor``: the admin, from the app (None: the
        command line). Audited."""
        if actor is not None:
            self.require_admin(actor, "adapter.activate")
        with self.sessions.begin() as s:
            adapter = None
            if name is not None:
                adapter = s.scalar(select(Adapter).where(Adapter.name == name))
                if adapter is None:
                    raise LoupeError(f"There is no adapter named {name!r} (see: loupe adapters list).")
                if adapter.domain != domain:
                    raise LoupeError(f"{name!r} was trained for {adapter.domain}, not {domain}.")
            for other in s.scalars(select(Adapter).where(Adapter.domain == domain)):
                other.active = adapter is not None and other.id == adapter.id
            s.add(AuditEvent(user_id=actor.id if actor else None, action="adapter.activate",
                             detail={"name": name, "domain": domain}))

    def remove_adapter(self, name: str) -> None:
        """Forget an adapter (its files stay where they are). Audited."""
        with self.sessions.begin() as s:
            adapter = s.scalar(select(Adapter).where(Adapter.name == name))
            if adapter is None:
                raise LoupeError(f"There is no adapter named {name!r}.")
            s.delete(adapter)
            s.add(AuditEvent(user_id=None, action="adapter.remove", detail={"name": name, "domain": adapter.domain}))

    def report_checks(self, source_digest: str) -> list[ReportCheck]:
        with self.sessions() as s:
            return list(s.scalars(select(ReportCheck).where(ReportCheck.source_digest == source_digest)
                                  .order_by(ReportCheck.id)))

    def share_case(self, user: User, case_id: int, username: str, share: bool = True) -> None:
        """Make a case visible to another user (owner or admin only), or take that back."""
        with self.sessions.begin() as s:
            case = self._managed_case(s, user, case_id)
            target = s.scalar(select(User).where(User.username == username.strip(), User.active.is_(True)))
            if target is None:
                raise LoupeError(f"There is no active user named {username.strip()!r}.")
            if target.id == case.owner_id:
                raise LoupeError(f"{target.username} owns this case already.")
            existing = s.scalar(select(CaseShare).where(CaseShare.case_id == case_id, CaseShare.user_id == target.id))
            if share and existing is None:
                s.add(CaseShare(case_id=case_id, user_id=target.id, created_by=user.id))
            elif not share and existing is not None:
                s.delete(existing)
            s.add(AuditEvent(user_id=user.id, action="case.share" if share else "case.unshare", case_id=case_id,
                             detail={"user": target.username}))

    def archive_case(self, user: User, case_id: int, archived: bool = True) -> None:
        """Soft delete (owner or admin): the case leaves the lists but keeps every record."""
        with self.sessions.begin() as s:
            case = self._managed_case(s, user, case_id)
            case.archived_at = utcnow() if archived else None
            s.add(AuditEvent(user_id=user.id, action="case.archive" if archived else "case.restore", case_id=case_id))

    def purge_case(self, user: User, case_id: int) -> None:
        """Delete an archived case for good (admins only): rows, and blobs no other case uses."""
        with self.sessions.begin() as s:
            self.require_admin(user, "case.purge")
            case = self._managed_case(s, user, case_id)
            if case.archived_at is None:
                raise LoupeError("Archive the case first: only archived cases can be purged.")
            message_ids = select(ChatMessage.id).where(ChatMessage.case_id == case_id)
            digests = set(s.scalars(select(Asset.sha256).where(Asset.case_id == case_id)))
            s.execute(delete(Review).where(Review.message_id.in_(message_ids)))
            s.execute(delete(ChatMessage).where(ChatMessage.case_id == case_id))
            for table in (ModelRun, Asset, CaseShare, CaseReport):
                s.execute(delete(table).where(table.case_id == case_id))
            s.delete(case)
            s.add(AuditEvent(user_id=user.id, action="case.purge", case_id=case_id))
            s.flush()
            still_used = set(s.scalars(select(Asset.sha256).where(Asset.sha256.in_(digests))))
        for digest in digests - still_used:
            self.assets.delete(digest)

    # -- audit ---------------------------------------------------------------------------------
    def audit(self, user: User | None, action: str, case_id: int | None = None, detail: dict | None = None) -> None:
        with self.sessions.begin() as s:
            s.add(AuditEvent(user_id=user.id if user else None, action=action, case_id=case_id, detail=detail or {}))

    def require_admin(self, user: User, action: str) -> None:
        """Refuse (and audit, in its own transaction) an admin-only action by anyone else."""
        if not user.is_admin:
            self.audit(user, "admin.denied", detail={"action": action})
            raise AccessDenied("Only administrators can do that.")

    def audit_events(self, case_id: int | None = None) -> list[AuditEvent]:
        with self.sessions() as s:
            query = select(AuditEvent).order_by(AuditEvent.id)
            if case_id is not None:
                query = query.where(AuditEvent.case_id == case_id)
            return list(s.scalars(query))

    def audit_log(self, limit: int = 200) -> list[AuditEntry]:
        """The newest events with user names, for the admin page."""
        with self.sessions() as s:
            rows = s.execute(select(AuditEvent, User.username).outerjoin(User, AuditEvent.user_id == User.id)
                             .order_by(AuditEvent.id.desc()).limit(limit))
            return [AuditEntry(e.created_at.strftime("%Y-%m-%d %H:%M:%S"), name or "-", e.action, e.case_id,
                               json.dumps(e.detail, sort_keys=True) if e.detail else "") for e, name in rows]

    # -- helpers -------------------------------------------------------------------------------
    def sweep_orphans(self, min_age_seconds: float = 3600) -> int:
        """Delete blobs no asset row names, and writes cut short, older than ``min_age_seconds``.

        A server killed between writing a new case's blobs and committing its rows leaves such files; the
        age bound spares a case another server process is storing right now. Returns how many went.
        """
        with self.sessions() as s:
            known = set(s.scalars(select(Asset.sha256).distinct()))
        removed = 0
        for digest, path in list(self.assets.blobs()):
            if digest in known or self.assets.age_seconds(path) < min_age_seconds:
                continue
            path.unlink(missing_ok=True)
            removed += 1
        return removed

    @staticmethod
    def _reference(s: Session, asset: IngestedAsset) -> tuple[int | None, str | None]:
        if asset.reference is None:
            return None, None
        name, item = asset.reference
        source_id = s.scalar(select(DataSource.id).where(DataSource.name == name, DataSource.removed_at.is_(None)))
        if source_id is None:
            raise LoupeError(f"no data source named {name!r}")
        return source_id, item

    def _blob_exists(self, data: bytes) -> bool:
        return self.assets.path_for(hashlib.sha256(data).hexdigest()).exists()

    @staticmethod
    def _visible_to(user: User) -> ColumnElement[bool]:
        if user.is_admin:
            return true()
        shared = select(CaseShare.case_id).where(CaseShare.user_id == user.id)
        return or_(Case.owner_id == user.id, Case.id.in_(shared))

    def _check_access(self, s: Session, user: User, case: Case | None, what: str,
                      action: str = "case.denied") -> None:
        visible = case is not None and (user.is_admin or case.owner_id == user.id or s.scalar(
            select(CaseShare.id).where(CaseShare.case_id == case.id, CaseShare.user_id == user.id)) is not None)
        if not visible:
            # One message for "missing" and "not yours", naming only what the caller asked for.
            self.audit(user, action, detail={"asked_for": what})
            raise AccessDenied(f"{what[0].upper()}{what[1:]} not found.")

    def _managed_case(self, s: Session, user: User, case_id: int) -> Case:
        case = _get(s, Case, case_id)
        self._check_access(s, user, case, f"case {case_id}")
        if case.owner_id != user.id and not user.is_admin:
            self.audit(user, "case.denied", case_id=case_id, detail={"needs": "owner"})
            raise AccessDenied("Only the case's owner or an administrator can do that.")
        return case
