"""Which case each screen shows, as the server last put it there.

A screen is one page load (Gradio's session hash) of one signed-in user on one domain tab. Opening or creating a
case begins a *switch*; the switch ends when the handler puts the case on screen (or gives up). Every action that
writes to a case (a question, a review, sharing, archiving) carries the case id the page had and is refused when
that is not the case on screen or a switch is in flight: it is never rerouted to another case.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from loupe.core.errors import LoupeError

SWITCHING = "A case is being opened: nothing was done. Try again once it is on screen."


class NotOnScreen(LoupeError):
    """The action was made for a case that is not the one on screen (or while another case was opening)."""


@dataclass
class _Shown:
    case_id: int | None = None
    begun: int = 0  # the newest switch begun on this screen
    ended: int = 0  # the newest switch that ended (``begun`` when none is in flight)
    stopped: int = 0  # the newest switch the user asked to stop (Cancel while a file is read)


class Screens:
    """The case on each screen of one domain tab; bounded (least recently used screens are forgotten)."""

    def __init__(self, capacity: int = 20_000) -> None:
        self._shown: OrderedDict[tuple[str, str], _Shown] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity

    def begin(self, request: object) -> int:
        """A case starts opening on this screen; returns the switch's number for :meth:`end`."""
        with self._lock:
            shown = self._entry(request)
            shown.begun += 1
            return shown.begun

    def end(self, request: object, switch: int, case_id: int | None) -> bool:
        """Switch ``switch`` puts ``case_id`` on screen. False (nothing changes) if a newer switch began meanwhile:
        its case, not this one, is what the user asked for last."""
        with self._lock:
            shown = self._entry(request)
            if switch != shown.begun:
                return False
            shown.case_id, shown.ended = case_id, switch
            return True

    def cancel(self, request: object, switch: int) -> None:
        """Switch ``switch`` ends without a new case: the case on screen stays."""
        with self._lock:
            shown = self._entry(request)
            if switch == shown.begun:
                shown.ended = switch

    def request_stop(self, request: object) -> bool:
        """The user asks to stop the switch in flight (e.g. a file being read); False when none is."""
        with self._lock:
            shown = self._entry(request)
            if shown.ended == shown.begun:
                return False
            shown.stopped = shown.begun
            return True

    def stop_requested(self, request: object, switch: int) -> bool:
        with self._lock:
            return self._entry(request).stopped == switch

    @contextmanager
    def switch(self, request: object) -> Iterator[int]:
        """A switch that ends however the block does: by :meth:`end` inside it, or as cancelled."""
        number = self.begin(request)
        try:
            yield number
        finally:
            self.cancel(request, number)

    def check(self, request: object, case_id: int | None) -> None:
        """Raise :class:`NotOnScreen` unless ``case_id`` is the case on screen and no switch is in flight."""
        with self._lock:
            shown = self._entry(request)
            if shown.ended != shown.begun:
                raise NotOnScreen(SWITCHING)
            if shown.case_id != case_id:
                raise NotOnScreen(f"This was sent for case {case_id}, but the screen shows "
                                  f"{f'case {shown.case_id}' if shown.case_id is not None else 'no case'}: "
                                  "nothing was done. Check the case on screen and try again.")

    def shows(self, request: object, case_id: int | None) -> bool:
        try:
            self.check(request, case_id)
        except NotOnScreen:
            return False
        return True

    def _entry(self, request: object) -> _Shown:
        key = (str(getattr(request, "session_hash", None) or ""), str(getattr(request, "username", None) or ""))
        shown = self._shown.pop(key, None) or _Shown()
        self._shown[key] = shown  # most recently used last
        while len(self._shown) > self._capacity:
            self._shown.popitem(last=False)
        return shown
