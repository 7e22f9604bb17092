#!/usr/bin/env bash
# Installs pytest-pgswarm and its pinned test dependencies into a virtualenv and runs its test suite
# (real PostgreSQL servers it starts itself; the end-to-end tests use target/debug/pgswarm or
# PGSWARM_BIN). Exits with pytest's status and prints pytest's closing summary line last.
#
#   bash python/pytest-pgswarm/ci.sh              # a fresh venv in a temporary directory
#   PGSWARM_PY_VENV=~/.venvs/pgswarm bash ...     # create once, then reuse that venv
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"

if ! command -v "$python" >/dev/null 2>&1; then
  echo "pytest-pgswarm: $python not found (apt-get install python3 python3-venv)" >&2
  exit 1
fi

work="$(mktemp -d)"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
venv="${PGSWARM_PY_VENV:-$work/venv}"

make_venv() { "$python" -m venv "$venv" >"$work/venv.log" 2>&1; }
if [ ! -x "$venv/bin/python" ]; then
  if ! make_venv; then
    # Debian/Ubuntu's python3 ships venv/ensurepip separately.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "== installing python3-venv (python3 -m venv failed)"
      export DEBIAN_FRONTEND=noninteractive
      ver="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
      apt-get update -qq && { apt-get install -y -qq "python${ver}-venv" >/dev/null 2>&1 ||
        apt-get install -y -qq python3-venv >/dev/null; }
      rm -rf "$venv"
    fi
    if ! make_venv; then
      cat "$work/venv.log" >&2
      echo "pytest-pgswarm: '$python -m venv' does not work: apt-get install python3-venv" >&2
      exit 1
    fi
  fi
fi

# Built from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
src="$work/pytest-pgswarm"
mkdir -p "$src"
cp -R "$here/pyproject.toml" "$here/README.md" "$here/src" "$src/"
rm -rf "$src/src/"*.egg-info

echo "== pip install pytest-pgswarm and requirements-test.txt into $venv"
if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    -r "$here/requirements-test.txt" "$src" >"$work/pip.log" 2>&1; then
  cat "$work/pip.log" >&2
  echo "pytest-pgswarm: pip install failed" >&2
  exit 1
fi
# Reinstall the plugin itself every time: a reused venv must test this checkout, not an old build.
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall \
  "$src" >>"$work/pip.log" 2>&1 || { cat "$work/pip.log" >&2; exit 1; }

echo "== pytest (python/pytest-pgswarm/tests)"
status=0
# From the package dir, so the rootdir and ini are the package's; the installed plugin is tested
# (src/ is not on sys.path).
(cd "$here" && PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -m pytest tests -p no:cacheprovider -rfE) 2>&1 |
  tee "$work/pytest.log"
status=${PIPESTATUS[0]}
summary="$(grep -E '^=+ .*(passed|failed|error|no tests ran).* in [0-9.]+s' "$work/pytest.log" | tail -n1)"
echo "pytest-pgswarm: ${summary:-pytest printed no summary line (exit $status)}"
exit "$status"
