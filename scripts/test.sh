#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the suite needs on a fresh machine, then runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive for real: the search window in Chromium (through Playwright), the
# global hotkey on a private X server (Xvfb) with keys typed by xdotool.
DEB_PACKAGES=(chromium xvfb xdotool)
if [ "${#DEB_PACKAGES[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=()
    for p in "${DEB_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

# llama-cpp-python is compiled from source by pip (about 5 minutes on 2 cores, cached afterwards).
python3 -m pip install -q --disable-pip-version-check -e ".[test]"
# The optional extras must install together with the window's Gradio (nothing is installed here).
python3 -m pip install -q --disable-pip-version-check --dry-run -e ".[test,rerank-gpu,bench]"
python3 -m ruff check launcher tests scripts bench
python3 -m mypy launcher  # the type checker STYLE.md asks CI to run (pyproject's [tool.mypy])
python3 -m pytest -q "$@"
