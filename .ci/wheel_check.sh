#!/usr/bin/env bash
# The pip route: build the wheel, install it into a fresh virtual environment (pinned stack, no checkout on
# the path), and from a folder outside the checkout load the bundled models offline and run a short job.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$ROOT/.venv/bin/python" -m pip wheel "$ROOT" --no-deps --quiet -w "$WORK/dist"
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet -r "$ROOT/requirements.txt"
"$WORK/venv/bin/python" -m pip install --quiet --no-deps "$WORK"/dist/*.whl
cd "$WORK"
export HF_HUB_OFFLINE=1
"$WORK/venv/bin/python" - <<'PY'
import app_helpers, pathlib, sys
from app_helpers.models import BUNDLED_MODELS
where = pathlib.Path(app_helpers.__file__).parent
assert "site-packages" in str(where), f"imported the checkout, not the wheel: {where}"
for name, path in BUNDLED_MODELS.items():
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file(), (name, path)
print(f"wheel: app_helpers from {where}; bundled models {sorted(BUNDLED_MODELS)}")
PY
"$WORK/venv/bin/python" -m app_helpers info --model auto
"$WORK/venv/bin/python" -m app_helpers info --model app-toy
"$WORK/venv/bin/python" -m app_helpers run --model auto --task ioi --n 20 --eval-n 20 --quiet --out "$WORK/out"
test -s "$WORK/out/comparison.json"
echo "wheel check: passed"
