"""Stage 6, the index on disk: segment formats, snapshot, writer, vector partition, keywords."""
