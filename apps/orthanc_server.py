"""A throwaway Orthanc PACS with its DICOMweb plugin, on loopback: for the tests and `loupe bench sources`.

Debian's packages: ``orthanc`` (/usr/sbin/Orthanc) and ``orthanc-dicomweb`` (the plugin). The server keeps
its database and files in the folder given, answers HTTP on ``port`` only to this machine, has no DICOM
port and no accounts.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PLUGIN_FOLDERS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins")
START_S = 60.0


def instances_served(folder: Path) -> list[str]:
    """The SOP Instance UIDs whose instance (pixels included) a ``verbose`` Orthanc in ``folder`` served."""
    log = (folder / "orthanc.log").read_text(errors="replace")
    return re.findall(r"\(http\) GET /dicom-web/studies/[0-9.]+/series/[0-9.]+/instances/([0-9.]+)\s*$", log,
                      re.MULTILINE)


def frames_served(folder: Path) -> int:
    """How many frames (WADO-RS ``/frames/N,M,...``) a ``verbose`` Orthanc in ``folder`` has served so far."""
    log = (folder / "orthanc.log").read_text(errors="replace")
    return sum(len(numbers.split(",")) for numbers in re.findall(
        r"\(http\) GET /dicom-web/studies/[0-9.]+/series/[0-9.]+/instances/[0-9.]+/frames/([0-9,]+)", log))


def dicomizer_binary() -> str | None:
    return shutil.which("OrthancWSIDicomizer")


def dicomize(slide: Path, dicomweb_root: str, tags: dict[str, str] | None = None, max_instance_mb: int = 10,
             tile: int = 256) -> None:
    """``slide`` (any format OpenSlide reads) made a DICOM whole-slide image by orthanc-wsi's
    OrthancWSIDicomizer (Debian ``orthanc-wsi``: one instance per level, split every ``max_instance_mb``,
    ``tile``-px JPEG tiles) and stored into the Orthanc whose DICOMweb root is given; ``tags``: attributes of
    the DICOM dataset (PatientName...)."""
    import openslide_bin

    binary = dicomizer_binary()
    if binary is None:
        raise RuntimeError("OrthancWSIDicomizer is not installed (Debian: orthanc-wsi)")
    library = Path(openslide_bin.__file__).parent / "libopenslide.so.1"  # OpenSlide from Loupe's own lock
    with tempfile.TemporaryDirectory(prefix="loupe-dicomize-") as folder:
        dataset = Path(folder) / "dataset.json"
        dataset.write_text(json.dumps(tags or {}))
        done = subprocess.run([binary, "--openslide", str(library), "--orthanc",
                               dicomweb_root.removesuffix("dicom-web/"), "--tile-width", str(tile), "--tile-height",
                               str(tile), "--max-size", str(max_instance_mb), "--dataset", str(dataset), str(slide)],
                              capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"OrthancWSIDicomizer failed: {done.stderr[-1500:]}")


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin")


def dicomweb_plugin() -> str | None:
    found = [p for folder in PLUGIN_FOLDERS for p in Path(folder).glob("libOrthancDicomWeb.so*")]
    return str(found[0]) if found else None


@contextmanager
def running_orthanc(folder: Path, port: int, binary: str | None = None, plugin: str | None = None,
                    verbose: bool = False, users: dict[str, str] | None = None) -> Iterator[str]:
    """Orthanc serving DICOMweb on ``port``; yields the DICOMweb root (``http://127.0.0.1:PORT/dicom-web/``).
    ``verbose``: every HTTP request is written to ``folder / "orthanc.log"`` (what a test counts); ``users``:
    HTTP basic authentication with these names and passwords."""
    binary, plugin = binary or orthanc_binary(), plugin or dicomweb_plugin()
    if not binary or not plugin:
        raise RuntimeError("Orthanc and its DICOMweb plugin are not installed (Debian: orthanc orthanc-dicomweb)")
    storage = folder / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = folder / "orthanc.json"
    config.write_text(json.dumps({
        "Name": "loupe-test", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
        "HttpPort": port, "RemoteAccessAllowed": False, "AuthenticationEnabled": bool(users),
        "RegisteredUsers": users or {},
        "DicomServerEnabled": False, "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}))
    log = (folder / "orthanc.log").open("wb")
    process = subprocess.Popen([binary, *(["--verbose"] if verbose else []), str(config)], stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_S
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/system", timeout=2):
                    break
            except urllib.error.HTTPError:  # 401: up, and asking for a password
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    said = (folder / "orthanc.log").read_text()[-2000:]
                    raise RuntimeError(f"Orthanc did not start: {said}") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/dicom-web/"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
