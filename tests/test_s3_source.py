"""An s3 data source: COGs in a bucket that checks signatures, read with the source's own keys (kept owner-only
in LOUPE_HOME/secrets, never in the database, the audit or a command's output), listed, opened by reference
and answered in a worker; a wrong key is refused with a clear message and leaves no case."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner
from s3 import s3_store

from loupe.apps.cli import cli
from loupe.apps.service import LoupeService
from loupe.core.config import Settings
from loupe.core.errors import InputRejected
from loupe.core.pyramid.synthetic import random_objects, write_cog
from loupe.core.sources import credentials
from loupe.core.sources.gdal_vsi import set_path_options

SIDE = 2048


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bucket")
    write_cog(folder / "scene.tif", side=SIDE, objects=random_objects(SIDE, 4, 120, seed=5), seed=5)
    with s3_store() as s3:
        client = s3.client()
        client.create_bucket(Bucket="imagery")
        client.upload_file(str(folder / "scene.tif"), "imagery", "scenes/harbour/scene.tif")
        client.put_object(Bucket="imagery", Key="scenes/readme.txt", Body=b"not an image")
        client.upload_file(str(folder / "scene.tif"), "imagery", "private/scene.tif")  # outside the source
        yield s3


def test_an_s3_source_reads_with_its_own_keys_and_never_shows_them(tmp_path, store, tiny_model_dir):
    import pyogrio  # noqa: F401 - a second GDAL in the process (as after other tests): keys must go to rasterio's

    home = tmp_path / "home"
    env = {"LOUPE_HOME": str(home), "LOUPE_MODEL": str(tiny_model_dir("smolvlm"))}
    runner = CliRunner()

    def run(*args: str, stdin: str | None = None):
        return runner.invoke(cli, list(args), env=env, input=stdin, catch_exceptions=False)

    assert run("users", "add", "ana", "--role", "user", "--password", "ana-password-12").exit_code == 0
    added = run("sources", "add", "scenes", "--kind", "s3", "--location", "s3://imagery/scenes", "--domain",
                "remote_sensing", "--reader", "role:user")
    assert added.exit_code == 0 and "s3://imagery/scenes/" in added.output, added.output
    refused = run("sources", "credentials", "scenes", stdin="token=abc\n")
    assert refused.exit_code == 1 and "access_key_id" in refused.output
    set_keys = run("sources", "credentials", "scenes", stdin="# from the storage team\n" + store.credentials())
    assert set_keys.exit_code == 0, set_keys.output
    secrets = home / "secrets" / "sources"
    assert os.stat(secrets).st_mode & 0o777 == 0o700 and os.stat(secrets / "scenes.json").st_mode & 0o777 == 0o600

    assert run("sources", "list").output.rstrip("\n").split("\t")[-2:] == ["s3://imagery/scenes/", "credentials"]
    listed = run("sources", "items", "scenes")
    assert listed.exit_code == 0 and listed.output.split() == ["harbour/scene.tif"], listed.output
    opened = run("open", "scenes", "harbour/scene.tif", "--user", "ana")
    assert opened.exit_code == 0, opened.output
    case_id = int(opened.output.strip())
    assert run("open", "scenes", "../private/scene.tif", "--user", "ana").exit_code == 1

    # The commands above ran in this process and registered the keys here: forget them, as a fresh `loupe serve`
    # would not have them, so the app must register them itself (its tile reads run beside the model).
    credentials._seen.clear()
    credentials._by_location.clear()
    for prefix in ("/vsis3/imagery", "/vsis3/imagery/scenes/"):
        set_path_options(prefix, {})
    service = LoupeService.open(Settings(home=home, database_url=None, model="unused"))
    service.slot.load(tiny_model_dir("smolvlm"))
    ana = service.user("ana")
    raster, _ = service.case_assets(ana, case_id)
    assert raster.meta["by_reference"] and str(raster.path) == "/vsis3/imagery/scenes/harbour/scene.tif"
    assert (raster.width, raster.height) == (SIDE, SIDE)
    final = list(service.ask(ana, case_id, "Where are the ships?"))[-1]  # tiles read in a worker, signed
    assert final.message_id and final.run.extra["focus"]["tiles"]
    assert service.source_items(ana, "scenes") == [("harbour/scene.tif", "harbour/scene.tif")]

    # A wrong secret: the store answers 403; Loupe says so, and makes no case.
    assert run("sources", "credentials", "scenes", stdin=store.credentials(secret="not-the-secret")).exit_code == 0
    cases_before = len(service.store.list_cases(ana))
    with pytest.raises(InputRejected, match="refused Loupe.s credentials") as failure:
        service.open_item(ana, "scenes", "harbour/scene.tif")
    assert store.secret_access_key not in str(failure.value) and "not-the-secret" not in str(failure.value)
    assert len(service.store.list_cases(ana)) == cases_before
    assert run("sources", "credentials", "scenes", "--clear").output.strip() == "scenes: credentials removed"
    assert not (secrets / "scenes.json").exists()

    # The keys never reached the database, the audit trail or any output.
    shown = " ".join(r.output for r in (added, set_keys, listed, opened)) + run("sources", "list").output
    events = json.dumps([e.detail for e in service.store.audit_events()])
    database = (home / "loupe.db").read_bytes()
    for secret in (store.secret_access_key, "not-the-secret"):
        assert secret not in shown and secret not in events and secret.encode() not in database
    assert "source.credentials" in [e.action for e in service.store.audit_events()]
