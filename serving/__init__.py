"""Everything that speaks TensorFlow Serving's protocol: server, version manager, client, request logs.

Importing this package imports `core` first (it pins Keras before TensorFlow loads).
"""

import core  # noqa: F401
