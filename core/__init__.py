"""The shared core: vocabulary, typed configuration, data codecs and image features; no TFX.

Every other package imports from here, and this package imports none of them.
Importing it pins Keras to `tf_keras` before TensorFlow can load: TFT 1.16 and
TFMA 0.47 are built on it, TensorFlow 2.16 would otherwise pick Keras 3, and
the mode a process gets would depend on import order. This is the only Python
code that sets it (the pipeline image's `Dockerfile` sets it in the environment
too); every package's `__init__` imports `core` first.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
