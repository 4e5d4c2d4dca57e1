"""Case store: the only way apps touch the database. Every case read or export is audited."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from ..errors import AccessDenied, LoupeError
from ..plugins import IngestedAsset
from ..vlm.base import RunRecord
from .assets import AssetStore
from .models import Asset, AuditEvent, Case, ChatMessage, ModelRun, Review, User
from .passwords import hash_password, verify_password

ROLES = ("user", "reviewer", "admin")
VERDICTS = ("accepted", "edited")


@dataclass(frozen=True)
class CaseSummary:
    id: int
    title: str
    domain: str
    owner: str
    created_at: str
    messages: int


class CaseStore:
    def __init__(self, sessions: sessionmaker[Session], assets: AssetStore) -> None:
        self.sessions = sessions
        self.assets = assets

    # -- users ---------------------------------------------------------------------------------
    def add_user(self, username: str, password: str, role: str = "user") -> User:
        if role not in ROLES:
            raise LoupeError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
        if not username or len(username) > 64 or not username.replace("_", "").replace(".", "").isalnum():
            raise LoupeError("user names are 1-64 letters, digits, '.' or '_'")
        if len(password) < 8:
            raise LoupeError("passwords need at least 8 characters")
        with self.sessions.begin() as s:
            user = User(username=username, password_hash=hash_password(password), role=role)
            s.add(user)
            try:
                s.flush()
            except IntegrityError:
                raise LoupeError(f"user {username!r} already exists") from None
            s.add(AuditEvent(user_id=user.id, action="user.create", detail={"role": role}))
            return user

    def list_users(self) -> list[User]:
        with self.sessions() as s:
            return list(s.scalars(select(User).order_by(User.username)))

    def get_user(self, username: str) -> User | None:
        with self.sessions() as s:
            return s.scalar(select(User).where(User.username == username, User.active.is_(True)))

    def authenticate(self, username: str, password: str) -> User | None:
        user = self.get_user(username)
        ok = user is not None and verify_password(password, user.password_hash)
        self._audit(user.id if user else None, "login" if ok else "login.failed")
        return user if ok else None

    # -- cases ---------------------------------------------------------------------------------
    def create_case(self, user: User, domain: str, title: str, assets: Sequence[IngestedAsset]) -> int:
        """Store blobs, then rows in one transaction; on failure, blobs written here are removed."""
        if not assets:
            raise LoupeError("a case needs at least one asset")
        written: list[str] = []
        try:
            digests = []
            for asset in assets:
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
                    s.add(Asset(case_id=case.id, sha256=digest, media_type=asset.media_type,
                                size_bytes=len(asset.data), width=asset.width, height=asset.height,
                                meta=asset.meta))
                s.add(AuditEvent(user_id=user.id, action="case.create", case_id=case.id))
                return case.id
        except BaseException:
            for digest in written:
                self.assets.delete(digest)
            raise

    def list_cases(self, user: User) -> list[CaseSummary]:
        with self.sessions() as s:
            query = select(Case, User.username).join(User, Case.owner_id == User.id).order_by(Case.id.desc())
            if not user.is_admin:
                query = query.where(Case.owner_id == user.id)
            rows = s.execute(query.options(selectinload(Case.messages))).all()
            return [CaseSummary(c.id, c.title, c.domain, owner, c.created_at.strftime("%Y-%m-%d %H:%M"),
                                len(c.messages)) for c, owner in rows]

    def open_case(self, user: User, case_id: int) -> Case:
        """Load a case with its assets and messages for ``user``; audited as a read."""
        with self.sessions.begin() as s:
            case = s.scalar(select(Case).where(Case.id == case_id).options(
                selectinload(Case.assets),
                selectinload(Case.messages).selectinload(ChatMessage.model_run),
                selectinload(Case.messages).selectinload(ChatMessage.reviews)))
            self._check_access(user, case, case_id)
            s.add(AuditEvent(user_id=user.id, action="case.read", case_id=case_id))
            return case

    def read_asset(self, user: User, asset_id: int) -> tuple[Asset, bytes]:
        with self.sessions.begin() as s:
            asset = s.get(Asset, asset_id)
            case = s.get(Case, asset.case_id) if asset else None
            self._check_access(user, case, asset.case_id if asset else None)
            s.add(AuditEvent(user_id=user.id, action="asset.read", case_id=case.id, detail={"asset_id": asset_id}))
            return asset, self.assets.read(asset.sha256)

    def add_question(self, user: User, case_id: int, text: str) -> int:
        with self.sessions.begin() as s:
            self._check_access(user, s.get(Case, case_id), case_id)
            msg = ChatMessage(case_id=case_id, author_id=user.id, role="user", content=text)
            s.add(msg)
            s.flush()
            return msg.id

    def add_answer(self, user: User, case_id: int, text: str, run: RunRecord, demo_weights: bool) -> int:
        with self.sessions.begin() as s:
            self._check_access(user, s.get(Case, case_id), case_id)
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

    def review(self, user: User, message_id: int, verdict: str, edited_text: str | None = None) -> int:
        if verdict not in VERDICTS:
            raise LoupeError(f"unknown verdict {verdict!r}; choose one of {', '.join(VERDICTS)}")
        if verdict == "edited" and not (edited_text or "").strip():
            raise LoupeError("an edited review needs the corrected text")
        with self.sessions.begin() as s:
            msg = s.get(ChatMessage, message_id)
            if msg is None or msg.role != "assistant":
                raise LoupeError("only model answers can be reviewed")
            self._check_access(user, s.get(Case, msg.case_id), msg.case_id)
            review = Review(message_id=message_id, reviewer_id=user.id, verdict=verdict,
                            edited_text=edited_text if verdict == "edited" else None)
            s.add(review)
            s.add(AuditEvent(user_id=user.id, action="review", case_id=msg.case_id,
                             detail={"message_id": message_id, "verdict": verdict}))
            s.flush()
            return review.id

    def audit_events(self, case_id: int | None = None) -> list[AuditEvent]:
        with self.sessions() as s:
            query = select(AuditEvent).order_by(AuditEvent.id)
            if case_id is not None:
                query = query.where(AuditEvent.case_id == case_id)
            return list(s.scalars(query))

    # -- helpers -------------------------------------------------------------------------------
    def _blob_exists(self, data: bytes) -> bool:
        return self.assets.path_for(hashlib.sha256(data).hexdigest()).exists()

    def _check_access(self, user: User, case: Case | None, case_id: int | None) -> None:
        if case is None or (case.owner_id != user.id and not user.is_admin):
            # Same message for "missing" and "not yours": ids of other users' cases do not leak.
            self._audit(user.id, "case.denied", detail={"case_id": case_id})
            raise AccessDenied(f"case {case_id} not found")

    def _audit(self, user_id: int | None, action: str, detail: dict | None = None) -> None:
        with self.sessions.begin() as s:
            s.add(AuditEvent(user_id=user_id, action=action, detail=detail or {}))
