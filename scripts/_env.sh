# Shared by scripts/demo and scripts/test: make .venv and install Pomona into it (idempotent, fast the
# second time: it reinstalls only when pyproject.toml changed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "Pomona needs Python 3.11 or newer (found: $("$PY" --version 2>&1)). Set PYTHON=/path/to/python3.11." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv" >&2
  "$PY" -m venv .venv
fi
pomona_install() {  # $1: extras, e.g. "" or "[test]"
  local extras="$1" stamp=".venv/.stamp-install${1//[^a-z]/}"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || ! .venv/bin/python -c 'import pomona' 2>/dev/null; then
    echo "==> installing pomona${extras} into .venv" >&2
    .venv/bin/python -m pip install -q --upgrade pip >&2
    .venv/bin/python -m pip install -q -e ".${extras}" >&2
    touch "$stamp"
  fi
}
