"""A server killed mid-ingest leaves no case, no blob, no temp file and no worker behind; a restart sweeps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from loupe.core.cases.assets import AssetStore
from loupe.core.cases.db import open_database
from loupe.core.cases.store import CaseStore

DATA = Path(__file__).resolve().parents[1] / "data"

SERVER = """
import sys
from pathlib import Path
from loupe.apps.service import LoupeService
from loupe.core.config import Settings

service = LoupeService.open(Settings())
user = service.store.add_user("ann", "a long enough password")
scan = Path(sys.argv[1])
print("ingesting", flush=True)
while True:  # until killed: every pass reads the scan again (OCR in a worker)
    service.create_case(user, "documents", scan, "scan")
    print("stored", flush=True)
"""


ASKER = """
import sys, time
from pathlib import Path
from loupe.apps.service import LoupeService
from loupe.core.config import Settings
from loupe.core.vlm.base import GenerationOptions

service = LoupeService.open(Settings(model=sys.argv[1]))
service.slot.load(sys.argv[1])
service.slot.get()
user = service.store.add_user("ann", "a long enough password")
case_id = service.create_case(user, "general", Path(sys.argv[2]), "photo")
print(case_id, flush=True)
for step in service.ask(user, case_id, "What is shown?", GenerationOptions(max_new_tokens=24, detail="low")):
    print("streaming", flush=True)
    time.sleep(120)  # killed here, mid-answer
"""


def _processes_with(home: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if f"LOUPE_HOME={home}".encode() in (entry / "environ").read_bytes():
                state = (entry / "stat").read_text().split(") ")[-1][0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_server_killed_mid_ingest_leaves_nothing_half_done(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "LOUPE_HOME": str(home)}
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(DATA / "documents" / "ocr_test.pdf")], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ingesting"
        time.sleep(1.5)  # inside the worker's OCR (or storing the first case)
        server.send_signal(signal.SIGKILL)
        server.wait(30)
    finally:
        server.kill()
    deadline = time.monotonic() + 30
    while _processes_with(home) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_with(home) == [], "a worker outlived the server"
    stored = server.stdout.read().count("stored")
    store = CaseStore(open_database(f"sqlite:///{home / 'loupe.db'}"), AssetStore(home / "assets"))
    user = store.get_user("ann")
    cases = store.list_cases(user)
    assert len(cases) == stored  # each case whole or absent
    known = {a.sha256 for c in cases for a in store.open_case(user, c.id).assets}
    for digest, path in store.assets.blobs():
        assert digest in known or digest is None, "a blob no case names"
        assert not path.name.startswith(".incoming-") or store.assets.age_seconds(path) >= 0
    leftovers = [p for p in (home / "tmp").rglob("*") if p.is_file()] if (home / "tmp").exists() else []
    assert leftovers == []
    # a write cut short an hour ago (a kill between the blob and its rows) goes at the next start
    orphan = home / "assets" / "ab" / ("ab" + "0" * 62)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"pixels")
    os.utime(orphan, (time.time() - 7200, time.time() - 7200))
    fresh = orphan.with_name("ab" + "1" * 62)
    fresh.write_bytes(b"being stored right now")
    assert store.sweep_orphans() == 1
    assert not orphan.exists() and fresh.exists()


def test_a_server_killed_mid_answer_keeps_the_case_whole_with_no_half_answer(
        tmp_path: Path, tiny_model_dir) -> None:  # noqa: ANN001 - the conftest fixture
    from PIL import Image

    from loupe.apps.service import LoupeService
    from loupe.core.config import Settings

    home, model = tmp_path / "home", tiny_model_dir("smolvlm")
    photo = tmp_path / "photo.png"
    Image.effect_noise((96, 96), 40).convert("RGB").save(photo)
    env = {**os.environ, "LOUPE_HOME": str(home)}
    server = subprocess.Popen([sys.executable, "-c", ASKER, str(model), str(photo)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        case_id = int(server.stdout.readline())
        assert server.stdout.readline().strip() == "streaming"
        server.send_signal(signal.SIGKILL)
        server.wait(30)
    finally:
        server.kill()
    service = LoupeService.open(Settings(home=home, model=str(model)))
    user = service.store.get_user("ann")
    case = service.store.open_case(user, case_id)
    assert [m.role for m in case.messages] == ["user"]  # the question, no half answer: asking again is a new turn
    assert len(case.assets) == 1 and case.archived_at is None
