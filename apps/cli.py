"""The ``loupe`` command line. Failures print one line to stderr and exit non-zero."""

from __future__ import annotations

import json
import logging
import secrets
import sys
from pathlib import Path

import click

from loupe.core.config import Settings
from loupe.core.errors import LoupeError
from loupe.core.vlm.families import FAMILIES

FAMILY_CHOICE = click.Choice(sorted(FAMILIES))


class FriendlyGroup(click.Group):
    """Turns expected failures into ``error: ...`` lines instead of tracebacks."""

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        try:
            return super().invoke(ctx)
        except (LoupeError, ValueError, OSError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=FriendlyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(path_type=Path), help="Data folder (env LOUPE_HOME, default ~/.loupe).")
@click.option("--database-url", help="SQLAlchemy URL (env LOUPE_DATABASE_URL, default SQLite under home).")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, database_url: str | None) -> None:
    """Loupe: domain-specialist vision-language apps."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = Settings().with_overrides(home=home, database_url=database_url)


def _service(settings: Settings):  # noqa: ANN202
    from .service import LoupeService

    return LoupeService.open(settings)


# -- serve --------------------------------------------------------------------------------------
@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=7860, show_default=True, type=int)
@click.option("--model", help="Hub id, short name or local path (env LOUPE_MODEL).")
@click.option("--device", help="cpu, cuda, cuda:1 … (default: automatic).")
@click.option("--dtype", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), help="Default: automatic.")
@click.option("--demo-model", is_flag=True, help="Run on random-weight demo model (answers not meaningful).")
@click.pass_obj
def serve(settings: Settings, host: str, port: int, model: str | None, device: str | None, dtype: str | None,
          demo_model: bool) -> None:
    """Start the web app (login required)."""
    from .web import launch

    settings = settings.with_overrides(model=model, device=device, dtype=dtype)
    service = _service(settings)
    if not service.store.list_users():
        password = secrets.token_urlsafe(12)
        service.store.add_user("admin", password, role="admin")
        click.echo(f"First start: created user 'admin' with password {password}  (change with: loupe users add)")
    if demo_model:
        service.slot.load_demo(settings.models_dir)
    else:
        service.slot.load(settings.model, background=True)
    click.echo(f"Loupe on http://{host}:{port}  (data in {settings.home})")
    launch(service, host=host, port=port)


# -- users --------------------------------------------------------------------------------------
@cli.group()
def users() -> None:
    """Manage who can log in."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["user", "reviewer", "admin"]), default="user", show_default=True)
@click.password_option(envvar="LOUPE_NEW_PASSWORD", help="Prompted for when not given (env LOUPE_NEW_PASSWORD).")
@click.pass_obj
def users_add(settings: Settings, name: str, role: str, password: str) -> None:
    """Add a user NAME."""
    _service(settings).store.add_user(name, password, role)
    click.echo(f"user {name!r} added with role {role}")


@users.command("list")
@click.pass_obj
def users_list(settings: Settings) -> None:
    """List users."""
    for user in _service(settings).store.list_users():
        click.echo(f"{user.username}\t{user.role}\t{'active' if user.active else 'disabled'}")


# -- models -------------------------------------------------------------------------------------
@cli.group()
def models() -> None:
    """Recommended checkpoints and offline test models."""


@models.command("list")
def models_list() -> None:
    """Show the recommended checkpoints."""
    from loupe.core.vlm.registry import RECOMMENDED

    for ckpt in RECOMMENDED:
        click.echo(f"{ckpt.name:16} {ckpt.repo_id:48} {ckpt.family:9} {ckpt.note}")


@models.command("make-tiny")
@click.option("--family", type=FAMILY_CHOICE, required=True)
@click.option("--size", type=click.Choice(["tiny", "real"]), default="tiny", show_default=True,
              help="'real' builds the published architecture size (random weights).")
@click.argument("path", type=click.Path(path_type=Path))
def models_make_tiny(family: str, size: str, path: Path) -> None:
    """Write a random-weight checkpoint of FAMILY to PATH (tests, offline demo, benchmarks)."""
    from loupe.core.vlm.tiny import make_tiny

    click.echo(str(make_tiny(family, path, size=size)))


# -- db -----------------------------------------------------------------------------------------
@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(settings: Settings) -> None:
    """Apply pending migrations (also done on every start)."""
    from loupe.core.cases.db import current_revision, make_engine, upgrade

    engine = make_engine(settings.db_url)
    upgrade(engine)
    click.echo(f"database at revision {current_revision(engine)}")


@db.command("current")
@click.pass_obj
def db_current(settings: Settings) -> None:
    """Show the schema revision."""
    from loupe.core.cases.db import current_revision, make_engine

    click.echo(current_revision(make_engine(settings.db_url)) or "empty (no migrations applied)")


# -- bench --------------------------------------------------------------------------------------
@cli.group()
def bench() -> None:
    """Benchmarks that print machine-readable JSON."""


@bench.command("chat")
@click.option("--family", type=FAMILY_CHOICE, default="smolvlm", show_default=True)
@click.option("--size", type=click.Choice(["tiny", "real"]), default="real", show_default=True)
@click.option("--image-size", default=512, show_default=True, help="Side of the square test image, px.")
@click.option("--new-tokens", default=32, show_default=True)
@click.option("--repeats", default=3, show_default=True, help="Timed runs per dtype (after one warm-up).")
@click.option("--dtypes", default="auto,fp32", show_default=True, help="Comma-separated; 'auto' = chosen dtype.")
def bench_chat(family: str, size: str, image_size: int, new_tokens: int, repeats: int, dtypes: str) -> None:
    """Time to first token, tokens/s and peak RSS for one image, per dtype, side by side."""
    from .bench import run_chat_bench

    result = run_chat_bench(family, size, image_size, new_tokens, repeats, dtypes.split(","))
    click.echo(json.dumps(result, indent=2))


def main() -> None:
    cli(prog_name="loupe")


if __name__ == "__main__":
    main()
