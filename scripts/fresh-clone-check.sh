#!/usr/bin/env bash
# A new user's first minutes: clone HEAD into a temporary directory with nothing beside it (none
# of the reference material developers keep next to the repo, no node_modules, no build), then
# run the README's two commands there, exactly as the README writes them (its first two ```bash
# blocks).
#
#   bash scripts/fresh-clone-check.sh          (KEEP=1 keeps the clone; its path is printed)
#
# Commits only: uncommitted changes are not in the clone. Each command's wall time is printed.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

mapfile -t commands < <(awk '/^```bash$/ { inside = 1; next } /^```$/ { if (inside) blocks++; inside = 0; next }
                             inside && blocks < 2 { print }' "$repo/README.md")
if [ "${#commands[@]}" -ne 2 ]; then
  echo "fresh-clone-check: expected the README to start with two one-line bash blocks, found: ${commands[*]:-none}" >&2
  exit 1
fi

parent="$(mktemp -d -t octo-fresh-XXXXXX)"
clone="$parent/octo-native"
if [ "${KEEP:-0}" = 1 ]; then echo "== keeping $clone"; else trap 'rm -rf "$parent"' EXIT; fi
git clone --quiet --no-local "$repo" "$clone"
cd "$clone"
echo "== fresh clone of $(git rev-parse --short HEAD) in $clone (beside it: $(ls -A "$parent" | tr '\n' ' '))"

for i in 0 1; do
  echo "== README command $((i + 1)): ${commands[$i]}"
  start=$SECONDS
  bash -euo pipefail -c "${commands[$i]}"
  echo "== README command $((i + 1)) passed in $((SECONDS - start)) s"
done
echo "== fresh-clone-check: both README commands passed"
