#!/bin/bash
# One more day of the year benchmark's bounded variant, from a saved copy of its workdir.
#
#   benchmarks/year_replay.sh SAVED WORKDIR CHECKOUT [WINDOW_IMAGES]
#
# SAVED is a copy (`cp -a`) of the variant's WORKDIR taken after some day, with the next
# day's span already written into its data directory. It is copied back to WORKDIR, the
# path it was made at (ML Metadata records absolute paths), and `fmnist run` runs with the
# year benchmark's flags for its bounded variant (benchmarks/year_flags.py, read before the
# timed run starts; window 10,000 images unless WINDOW_IMAGES) from CHECKOUT's code. Two
# saved days timed in turn with farm-bench (`--vs`) compare what the history costs on one
# host at one time; docs/benchmarks.md, "A year of data".
set -euo pipefail
saved=$1 workdir=$2 checkout=$3
mapfile -t flags < <(python3 "$checkout/benchmarks/year_flags.py" bounded ${4:+"$4"})
[ "${#flags[@]}" -gt 0 ] || { echo "year_replay.sh: no flags from $checkout/benchmarks/year_flags.py" >&2; exit 2; }
rm -rf "$workdir" && cp -a "$saved" "$workdir"
cd "$checkout"
PYTHONPATH="$checkout" "$checkout/.venv/bin/fmnist" run --workdir "$workdir" "${flags[@]}" \
  > "$(dirname "$workdir")/replay-$(date +%H%M%S).log" 2>&1
