"""The two GDAL virtual-file-system calls rasterio does not expose: path-specific options (credentials for one
prefix only, so two S3 sources with different keys can be read by the same worker) and a bounded directory
walk (an S3 prefix listed without reading the whole bucket). Called on the libgdal rasterio itself loaded.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path


class _DirEntry(ctypes.Structure):  # VSIDIREntry, cpl_vsi.h (GDAL >= 3.0)
    _fields_ = [("name", ctypes.c_char_p), ("mode", ctypes.c_int), ("size", ctypes.c_uint64),
                ("mtime", ctypes.c_int64), ("mode_known", ctypes.c_char), ("size_known", ctypes.c_char),
                ("mtime_known", ctypes.c_char), ("extra", ctypes.POINTER(ctypes.c_char_p))]


@functools.cache
def _gdal() -> ctypes.CDLL:
    import rasterio  # loads its libgdal into this process

    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "/" in line}
    loaded = sorted(p for p in paths if Path(p).name.startswith("libgdal"))
    # Other wheels bundle their own GDAL (pyogrio does): the options must go to the one rasterio reads with.
    bundled = [p for p in loaded if Path(p).parent.name == "rasterio.libs"
               and Path(p).parent.parent == Path(rasterio.__file__).parent.parent]
    library = bundled[0] if bundled else loaded[0] if len(loaded) == 1 else None
    if library is None:
        raise RuntimeError(f"cannot tell which of {len(loaded)} GDAL libraries rasterio uses")
    gdal = ctypes.CDLL(library)  # the same handle: the library is already loaded
    gdal.VSISetPathSpecificOption.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
    gdal.VSISetPathSpecificOption.restype = None
    gdal.VSIClearPathSpecificOptions.argtypes = [ctypes.c_char_p]
    gdal.VSIClearPathSpecificOptions.restype = None
    gdal.VSIOpenDir.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
    gdal.VSIOpenDir.restype = ctypes.c_void_p
    gdal.VSIGetNextDirEntry.argtypes = [ctypes.c_void_p]
    gdal.VSIGetNextDirEntry.restype = ctypes.POINTER(_DirEntry)
    gdal.VSICloseDir.argtypes = [ctypes.c_void_p]
    gdal.VSICloseDir.restype = None
    gdal.VSICurlPartialClearCache.argtypes = [ctypes.c_char_p]
    gdal.VSICurlPartialClearCache.restype = None
    gdal.CPLPushErrorHandler.argtypes = [ctypes.c_void_p]
    gdal.CPLPushErrorHandler.restype = None
    gdal.CPLPopErrorHandler.argtypes = []
    gdal.CPLPopErrorHandler.restype = None
    return gdal


def set_path_options(prefix: str, options: dict[str, str]) -> None:
    """Options GDAL applies to every file under ``prefix`` only (replacing what was set for it before)."""
    gdal = _gdal()
    gdal.VSIClearPathSpecificOptions(prefix.encode())
    for key, value in options.items():
        gdal.VSISetPathSpecificOption(prefix.encode(), key.encode(), value.encode())
    gdal.CPLPushErrorHandler(ctypes.cast(gdal.CPLQuietErrorHandler, ctypes.c_void_p))
    try:  # a prefix that is not a whole URL (an S3 one without its endpoint) only says so on stderr
        gdal.VSICurlPartialClearCache(prefix.encode())  # nothing read with the old options is reused
    finally:
        gdal.CPLPopErrorHandler()


def walk_files(folder: str, limit: int) -> list[str]:
    """Paths of files below ``folder`` (a /vsi… folder), relative to it, at most ``limit``, in listing order."""
    gdal = _gdal()
    handle = gdal.VSIOpenDir(folder.encode(), -1, None)  # -1: every depth
    if not handle:
        raise FileNotFoundError(folder)
    found: list[str] = []
    try:
        while len(found) < limit:
            entry = gdal.VSIGetNextDirEntry(handle)
            if not entry:
                break
            is_folder = entry.contents.mode_known != b"\x00" and entry.contents.mode & 0o170000 == 0o040000
            if not is_folder:
                found.append(entry.contents.name.decode("utf-8", "replace"))
    finally:
        gdal.VSICloseDir(handle)
    return found


REMOTE = ("/vsis3/", "/vsicurl/")
REFUSED = ("signature", "accessdenied", "access denied", "invalidaccesskeyid", "403", "401", "forbidden",
           "unauthorized", "credentials", "aws_secret_access_key")


def remote_read_problem(path: str, message: str) -> str | None:
    """What to tell a user when GDAL could not open ``path`` from a data source (None: not a remote path)."""
    if not path.startswith(REMOTE):
        return None
    text = message.lower()
    if "does not exist" in text or "404" in text:
        return "No such item in this source (or it is not an image GDAL can open)."
    if any(word in text for word in REFUSED):
        return ("The data source refused Loupe's credentials: an administrator can set them with "
                "`loupe sources credentials NAME`.")
    return "The data source could not be read just now: " + message[:200]
