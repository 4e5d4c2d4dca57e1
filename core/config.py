"""Settings from the environment, overridable from the CLI.

Every path Loupe writes lives under ``LOUPE_HOME`` (default ``~/.loupe``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from .budgets import Budgets

DEFAULT_MODEL = "HuggingFaceTB/SmolVLM-256M-Instruct"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=lambda: Path(os.environ.get("LOUPE_HOME", "~/.loupe")).expanduser())
    database_url: str | None = field(default_factory=lambda: os.environ.get("LOUPE_DATABASE_URL"))
    model: str = field(default_factory=lambda: os.environ.get("LOUPE_MODEL", DEFAULT_MODEL))
    device: str | None = field(default_factory=lambda: os.environ.get("LOUPE_DEVICE"))
    dtype: str | None = field(default_factory=lambda: os.environ.get("LOUPE_DTYPE"))
    # An OpenAI-compatible model server (vLLM: ``loupe serve-model``) that answers instead of an in-process
    # engine, e.g. http://127.0.0.1:8000; LOUPE_MODEL then names the checkpoint it serves (its processor
    # settings size the images). LOUPE_MODEL_SERVER_KEY: the server's API key, if it asks for one.
    model_server: str | None = field(default_factory=lambda: os.environ.get("LOUPE_MODEL_SERVER") or None)
    model_server_key: str | None = field(default_factory=lambda: os.environ.get("LOUPE_MODEL_SERVER_KEY") or None)
    # The longest answer the app generates, in tokens (a cap: a model usually stops well before).
    max_answer_tokens: int = field(default_factory=lambda: _env_int("LOUPE_MAX_ANSWER_TOKENS", 256))
    # Answers one app process streams from the model server at once (the server batches them).
    served_concurrency: int = field(default_factory=lambda: _env_int("LOUPE_SERVED_CONCURRENCY", 16))
    # auto | plain | int8 | static: how the model executes (core/vlm/engines.py); auto measures fastest.
    engine: str | None = field(default_factory=lambda: os.environ.get("LOUPE_ENGINE"))
    # What one input may cost (bytes, pixels, frames, pages, work, text, a job's time and memory): core/budgets.py.
    budgets: Budgets = field(default_factory=Budgets.from_env)
    # Web sessions end after this much inactivity, and in any case after the absolute limit.
    session_idle_minutes: int = field(default_factory=lambda: _env_int("LOUPE_SESSION_IDLE_MINUTES", 30))
    session_max_hours: int = field(default_factory=lambda: _env_int("LOUPE_SESSION_MAX_HOURS", 12))
    # Reverse proxies (addresses or networks) whose X-Forwarded-For / X-Forwarded-Proto are believed; none
    # by default. Single sign-on: the proxy authenticates and names the user in ``trusted_user_header``,
    # believed only on a connection from a listed proxy that also sends the shared secret
    # (LOUPE_TRUSTED_PROXY_SECRET, or the file LOUPE_HOME/secrets/trusted-proxy-secret) in X-Loupe-Proxy-Secret.
    trusted_user_header: str | None = field(default_factory=lambda: os.environ.get("LOUPE_TRUSTED_USER_HEADER"))
    trusted_proxies: tuple[str, ...] = field(default_factory=lambda: tuple(
        a.strip() for a in os.environ.get("LOUPE_TRUSTED_PROXIES", "").split(",") if a.strip()))
    trusted_proxy_secret: str | None = field(default_factory=lambda: os.environ.get("LOUPE_TRUSTED_PROXY_SECRET"))
    # The origin browsers see (https://loupe.example.org) when a proxy rewrites Host; unset: the request's own.
    # Requests sent by pages of any other origin (other ports of the same host included) are refused.
    public_origin: str | None = field(default_factory=lambda: os.environ.get("LOUPE_PUBLIC_ORIGIN") or None)
    # Memory for open conversations' KV caches (a follow-up then prefills only its new text).
    kv_cache_mb: int = field(default_factory=lambda: _env_int("LOUPE_KV_CACHE_MB", 1024))
    # Memory for encoded images: the same pixels are never encoded twice while they fit.
    feature_cache_mb: int = field(default_factory=lambda: _env_int("LOUPE_FEATURE_CACHE_MB", 512))
    # Disk for encoded images under LOUPE_HOME/cache/features, so a restart does not encode again (0: off).
    feature_disk_mb: int = field(default_factory=lambda: _env_int("LOUPE_FEATURE_DISK_MB", 2048))
    # A trained OCR query module (core/ocr/queries.py) for the served model: documents then reach the
    # model as a few learned tokens instead of their spelled-out text. Unset: OCR text in the prompt.
    ocr_queries: Path | None = field(default_factory=lambda: Path(os.environ["LOUPE_OCR_QUERIES"]).expanduser()
                                     if os.environ.get("LOUPE_OCR_QUERIES") else None)
    # Where `auto`'s engine measurements are kept (engine_choice.py); several LOUPE_HOMEs on one machine may share
    # one file, so each does not measure the same model again. Unset: LOUPE_HOME/cache/engines.json.
    engine_cache_file: Path | None = field(default_factory=lambda: Path(os.environ["LOUPE_ENGINE_CACHE"]).expanduser()
                                           if os.environ.get("LOUPE_ENGINE_CACHE") else None)
    # A serve process's own name (``loupe serve`` uses its port): its temporary files live in a folder of
    # their own, so processes sharing LOUPE_HOME never empty each other's. Empty: LOUPE_HOME/tmp itself.
    instance: str = ""
    # Uploads chosen but never submitted are deleted after this long.
    upload_ttl_minutes: int = field(default_factory=lambda: _env_int("LOUPE_UPLOAD_TTL_MINUTES", 15))
    # A basemap under the remote-sensing map: an XYZ tile service in Web Mercator on the site's own network,
    # e.g. https://tiles.example.org/{z}/{x}/{y}.png (apps/web/basemap.py). Unset: the map is plain.
    basemap_url: str | None = field(default_factory=lambda: os.environ.get("LOUPE_BASEMAP_URL") or None)
    basemap_attribution: str = field(default_factory=lambda: os.environ.get("LOUPE_BASEMAP_ATTRIBUTION", ""))

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'loupe.db'}"

    @property
    def assets_dir(self) -> Path:
        return self.home / "assets"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def tmp_dir(self) -> Path:
        """Every temporary file of the server lives here (mode 0700); ``loupe serve`` empties it at start and stop."""
        return self.home / "tmp" / self.instance if self.instance else self.home / "tmp"

    @property
    def gradio_tmp_dir(self) -> Path:
        return self.tmp_dir / "gradio"

    @property
    def engine_cache(self) -> Path:
        return self.engine_cache_file or self.home / "cache" / "engines.json"

    @property
    def feature_cache_dir(self) -> Path:
        return self.home / "cache" / "features"

    @property
    def trusted_proxy_secret_file(self) -> Path:
        """Where the proxy secret may be kept instead of the environment (read when the variable is unset)."""
        return self.home / "secrets" / "trusted-proxy-secret"

    @property
    def initial_password_file(self) -> Path:
        """Where a non-interactive first start leaves the generated admin password (mode 0600)."""
        return self.home / "initial-admin-password"

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def ensure_dirs(self) -> None:
        for path in (self.home, self.assets_dir, self.models_dir, self.tmp_dir, self.gradio_tmp_dir):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
