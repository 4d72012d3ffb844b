"""Where labelled data enters the project: `fmnist data prepare` and `fmnist data add` write TFRecords.

Importing this package imports `core` first (it pins Keras before TensorFlow loads).
"""

import core  # noqa: F401
