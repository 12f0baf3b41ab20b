"""Stages 1-5, ingest: scan the roots, diff against the index, extract pieces, embed and store them."""
