"""The release side: what the pipeline and the command line write for a TF Serving server to read.

The exported model's TF Serving extras (`export.py`: the Classify method mark;
`warmup.py`: the warmup requests) and the staged rollout (`rollout.py`: which
version is `stable`, which is `canary`, published in `models.config`), its
audit trail (`history.py`) and acting on a canary verdict. The
server (`serving/`) reads these files in TF Serving's formats and imports
nothing from here; this package uses the server's readers and label names.

Importing this package imports `core` first (it pins Keras before TensorFlow loads).
"""

import core  # noqa: F401
