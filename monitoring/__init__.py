"""Watching the served model's inputs: data-drift reports against its training data.

Importing this package pins Keras to `tf_keras` before TensorFlow is imported
(see `components/__init__.py` for why).
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
