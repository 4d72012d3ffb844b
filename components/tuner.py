"""TFX Tuner module: `tuner_fn` searches a small, stated space of training settings with KerasTuner.

Off by default (`TrainingConfig.tuner_trials = 0`): the default recipe was
chosen by measurement (README, "How good the model is"), and a search costs
`tuner_trials x tuner_epochs` epochs before the Trainer starts. When on, the
Tuner component runs between Transform and the Trainer on the same
transformed window, scores each trial on the window's `eval` split (never on
the gold test set), and hands the best values to the Trainer through TFX's
`best_hyperparameters` artifact; `run_fn` puts them over the configuration.

The search space (`SEARCH_SPACE`) holds the settings that moved accuracy most
in the recipe experiments: the learning rate, the width of the dense layer
and the dropout. Random search, seeded, `tuner_trials` trials.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import FnArgs
from tfx.components.tuner.component import TunerFnResult

from components.legacy_keras_tuner import keras_tuner
from components.model import build_model
from components.trainer import training_config_from, training_data
from core.vocabulary import MODEL_NAME

SEARCH_SPACE = {
    "learning_rate": [1e-3, 3e-3, 6e-3],
    "dense_units": [128, 256, 512],
    "dropout": [0.3, 0.4, 0.5],
}
OBJECTIVE = "val_accuracy"


def search_space() -> keras_tuner.HyperParameters:
    space = keras_tuner.HyperParameters()
    for name, values in SEARCH_SPACE.items():
        space.Choice(name, values)
    return space


def tuner_fn(fn_args: FnArgs) -> TunerFnResult:
    """TFX Tuner entry point: a seeded random search over `SEARCH_SPACE`, scored on the eval split."""
    config = training_config_from(fn_args.custom_config)
    tf.keras.utils.set_random_seed(config.seed)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    train, validation, steps_per_epoch = training_data(fn_args, config, tf_transform_output)

    def build(hyperparameters: keras_tuner.HyperParameters) -> tf.keras.Model:
        trial = dataclasses.replace(config, **hyperparameters.values)
        return build_model(trial, steps_per_epoch, epochs=config.tuner_epochs)

    tuner = keras_tuner.RandomSearch(
        build,
        objective=keras_tuner.Objective(OBJECTIVE, "max"),
        max_trials=config.tuner_trials,
        hyperparameters=search_space(),
        seed=config.seed,
        directory=fn_args.working_dir,
        project_name=MODEL_NAME,
    )
    fit_kwargs = {
        "x": train,
        "validation_data": validation,
        "epochs": config.tuner_epochs,
        "steps_per_epoch": steps_per_epoch,
        "verbose": 2,
    }
    return TunerFnResult(tuner=tuner, fit_kwargs=fit_kwargs)
