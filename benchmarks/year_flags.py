"""The year benchmark's `fmnist run` flags, in a module that loads no TensorFlow.

`year_benchmark.py` runs its days with them, `window_experiment.py` reads its model and gates
from them, and `year_replay.sh` prints them here (`python benchmarks/year_flags.py bounded
10000`) so that a replayed day runs exactly what the benchmark's days ran, without a copy of
the flags that could drift and without TensorFlow's import inside the timed command.
"""

from __future__ import annotations

import sys

# The model and gates of a small daily loop: a small CNN, warm-started; gates sized for 1,000-image spans.
RUN_FLAGS = [
    "--beam-direct-mode", "in_memory", "--conv-filters", "16", "32", "--dense-units", "64",
    "--batch-size", "128", "--epochs", "6", "--warm-start-epochs", "2", "--accuracy-floor", "0.5",
    "--max-accuracy-drop", "0.02", "--max-class-drop", "0.1",
    "--drift-jsd-threshold", "0.1", "--label-linf-threshold", "0.1",
]  # fmt: skip
BOUNDED, UNBOUNDED = "bounded", "unbounded"
WINDOW_IMAGES = 10_000  # the bounded variant's window unless `--window-images` says otherwise
# The bounded variant spends on epochs what its window saves: a 10,000-image window trained
# two warm-start epochs a day ended 1.4 points below every span, four 0.55 (docs/benchmarks.md).
BOUNDED_WARM_START_EPOCHS = 6


def variant_flags(name: str, window_images: int = WINDOW_IMAGES) -> list[str]:
    """A variant's own flags: the default retention with its seven days kept as seven runs, a
    bounded window and more warm-start epochs; or no retention, every span in the window and
    RUN_FLAGS' two epochs (the loop before issue #22)."""
    if name == BOUNDED:
        return [
            "--keep-runs", "7", "--keep-days", "0", "--window-images", str(window_images),
            "--warm-start-epochs", str(BOUNDED_WARM_START_EPOCHS),
        ]  # fmt: skip
    if name == UNBOUNDED:
        return ["--no-apply-retention", "--window-images", "0"]
    raise ValueError(f"no variant {name!r}: {BOUNDED} or {UNBOUNDED}")


if __name__ == "__main__":  # the whole command line of one variant's day, one shell word per line
    name, *window = sys.argv[1:]
    print("\n".join([*RUN_FLAGS, *variant_flags(name, *map(int, window))]))
