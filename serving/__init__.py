"""Everything that speaks TensorFlow Serving's protocol: server, version manager, client, request logs.

What the pipeline writes for a server to read (exports, warmup requests, the
staged rollout's labels) is the release side, `release/`, which imports this
package, never the other way round.

Importing this package imports `core` first (it pins Keras before TensorFlow loads).
"""

import core  # noqa: F401
