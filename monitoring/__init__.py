"""Watching the served model's inputs: data-drift reports against its training data.

Importing this package imports `core` first (it pins Keras before TensorFlow loads).
"""

import core  # noqa: F401
