#!/usr/bin/env bash
# One check for humans and CI (`make lint`): ruff (lint and format) over the Python trees,
# mypy --strict over sfu/ (configured in pyproject.toml), and the browser client's modules
# (node --check on each, then the client's own protocol tests). Every step runs; the script
# fails if any of them failed, and says which.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY_TREES=(sfu tests bench scripts)
failed=()

step() {
  local name="$1"
  shift
  echo "== $name"
  if ! "$@"; then
    failed+=("$name")
  fi
}

js_syntax() {
  local ok=0
  for module in client/*.js; do
    # The client is plain ES modules without a package.json: parse each one as a module.
    node --input-type=module --check <"$module" || {
      echo "$module: does not parse"
      ok=1
    }
  done
  return $ok
}

step "ruff check" "$VENV/bin/ruff" check "${PY_TREES[@]}"
step "ruff format --check" "$VENV/bin/ruff" format --check "${PY_TREES[@]}"
step "mypy (strict, sfu/)" "$VENV/bin/mypy"
if command -v node >/dev/null 2>&1; then
  step "node --check client/*.js" js_syntax
  step "node --test client/tests" node --test --test-reporter=dot client/tests
else
  echo "== client/*.js: node is missing (scripts/install-system-deps.sh installs it)"
  failed+=("client/*.js (no node)")
fi

if [ ${#failed[@]} -ne 0 ]; then
  echo "lint failed:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "lint: all clean"
