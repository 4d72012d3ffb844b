"""The TFX pipeline: wiring, runners, ML Metadata access, the run report and lineage.

Importing this package imports `core` first (it pins Keras before TensorFlow loads).
"""

import core  # noqa: F401
