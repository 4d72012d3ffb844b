"""`fmnist`, the command line: one module per group of subcommands, exit codes from `core.errors`.

Importing this package imports `core` first (it pins Keras before TensorFlow loads).
"""

import core  # noqa: F401
