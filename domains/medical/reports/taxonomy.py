"""The kinds of report error Loupe injects and checks, and the vocabulary both use."""

from __future__ import annotations

import re

KINDS = ("laterality", "negation", "substitution", "omission", "insertion", "number_unit", "severity", "location",
         "sex_anatomy")
RULE_KINDS = ("laterality", "negation", "number_unit", "sex_anatomy")  # what the rule checker can see

# Findings a chest report names; ACUTE ones contradict an impression that says nothing acute is seen.
FINDINGS = ("pleural effusion", "effusion", "pneumothorax", "consolidation", "atelectasis", "edema", "cardiomegaly",
            "nodule", "mass", "opacity", "opacities", "infiltrate", "granuloma", "pneumonia", "fracture",
            "airspace disease", "scarring", "emphysema", "hyperinflation", "adenopathy", "lymphadenopathy", "fibrosis",
            "dislocation", "lesion")
ACUTE = ("pleural effusion", "effusion", "pneumothorax", "consolidation", "edema", "infiltrate", "pneumonia",
         "airspace disease", "mass")
SUBSTITUTES = {"effusion": "pneumothorax", "pneumothorax": "effusion", "consolidation": "atelectasis",
               "atelectasis": "consolidation", "edema": "emphysema", "nodule": "mass", "granuloma": "nodule",
               "opacity": "mass", "cardiomegaly": "pneumothorax", "pneumonia": "edema", "fracture": "nodule"}
SIDES = {"left": "right", "right": "left"}
SEVERITY = {"mild": "severe", "minimal": "marked", "small": "large", "large": "small", "severe": "mild",
            "moderate": "minimal", "marked": "minimal", "trace": "large"}
LOCATION = {"upper": "lower", "lower": "upper", "apical": "basilar", "basilar": "apical", "apex": "base",
            "base": "apex", "anterior": "posterior", "posterior": "anterior", "middle lobe": "upper lobe"}
FEMALE_ONLY = ("uterus", "uterine", "ovary", "ovarian", "cervix", "fallopian")
MALE_ONLY = ("prostate", "prostatic", "testis", "testicular", "scrotum", "scrotal", "seminal")
INSERTIONS = ("There is a moderate left pleural effusion.", "A small right apical pneumothorax is present.",
              "There is a 2 cm mass in the right upper lobe.", "Dense consolidation is seen in the left lower lobe.")
SEX_INSERTIONS = {"F": "Surgical clips are seen in the prostate bed.", "M": "Calcified uterine fibroid is partly seen."}

MEASUREMENT = re.compile(r"\b(\d+(?:\.\d+)?)\s*(mm|cm)\b", re.IGNORECASE)
NEGATION_CUES = ("no", "without", "negative for", "free of", "resolved", "absence of", "not")


def words(terms: tuple[str, ...] | dict) -> re.Pattern:
    """A whole-word, case-insensitive pattern for any of ``terms`` (longest first)."""
    return re.compile(r"\b(" + "|".join(sorted(map(re.escape, terms), key=len, reverse=True)) + r")\b", re.IGNORECASE)
