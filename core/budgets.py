"""Every budget an input is checked against, in one place, before it is decoded.

A budget bounds what one file may make the server do: bytes received, pixels decoded at once, bytes
inflated, frames, pages, slices, total pixels of work, text length, and a worker job's CPU time and
memory. Decoders ask :meth:`Budgets.check` with the amount a header *claims*, before decoding; a refusal
names what was too large, the limit, and the setting that changes it. Defaults fit what a clinic meets
daily (a 120-frame ultrasound cine, a 1,000-slice CT, 2,000² radiographs, giant images read in parts).

Settings are environment variables (``LOUPE_MAX_…``, ``LOUPE_JOB_…``); ``docs/budgets.md`` lists them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

from .errors import InputRejected

_MIB = 2**20


@dataclass(frozen=True)
class Limit:
    """How one budget is described to a user: its unit and the environment variable that sets it."""

    setting: str
    unit: str  # "bytes", "pixels", "frames", ... (bytes and pixels are shown in MiB and megapixels)
    meaning: str


def _limit(default: int, setting: str, unit: str, meaning: str) -> int:
    return field(default=default, metadata={"limit": Limit(setting, unit, meaning)})


class BudgetExceeded(InputRejected):
    """An input claims more than a budget allows; refused before the work is done."""

    def __init__(self, message: str, budget: str) -> None:
        super().__init__(message)
        self.budget = budget

    def __reduce__(self) -> tuple:  # crosses from a worker process intact
        return type(self), (str(self), self.budget)


@dataclass(frozen=True)
class Budgets:
    max_bytes: int = _limit(50 * _MIB, "LOUPE_MAX_UPLOAD_BYTES", "bytes", "one file as uploaded or read")
    max_pixels: int = _limit(89_478_485, "LOUPE_MAX_IMAGE_PIXELS", "pixels",
                             "one image, frame or rendered page, decoded at once")
    max_decoded_bytes: int = _limit(1024 * _MIB, "LOUPE_MAX_DECODED_BYTES", "bytes",
                                    "what one file may inflate to (compressed DICOM data, zip members)")
    max_frames: int = _limit(2_000, "LOUPE_MAX_FRAMES", "frames", "frames of one multi-frame file")
    max_pages: int = _limit(30, "LOUPE_MAX_PAGES", "pages", "pages read from one document or TIFF")
    max_slices: int = _limit(2_000, "LOUPE_MAX_SLICES", "files", "files of one zipped series")
    max_work_pixels: int = _limit(2_000_000_000, "LOUPE_MAX_WORK_PIXELS", "pixels",
                                  "pixels one upload may make the server decode or write in all")
    max_text_chars: int = _limit(50_000, "LOUPE_MAX_TEXT_CHARS", "characters", "one report to check")
    max_question_chars: int = _limit(4_000, "LOUPE_MAX_QUESTION_CHARS", "characters", "one question")
    job_seconds: int = _limit(300, "LOUPE_JOB_SECONDS", "seconds", "CPU time of one job in a worker")
    job_memory_bytes: int = _limit(4096 * _MIB, "LOUPE_JOB_MEMORY_BYTES", "bytes",
                                   "memory one job in a worker may allocate")
    jobs_per_user: int = _limit(3, "LOUPE_JOBS_PER_USER", "jobs", "jobs one user may have waiting or running")
    workers: int = _limit(2, "LOUPE_WORKERS", "workers", "jobs run at once (each in its own process)")
    max_stream_bytes: int = _limit(4096 * _MIB, "LOUPE_MAX_STREAMED_BYTES", "bytes",
                                   "one file a tab reads in parts (a scene), as uploaded")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Budgets:
        env = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = env.get(f.metadata["limit"].setting)
            if raw:
                try:
                    values[f.name] = int(raw.replace("_", ""))
                except ValueError:
                    raise ValueError(f"{f.metadata['limit'].setting} must be a whole number, not {raw!r}") from None
        return cls(**values)

    @classmethod
    def described(cls) -> list[tuple[str, Limit, int]]:
        """(field, description, default) of every budget, for docs and ``loupe budgets``."""
        return [(f.name, f.metadata["limit"], f.default) for f in fields(cls)]

    def check(self, name: str, amount: int, what: str) -> None:
        """Refuse ``amount`` of budget ``name`` (e.g. ``"max_pixels"``) when it exceeds the limit.

        ``what`` names the thing measured, e.g. "Page 2 of the TIFF", and starts the message.
        """
        limit = getattr(self, name)
        if amount > limit:
            raise BudgetExceeded(over_budget(name, amount, limit, what), name)


def describe(name: str, amount: int) -> str:
    """``amount`` of budget ``name`` in words: 105 MiB, 144.0 megapixels, 1,200 frames."""
    unit = Budgets.__dataclass_fields__[name].metadata["limit"].unit
    if unit == "bytes":
        return f"{amount / _MIB:,.0f} MiB" if amount >= _MIB else f"{amount:,} bytes"
    if unit == "pixels":
        return f"{amount / 1e6:,.1f} megapixels" if amount >= 1e6 else f"{amount:,} pixels"
    return f"{amount:,} {unit}"


def over_budget(name: str, amount: int, limit: int, what: str) -> str:
    shown, cap = describe(name, amount), describe(name, limit)
    if shown == cap:  # rounding hides the difference: give the exact counts
        unit = Budgets.__dataclass_fields__[name].metadata["limit"].unit
        shown, cap = f"{amount:,} {unit}", f"{limit:,} {unit}"
    setting = Budgets.__dataclass_fields__[name].metadata["limit"].setting
    return f"{what} is {shown}; Loupe accepts up to {cap} (an administrator can raise {setting})."
