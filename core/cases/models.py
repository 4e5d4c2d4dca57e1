"""Case database schema (SQLAlchemy 2). Changes go through an Alembic migration."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


# SQLite reuses the highest id after a delete unless a table is AUTOINCREMENT; a purged case's id
# must never name a new case (its audit trail outlives it). PostgreSQL sequences never reuse.
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}
ROLES = ("user", "reviewer", "admin")


class Base(DeclarativeBase):
    __table_args__ = NEVER_REUSE_IDS


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Raised on a password, role or active change: sessions made under an older epoch end.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class Case(Base):
    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    domain: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    archived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    owner: Mapped[User] = relationship()
    shares: Mapped[list[CaseShare]] = relationship(order_by="CaseShare.id")
    assets: Mapped[list[Asset]] = relationship(back_populates="case", order_by="Asset.id")
    messages: Mapped[list[ChatMessage]] = relationship(back_populates="case", order_by="ChatMessage.id")


class CaseShare(Base):
    """A case made visible to another named user (e.g. a reviewer who signs its answers off)."""

    __tablename__ = "case_shares"
    __table_args__ = (UniqueConstraint("case_id", "user_id"), NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    user: Mapped[User] = relationship(foreign_keys=[user_id])


class DataSource(Base):
    """A named place items are read from where they live (core/sources): a folder, an HTTP(S) prefix of COGs.

    Removing one that cases still read from keeps its row (``removed_at``): those cases then say so, and the
    name is not given to another place, which would silently change what they show."""

    __tablename__ = "data_sources"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    location: Mapped[str] = mapped_column(Text)  # never with credentials (LOUPE_HOME/secrets holds those)
    domain: Mapped[str] = mapped_column(String(32))
    readers: Mapped[list] = mapped_column(JSON, default=list)  # "role:NAME" / "user:NAME"; admins always read
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Asset(Base):
    """A stored file of a case. The bytes live under LOUPE_HOME/assets/<sha256>; no upload name is kept.

    An item read by reference names its data source and its path there instead (``sha256`` is then the
    digest of that reference, and nothing is stored under it)."""

    __tablename__ = "assets"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    media_type: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("data_sources.id"), nullable=True, index=True)
    item: Mapped[str | None] = mapped_column(Text, nullable=True)  # the item's path within its source

    case: Mapped[Case] = relationship(back_populates="assets")


class ModelRun(Base):
    __tablename__ = "model_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    model_id: Mapped[str] = mapped_column(String(255))
    adapter: Mapped[str | None] = mapped_column(String(255), nullable=True)
    device: Mapped[str] = mapped_column(String(32))
    dtype: Mapped[str] = mapped_column(String(16))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    visual_tokens: Mapped[int] = mapped_column(Integer)
    output_tokens: Mapped[int] = mapped_column(Integer)
    time_to_first_token_s: Mapped[float] = mapped_column(Float)
    total_time_s: Mapped[float] = mapped_column(Float)
    tokens_per_s: Mapped[float] = mapped_column(Float)
    demo_weights: Mapped[bool] = mapped_column(Boolean, default=False)
    extra: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ChatMessage(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    model_run_id: Mapped[int | None] = mapped_column(ForeignKey("model_runs.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    case: Mapped[Case] = relationship(back_populates="messages")
    author: Mapped[User | None] = relationship()
    model_run: Mapped[ModelRun | None] = relationship()
    reviews: Mapped[list[Review]] = relationship(order_by="Review.id")


class Review(Base):
    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    verdict: Mapped[str] = mapped_column(String(16))  # "accepted" | "edited" | "rejected"
    edited_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    signed_off: Mapped[bool] = mapped_column(Boolean, default=False)  # by a user with the reviewer role
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    reviewer: Mapped[User] = relationship()


class CaseReport(Base):
    """A report written for a case (e.g. a radiology report), each saved version with what a checker
    found in it; a user with the reviewer role signs a version off."""

    __tablename__ = "case_reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    text: Mapped[str] = mapped_column(Text)
    findings: Mapped[list] = mapped_column(JSON, default=list)  # the checker's flags: kind, section, span, reason
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    signed_off_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    signed_off_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ReportCheck(Base):
    """One report's result from a batch check (``loupe check-reports``). The source file is named by
    the hash of its content, never by its path (file names can carry patient names)."""

    __tablename__ = "report_checks"
    __table_args__ = (UniqueConstraint("source_digest", "report_id", "checker"), NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(primary_key=True)
    source_digest: Mapped[str] = mapped_column(String(64), index=True)
    report_id: Mapped[str] = mapped_column(String(200))
    checker: Mapped[str] = mapped_column(String(16))  # rules | vlm | both
    has_error: Mapped[bool] = mapped_column(Boolean)
    findings: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True, index=True)
    action: Mapped[str] = mapped_column(String(32))
    # No foreign key: the trail of a purged case must outlive the case.
    case_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Adapter(Base):
    __tablename__ = "adapters"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    domain: Mapped[str] = mapped_column(String(32))
    base_model: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(1024))
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # the domain's adapter


class WebSession(Base):
    """A login session of the web app, shared by every ``loupe serve`` process on this database.

    Keyed by the sha256 of the cookie token, never the token: a database dump hands out no live session.
    Times are epoch seconds (``time.time``): monotonic clocks differ between processes and machines.
    """

    __tablename__ = "web_sessions"
    __table_args__ = {}  # a text key: nothing to auto-increment

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    created: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)
    epoch: Mapped[int] = mapped_column(Integer)  # the user's session_epoch at login


class LoginFailure(Base):
    """Failed logins counted against one throttle key (a user name at an address, or an address).

    The key is the sha256 of the throttle key, so neither addresses nor typed user names (sometimes a
    password typed in the wrong field) are stored.
    """

    __tablename__ = "login_failures"
    __table_args__ = {}

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    locked_until: Mapped[float] = mapped_column(Float)
    last: Mapped[float] = mapped_column(Float, index=True)
