"""Keep the index fresh: file events become changed paths (changes), the watcher re-ingests them."""
