"""Radiology reports: sections, an error taxonomy and injector, and checkers."""
