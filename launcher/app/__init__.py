"""Stage 9, the resident process: service, HTTP API, window, run file, client, desktop, hotkey."""
