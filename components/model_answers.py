"""A SavedModel's answers on labelled Examples: what the label gate and the Evaluator's paired gates count.

Both gates need the same thing per example, the label and the model's answer
(the argmax of its `serving_default` probabilities, as TFMA's accuracy and the
confusion matrix count it), so that two models read on the same files give
answers on the same images, in the same order: the pairing the Evaluator's
change gates rest on (`components/gold_comparison.py`).
"""

import numpy as np
import tensorflow as tf

from core.errors import PipelineError
from core.examples import compression_of
from core.vocabulary import EXAMPLES_INPUT, LABEL_KEY, PROBABILITIES_OUTPUT, SERVING_SIGNATURE

BATCH = 1024


def labels_and_answers(model_dir: str, files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The labels of the examples in `files` and the model's answer to each, in file order."""
    predict = tf.saved_model.load(model_dir).signatures[SERVING_SIGNATURE]
    spec = {LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
    labels, answers = [], []
    for file in files:
        for batch in tf.data.TFRecordDataset(file, compression_of(file)).batch(BATCH):
            labels.append(tf.io.parse_example(batch, spec)[LABEL_KEY].numpy())
            answers.append(predict(**{EXAMPLES_INPUT: batch})[PROBABILITIES_OUTPUT].numpy().argmax(axis=1))
    if not labels:
        raise PipelineError(f"{', '.join(files) or 'no files'}: no examples to answer")
    return np.concatenate(labels), np.concatenate(answers)
