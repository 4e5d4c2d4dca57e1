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
    env = {**os.environ, "LOUPE_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
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
    assert not [p for p in (tmp_path / "home" / "gradio-tmp").rglob("*") if p.is_file()]
