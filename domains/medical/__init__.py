"""The medical domain: DICOM studies read and de-identified before storage, and radiology reports."""
