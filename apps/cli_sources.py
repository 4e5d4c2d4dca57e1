"""``loupe sources`` and ``loupe open``: the data sources an admin lets Loupe read, and cases opened from
their items by reference (the item stays where it is)."""

from __future__ import annotations

import sys

import click

from loupe.core.config import Settings
from loupe.core.sources import KINDS

from .cli_common import open_store


@click.group()
def sources() -> None:
    """Data sources: folders, HTTP(S) prefixes of COGs, STAC catalogues and PACS (DICOMweb) that cases are
    opened from where they live."""


@sources.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(list(KINDS)), required=True,
              help="folder: a folder on this server; http: an http(s):// prefix of Cloud-Optimized GeoTIFFs; "
                   "s3: an s3://bucket/prefix/ of them (keys: `loupe sources credentials`); "
                   "stac: a static STAC catalogue (its catalog.json, a file or a URL); dicomweb: a PACS's "
                   "DICOMweb root (e.g. http://pacs:8042/dicom-web/).")
@click.option("--location", required=True,
              help="The folder's absolute path, the http(s) prefix, the catalogue, or the DICOMweb root.")
@click.option("--domain", required=True, help="The tab its items open in (e.g. remote_sensing).")
@click.option("--reader", "readers", multiple=True, metavar="role:NAME|user:NAME",
              help="Who may read it (repeat). Administrators always may; nobody else unless named here.")
@click.pass_obj
def sources_add(settings: Settings, name: str, kind: str, location: str, domain: str, readers: tuple[str, ...]) -> None:
    """Add a data source (audited)."""
    from loupe.core.plugins import discover

    if domain not in discover():
        raise click.BadParameter(f"unknown domain {domain!r}", param_hint="--domain")
    spec = open_store(settings).add_source(None, name, kind, location, domain, readers)
    who = ", ".join(spec.readers) or "administrators only"
    click.echo(f"added {spec.name}: {spec.kind} {spec.location} → {spec.domain} (readers: {who})")


@sources.command("list")
@click.pass_obj
def sources_list(settings: Settings) -> None:
    """Every data source: name, kind, domain, readers, location, and whether it has credentials."""
    from loupe.core.sources import credentials

    for spec in open_store(settings).sources():
        keys = "credentials" if credentials.has(settings.home, spec.name) else "-"
        click.echo(f"{spec.name}\t{spec.kind}\t{spec.domain}\t{','.join(spec.readers) or '-'}\t{spec.location}\t{keys}")


@sources.command("remove")
@click.argument("name")
@click.pass_obj
def sources_remove(settings: Settings, name: str) -> None:
    """Remove a data source (audited). Cases opened from it keep their records and say it was removed."""
    from loupe.core.sources import credentials

    cases = open_store(settings).remove_source(None, name)
    credentials.remove(settings.home, name)
    click.echo(f"removed {name}" + (f"; {cases} case(s) read from it and now say it was removed" if cases else ""))


@sources.command("credentials")
@click.argument("name")
@click.option("--clear", is_flag=True, help="Remove the source's credentials.")
@click.pass_obj
def sources_credentials(settings: Settings, name: str, clear: bool) -> None:
    """Set a source's credentials from standard input: key=value lines, never on the command line (other users
    see a process's arguments). s3: access_key_id, secret_access_key, session_token, region, endpoint (an
    S3-compatible store: endpoint=https://host:port); http and dicomweb: username and password, or token.
    Kept in LOUPE_HOME/secrets/sources (owner-only), read by the workers that read the source; audited."""
    from loupe.core.sources import credentials

    store = open_store(settings)
    spec = next((s for s in store.sources() if s.name == name), None)
    if spec is None:
        raise click.BadParameter(f"no data source named {name!r}", param_hint="NAME")
    if clear:
        removed = credentials.remove(settings.home, name)
        store.audit(None, "source.credentials", detail={"source": name, "cleared": removed, "via": "cli"})
        click.echo(f"{name}: credentials removed" if removed else f"{name} had no credentials")
        return
    values = credentials.parse(spec.kind, sys.stdin.read(64 * 1024))
    credentials.save(settings.home, name, spec.kind, spec.location, values)
    store.audit(None, "source.credentials", detail={"source": name, "keys": sorted(values), "via": "cli"})
    click.echo(f"{name}: credentials set ({', '.join(sorted(values))})")


@sources.command("items")
@click.argument("name")
@click.option("--search", default="", help="Items containing this text; for a PACS, filters: modality (CT), "
                                          "date or range (20240101-20241231), patient ID, or key=value "
                                          "(patient, name, modality, date, accession, study).")
@click.pass_obj
def sources_items(settings: Settings, name: str, search: str) -> None:
    """The items of a source its domain can open, one per line: the item, a tab, its label (an http source
    cannot be listed: give the item's path to `open`)."""
    from loupe.core.plugins import discover
    from loupe.core.sources import search_items
    from loupe.core.sources.credentials import use_credentials

    spec = next((s for s in open_store(settings).sources() if s.name == name), None)
    if spec is None:
        raise click.BadParameter(f"no data source named {name!r}", param_hint="NAME")
    domain = discover().get(spec.domain)
    use_credentials(settings.home)
    for label, item in search_items(spec, search, tuple(domain.accepts) if domain else ()):
        click.echo(item if label == item else f"{item}\t{label}")


@click.command("open")
@click.argument("source")
@click.argument("item")
@click.option("--user", "username", required=True, help="The account the case belongs to (a reader of the source).")
@click.option("--title", default="", help="The case's title (default: 'From SOURCE').")
@click.pass_obj
def open_item(settings: Settings, source: str, item: str, username: str, title: str) -> None:
    """Open ITEM of data source SOURCE as a new case by reference; prints the case id."""
    from .cli import _service

    service = _service(settings)  # its worker pool stops at exit (core/jobs.py)
    click.echo(service.open_item(service.user(username), source, item, title))
