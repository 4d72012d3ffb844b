"""TFX module code (preprocessing, model, training) and the project's custom components.

Importing this package imports `core` first (it pins Keras before TensorFlow loads).
"""

import core  # noqa: F401
