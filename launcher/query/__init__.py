"""Stages 7-8, answer a query: dates, retrieve and fuse, rerank; the session owns model and store."""
