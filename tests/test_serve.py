"""`loupe serve` as a user starts it: first-run admin, and an honest page when the model is missing."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from gradio_client import Client
from helpers import free_port


def _start(home, port: int, *model: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "LOUPE_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "LOUPE_ENGINE": "plain"}  # no engine measurement at start: tests elsewhere cover it
    proc = subprocess.Popen([sys.executable, "-m", "loupe.apps.cli", "serve", "--port", str(port), *model],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: os.umask(0o022))  # a usual shell umask: Loupe must not rely on it
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (line := proc.stdout.readline()):
        lines.append(line)
        if f"http://127.0.0.1:{port}" in line:
            break
    return proc, "".join(lines)


def _client(port: int, password: str) -> Client:
    deadline = time.monotonic() + 60
    while True:
        try:
            return Client(f"http://127.0.0.1:{port}/", auth=("admin", password), verbose=False)
        except Exception:  # server still binding
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_serve_says_why_without_a_model_leaves_no_temp_file_past_a_crash_and_writes_owner_only(tmp_path):
    """A first start with a missing model: the admin's password is in a file, the page says why there is no
    model and the demo model can be switched on. Issue 18: temp files live in LOUPE_HOME/tmp, emptied at start
    and stop (a SIGKILL's leftovers at the next start); nothing Loupe writes is 0644."""
    from gradio_client import handle_file
    from helpers import jpeg_with_exif

    home = tmp_path / "home"
    home.mkdir(mode=0o755)  # an existing folder: the database used to be created 0644 in it
    os.chmod(home, 0o755)
    port = free_port()
    proc, output = _start(home, port, "--model", str(tmp_path / "absent"))
    try:
        password_file = home / "initial-admin-password"
        assert f"its password is in {password_file}" in output, output
        password = password_file.read_text().strip()
        assert password not in output
        client = _client(port, password)
        deadline = time.monotonic() + 120
        banner = client.predict(api_name="/model_status")
        while "loading" in banner and time.monotonic() < deadline:
            time.sleep(0.5)
            banner = client.predict(api_name="/model_status")
        assert "No model is available" in banner and "cannot load model" in banner
        status, banner = client.predict(api_name="/use_demo_model")
        assert status == "Model switched." and "Demo weights" in banner
        # The configured model still missing: the switch says why where it was asked, the demo model stays.
        status, banner = client.predict(api_name="/admin_load_model")
        assert status.startswith("⚠️ The switch failed") and "The model before still answers" in status, status
        assert "Demo weights" in banner and "The model switch failed" in banner
        upload = tmp_path / "SMITH_ANNA.jpg"
        upload.write_bytes(jpeg_with_exif())
        created = client.predict(handle_file(str(upload)), "wrist", api_name="/general_create_case")
        assert "created" in str(created), created
        temp = home / "tmp" / f"port-{port}"  # each serve process has its own
        assert temp.is_dir() and temp.stat().st_mode & 0o777 == 0o700, output
        leftover = temp / "loupe-raster-crashed" / "scene.tif"  # what an ingest holds while it runs
        leftover.parent.mkdir()
        leftover.write_bytes(b"II*\x00 vendor header: SMITH^ANNA")
    finally:
        proc.kill()  # SIGKILL: no shutdown handler runs
        rest, _ = proc.communicate(timeout=60)
    assert password not in rest
    assert leftover.exists()
    # Another process's folder: one that died without cleaning up goes, a live one's stays.
    dead, live = home / "tmp" / "port-1", home / "tmp" / "port-2"
    for folder, pid in ((dead, proc.pid), (live, os.getpid())):
        folder.mkdir(mode=0o700)
        (folder / ".pid").write_text(str(pid))
        (folder / "upload.jpg").write_bytes(b"SMITH^ANNA")
    proc, output = _start(home, port, "--demo-model")
    try:
        assert f"http://127.0.0.1:{port}" in output, output
        assert not leftover.parent.exists() and [p.name for p in temp.rglob("*") if p.is_file()] == [".pid"]
        assert (temp / "gradio").is_dir()  # Gradio's uploads live in the same folder
        assert not dead.exists() and (live / "upload.jpg").exists()
    finally:
        proc.terminate()
        rest, _ = proc.communicate(timeout=60)
    assert "Loupe stopped." in rest  # SIGTERM ends it cleanly: its temp folder is emptied on the way out
    assert list(temp.iterdir()) == [] and password not in rest
    loose = {str(p.relative_to(home)): oct(p.stat().st_mode & 0o777) for p in [home, *home.rglob("*")]
             if not p.is_symlink() and p.stat().st_mode & 0o077}
    assert not loose, loose
    assert (home / "loupe.db").exists() and any(p.is_file() for p in (home / "assets").rglob("*"))
