#!/bin/bash
# One more day of the year benchmark's bounded variant, from a saved copy of its workdir.
#
#   benchmarks/year_replay.sh SAVED WORKDIR CHECKOUT
#
# SAVED is a copy (`cp -a`) of the variant's WORKDIR taken after some day, with the next
# day's span already written into its data directory. It is copied back to WORKDIR, the
# path it was made at (ML Metadata records absolute paths), and `fmnist run` runs with the
# year benchmark's flags (RUN_FLAGS and the bounded variant's, benchmarks/year_benchmark.py)
# from CHECKOUT's code. Two saved days timed in turn with farm-bench (`--vs`) compare what
# the history costs on one host at one time; docs/benchmarks.md, "A year of data".
set -euo pipefail
saved=$1 workdir=$2 checkout=$3
rm -rf "$workdir" && cp -a "$saved" "$workdir"
cd "$checkout"
PYTHONPATH="$checkout" "$checkout/.venv/bin/fmnist" run --workdir "$workdir" \
  --beam-direct-mode in_memory --conv-filters 16 32 --dense-units 64 --batch-size 128 --epochs 6 \
  --warm-start-epochs 2 --accuracy-floor 0.5 --max-accuracy-drop 0.02 --max-class-drop 0.1 \
  --drift-jsd-threshold 0.1 --label-linf-threshold 0.1 \
  --keep-runs 7 --keep-days 0 --window-images 10000 \
  > "$(dirname "$workdir")/replay-$(date +%H%M%S).log" 2>&1
