#!/usr/bin/env bash
# Until burrow's first release, the schema is one initial migration, generated from the models.
# Run this after changing a model; it rewrites migrations/versions/0001_initial.py.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rm -f migrations/versions/0001_initial.py
BURROW_DATABASE_URL="sqlite+aiosqlite:///$tmp/gen.db" .venv/bin/alembic revision --autogenerate \
  --rev-id 0001 -m initial >/dev/null
mv migrations/versions/0001_initial.py "$tmp/m.py"
sed -e 's/^Create Date: .*/Create Date: (generated from the models)/' "$tmp/m.py" > migrations/versions/0001_initial.py
.venv/bin/ruff format -q migrations/versions/0001_initial.py
.venv/bin/ruff check -q --fix migrations/versions/0001_initial.py || true
echo "migrations/versions/0001_initial.py regenerated"
