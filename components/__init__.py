"""TFX module code and custom components for the Fashion-MNIST pipeline.

Importing this package pins Keras to the legacy `tf_keras` implementation
before TensorFlow is imported: TFT 1.16 and TFMA 0.47 are built on it, and the
mode a process gets otherwise depends on import order.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow's C++ INFO/WARNING lines (CUDA probing on a CPU machine) drown the progress output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
