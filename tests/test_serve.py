"""`loupe serve` as a user starts it: first-run admin, and an honest page when the model is missing."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from gradio_client import Client
from helpers import free_port


def test_serve_starts_without_a_model_and_says_why(tmp_path):
    port = free_port()
    env = {**os.environ, "LOUPE_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "LOUPE_ENGINE": "plain"}  # no engine measurement at start: tests elsewhere cover it
    proc = subprocess.Popen(
        [sys.executable, "-m", "loupe.apps.cli", "serve", "--port", str(port), "--model", str(tmp_path / "absent")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if f"http://127.0.0.1:{port}" in line:
                break
        output = "".join(lines)
        password_file = tmp_path / "home" / "initial-admin-password"
        assert f"its password is in {password_file}" in output, output
        password = password_file.read_text().strip()
        assert password not in output
        client = None
        while client is None and time.monotonic() < deadline:
            try:
                client = Client(f"http://127.0.0.1:{port}/", auth=("admin", password), verbose=False)
            except Exception:  # server still binding
                time.sleep(0.5)
        assert client is not None
        banner = client.predict(api_name="/model_status")
        while "loading" in banner and time.monotonic() < deadline:
            time.sleep(0.5)
            banner = client.predict(api_name="/model_status")
        assert "No model is available" in banner and "cannot load model" in banner
        status, banner = client.predict(api_name="/use_demo_model")
        assert status == "Model switched." and "Demo weights" in banner
    finally:
        proc.terminate()
        rest, _ = proc.communicate(timeout=60)
    assert password not in rest
    # A clean shutdown leaves nothing in Gradio's temp folder.
    assert not [p for p in (tmp_path / "home" / "tmp").rglob("*") if p.is_file()]


def _start(home, port: int) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "LOUPE_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "LOUPE_ENGINE": "plain"}  # no engine measurement at start: tests elsewhere cover it
    proc = subprocess.Popen([sys.executable, "-m", "loupe.apps.cli", "serve", "--port", str(port), "--demo-model"],
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


def test_a_crash_leaves_no_temp_file_past_the_next_start_and_every_file_is_owner_only(tmp_path):
    """Issue 18: temp files live in LOUPE_HOME/tmp, emptied at start and stop; nothing Loupe writes is 0644."""
    from gradio_client import handle_file
    from helpers import jpeg_with_exif

    home = tmp_path / "home"
    home.mkdir(mode=0o755)  # an existing folder: the database used to be created 0644 in it
    os.chmod(home, 0o755)
    port = free_port()
    proc, output = _start(home, port)
    try:
        client = _client(port, (home / "initial-admin-password").read_text().strip())
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
        proc.communicate(timeout=60)
    assert leftover.exists()
    # Another process's folder: one that died without cleaning up goes, a live one's stays.
    dead, live = home / "tmp" / "port-1", home / "tmp" / "port-2"
    for folder, pid in ((dead, proc.pid), (live, os.getpid())):
        folder.mkdir(mode=0o700)
        (folder / ".pid").write_text(str(pid))
        (folder / "upload.jpg").write_bytes(b"SMITH^ANNA")
    proc, output = _start(home, port)
    try:
        assert f"http://127.0.0.1:{port}" in output, output
        assert not leftover.parent.exists() and [p.name for p in temp.rglob("*") if p.is_file()] == [".pid"]
        assert (temp / "gradio").is_dir()  # Gradio's uploads live in the same folder
        assert not dead.exists() and (live / "upload.jpg").exists()
    finally:
        proc.terminate()
        rest, _ = proc.communicate(timeout=60)
    assert "Loupe stopped." in rest  # SIGTERM ends it cleanly: its temp folder is emptied on the way out
    assert list(temp.iterdir()) == []
    loose = {str(p.relative_to(home)): oct(p.stat().st_mode & 0o777) for p in [home, *home.rglob("*")]
             if not p.is_symlink() and p.stat().st_mode & 0o077}
    assert not loose, loose
    assert (home / "loupe.db").exists() and any(p.is_file() for p in (home / "assets").rglob("*"))
