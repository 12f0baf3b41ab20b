"""Layer 0, core: the errors, records, settings and path/file helpers every stage shares."""
