"""Everything that speaks TensorFlow Serving's protocol (server, client, request logs).

Importing this package pins Keras to `tf_keras` before TensorFlow is imported
(see `components/__init__.py` for why).
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow's C++ INFO/WARNING lines (CUDA probing on a CPU machine) drown the progress output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
