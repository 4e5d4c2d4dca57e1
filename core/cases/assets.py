"""Content-addressed blob storage: bytes live at <root>/<aa>/<sha256>, never under an uploaded name."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

INCOMING = ".incoming-"  # prefix of a blob being written (renamed into place when complete)


class AssetStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Store bytes atomically; returns their sha256. Storing the same bytes twice is a no-op."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path_for(digest)
        if target.exists():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=INCOMING)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o600)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def adopt(self, path: Path, sha256: str) -> bool:
        """Move the file at ``path``, whose sha256 the caller computed, into place (a rename on the same file
        system, a chunked copy across); returns whether it was new. The same content stored already: the
        file is removed."""
        target = self.path_for(sha256)
        if target.exists():
            path.unlink(missing_ok=True)
            return False
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o600)
        try:
            os.replace(path, target)
        except OSError:  # another file system
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=INCOMING)
            os.close(fd)
            try:
                shutil.copyfile(path, tmp)  # in chunks
                os.chmod(tmp, 0o600)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            path.unlink(missing_ok=True)
        return True

    def read(self, sha256: str) -> bytes:
        return self.path_for(sha256).read_bytes()

    def delete(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)

    def blobs(self) -> Iterator[tuple[str | None, Path]]:
        """Every file under the root: (digest, path) for a stored blob, (None, path) for anything else
        (a write cut short, a stray file)."""
        if not self.root.is_dir():
            return
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                name = path.name
                is_blob = len(name) == 64 and name[:2] == folder.name and all(c in "0123456789abcdef" for c in name)
                yield (name if is_blob else None), path

    @staticmethod
    def age_seconds(path: Path) -> float:
        try:
            return time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return 0.0
