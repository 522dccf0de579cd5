#!/usr/bin/env bash
# Installs the Python test providers, django-oauth-toolkit (tests/providers/dot) and
# django-oidc-provider (tests/providers/dop), from PyPI into one virtual environment at
# tests/providers/.venv (git-ignored), with the versions pinned in requirements.txt (both run on
# the same Django). Reused while requirements.txt is unchanged; rebuilt when it changes. pip
# keeps its download cache (~/.cache/pip), so a rebuild is quick.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
versions() {
  "$VENV/bin/python" -c 'from importlib.metadata import version as v; print("django-oauth-toolkit", v("django-oauth-toolkit"), "and django-oidc-provider", v("django-oidc-provider"), "on Django", v("Django"))'
}
if [ -x "$VENV/bin/python" ] && cmp -s requirements.txt "$VENV/requirements.installed"; then
  echo "$(versions) (reused)"
  exit 0
fi
command -v python3 >/dev/null || { echo "python3 is required for the Python test providers" >&2; exit 1; }
rm -rf "$VENV"
if ! python3 -m venv "$VENV" 2>/dev/null; then
  # Debian splits venv (and its ensurepip) into python3-venv.
  rm -rf "$VENV"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  python3 -m venv "$VENV"
fi
if ! timeout 300 "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-input \
    --timeout 30 --retries 2 --only-binary=:all: --no-deps -r requirements.txt; then
  rm -rf "$VENV"
  echo "could not install the Python test providers from PyPI (offline, or PyPI unreachable?):" \
    "the tests in tests/api/dot.rs and tests/api/dop.rs need them" >&2
  exit 1
fi
cp requirements.txt "$VENV/requirements.installed"
echo "$(versions) (installed)"
