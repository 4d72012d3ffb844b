"""KerasTuner on the Keras this project trains with (tf_keras, `TF_USE_LEGACY_KERAS=1`).

keras-tuner 1.4.7 decides its Keras with a bare `import keras`, which is Keras 3
once TensorFlow 2.16 is installed, whatever `TF_USE_LEGACY_KERAS` says; it then
rejects every tf_keras model ("Expected the model-building function ... to
return a valid Keras Model instance", keras-team/keras-tuner#1039; the fix,
PR #1040, is not released). TFX imports KerasTuner as soon as `tfx.v1` loads,
so it cannot be imported differently; instead its Keras shim is switched to
its own Keras 2 path (`from tensorflow.keras import *`, tf_keras here), which
every KerasTuner module reads at call time, and the module whose callbacks
subclass that Keras is loaded again.
"""

import importlib

import keras_tuner
from keras_tuner.src.backend import config as _config
from keras_tuner.src.backend import keras as _keras_shim
from keras_tuner.src.engine import tuner_utils as _tuner_utils


def _use_tf_keras() -> None:
    if not _config.multi_backend():
        return
    _config._MULTI_BACKEND = False
    importlib.reload(_keras_shim)
    importlib.reload(_tuner_utils)  # its callbacks subclass the shim's Keras at import time


_use_tf_keras()

__all__ = ["keras_tuner"]
