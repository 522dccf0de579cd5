#!/usr/bin/env bash
# Installs the second test provider, django-oauth-toolkit, from PyPI into a virtual environment
# at tests/providers/dot/.venv (git-ignored), with the versions pinned in requirements.txt.
# Reused while requirements.txt is unchanged; rebuilt when it changes. pip keeps its download
# cache (~/.cache/pip), so a rebuild is quick.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
if [ -x "$VENV/bin/python" ] && cmp -s requirements.txt "$VENV/requirements.installed"; then
  echo "django-oauth-toolkit: $("$VENV/bin/python" -c 'import oauth2_provider; print(oauth2_provider.__version__)') (reused)"
  exit 0
fi
command -v python3 >/dev/null || { echo "python3 is required for the django-oauth-toolkit test provider" >&2; exit 1; }
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
  echo "could not install django-oauth-toolkit from PyPI (offline, or PyPI unreachable?):" \
    "the tests in tests/api/dot.rs need it" >&2
  exit 1
fi
cp requirements.txt "$VENV/requirements.installed"
echo "django-oauth-toolkit: $("$VENV/bin/python" -c 'import oauth2_provider; print(oauth2_provider.__version__)') (installed)"
