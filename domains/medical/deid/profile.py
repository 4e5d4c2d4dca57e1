"""DICOM PS3.15 Annex E, Table E.1-1 as data: each attribute's Basic Profile action and its option
columns, loaded from ``ps315_table_e1_1.json`` (edition 2026d; provenance inside the file)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.tag import BaseTag

TABLE_FILE = Path(__file__).with_name("ps315_table_e1_1.json")


@dataclass(frozen=True)
class Rule:
    tag: str  # "gggg eeee" as eight hex digits, "xx" for wildcards, or "PRIVATE"
    name: str
    basic: str  # the Basic Profile's action code: D, Z, X, K, C, U or a combination such as X/Z/D
    options: dict[str, str] = field(default_factory=dict)  # option key -> action code (K, C)
    retired: bool = False


class Profile:
    """Looks up the rule for a tag: exact tags first, then the repeating groups (50xx, 60xx)."""

    def __init__(self, rules: list[Rule], edition: str) -> None:
        self.rules = rules
        self.edition = edition
        self._exact = {int(r.tag, 16): r for r in rules if "x" not in r.tag and r.tag != "PRIVATE"}
        self._masked = [(int(r.tag.replace("x", "0"), 16), int("".join("0" if c == "x" else "F" for c in r.tag), 16), r)
                        for r in rules if "x" in r.tag]
        self.private = next(r for r in rules if r.tag == "PRIVATE")

    def rule_for(self, tag: BaseTag) -> Rule | None:
        if tag.is_private:
            return self.private
        rule = self._exact.get(int(tag))
        if rule is not None:
            return rule
        for value, mask, masked in self._masked:
            if int(tag) & mask == value:
                return masked
        return None


@functools.cache
def basic_profile() -> Profile:
    data = json.loads(TABLE_FILE.read_text(encoding="utf-8"))
    rules = [Rule(r["tag"].lower() if r["tag"] != "PRIVATE" else r["tag"], r["name"], r["basic"], r["options"],
                  r["retired"]) for r in data["rules"]]
    return Profile(rules, data["source"]["edition"])
