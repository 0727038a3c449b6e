"""Data: download, raw formats, ingest into validated tables, text with entity spans, and every split."""
