"""OCR and layout: engines that read page images into lines with boxes, reading order, PDFs."""
