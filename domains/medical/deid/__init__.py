"""De-identification of DICOM objects: PS3.15 Annex E, table-driven."""
