#!/usr/bin/env bash
# What a device call sends: the checkout's files (tracked and untracked-not-ignored) plus `carry`, 64 MiB in all.
# Tracked files a call does not need (weights, campaign checkpoints, docs/benchmarks) can stay behind:
#   bash scripts/travel.sh hide models/mcquic/weights/mcquic.safetensors docs/benchmarks   # skip-worktree + move to .hidden/
#   bash scripts/travel.sh size .whl .data/images                                          # tree + these carry paths, MiB
#   bash scripts/travel.sh restore                                                         # everything back (before tests/commits)
# .hidden/ is ignored, so hidden files neither travel nor show in `git status`; never run the tests while
# files are hidden.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
case ${1:-} in
  hide)
    shift
    for p in "$@"; do
      [ -e "$p" ] || { echo "travel.sh: no $p"; exit 1; }
      git ls-files -z -- "$p" | xargs -0 -r git update-index --skip-worktree
      mkdir -p ".hidden/$(dirname "$p")" && mv "$p" ".hidden/$p"
      echo "$p" >> .hidden/list
    done ;;
  restore)
    [ -f .hidden/list ] || { echo "travel.sh: nothing hidden"; exit 0; }
    while read -r p; do
      mkdir -p "$(dirname "$p")" && mv ".hidden/$p" "$p"
      git ls-files -z -- "$p" | xargs -0 -r git update-index --no-skip-worktree
    done < .hidden/list
    rm -rf .hidden ;;
  size)
    shift
    # files present (hidden ones are missing and skipped); stat of a directory carried counts its files
    tree=$( (git ls-files -co --exclude-standard -z | xargs -0 -r stat -c %s 2>/dev/null || true) | awk '{s += $1} END {print s + 0}')
    extra=$( (for c in "$@"; do find "$c" -type f -print0; done | xargs -0 -r stat -c %s || true) | awk '{s += $1} END {print s + 0}')
    awk -v t="$tree" -v e="$extra" 'BEGIN {printf "tree %.1f MiB + carry %.1f MiB = %.1f MiB (limit 64)\n", t/2^20, e/2^20, (t+e)/2^20; exit (t+e > 64*2^20)}' ;;
  *) echo "usage: travel.sh hide PATH... | restore | size [CARRY...]"; exit 2 ;;
esac
