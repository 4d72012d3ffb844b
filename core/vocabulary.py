"""Names and constants every layer shares: features, classes, signatures, the model, files on disk.

Kept free of TensorFlow so that the command line, data preparation and the
pipeline wiring can use it cheaply. One place, one spelling.
"""

IMAGE_KEY = "image"
LABEL_KEY = "label"
IMAGE_HEIGHT = 28
IMAGE_WIDTH = 28
PIXELS = IMAGE_HEIGHT * IMAGE_WIDTH
MAX_PIXEL = 255

# The transformed image the model consumes: pixels scaled to [0, 1].
TRANSFORMED_IMAGE_KEY = "image_xf"

# Zalando's label order (https://github.com/zalandoresearch/fashion-mnist#labels).
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)

# The served model: its default name and its signatures (contracts in components/signatures.py).
MODEL_NAME = "fashion_mnist"
SERVING_SIGNATURE = "serving_default"  # serialized tf.Example -> probabilities
IMAGES_SIGNATURE = "predict_images"  # uint8 [n, 28, 28] -> probabilities, class ids and names
CLASSIFY_SIGNATURE = "classify"  # TF Serving's Classify contract
CLASSIFY_METHOD = "tensorflow/serving/classify"
PREDICT_METHOD = "tensorflow/serving/predict"
REGRESS_METHOD = "tensorflow/serving/regress"
# Signature inputs and outputs.
EXAMPLES_INPUT = "examples"
IMAGES_INPUT = "images"
CLASSIFY_INPUT = "inputs"
PROBABILITIES_OUTPUT = "probabilities"
CLASS_IDS_OUTPUT = "class_ids"
CLASS_NAMES_OUTPUT = "class_names"
CLASSES_OUTPUT = "classes"
SCORES_OUTPUT = "scores"
REGRESS_OUTPUT = "outputs"

# Files: GZIP TFRecords of examples, and the manifest written beside them.
TFRECORD_SUFFIX = ".tfrecord.gz"
MANIFEST_NAME = "manifest.json"
# Under the pipeline root: the loop's verdicts on each span, and where the run's span is staged.
SPAN_LEDGER_NAME = "span_ledger.jsonl"
INTAKE_DIR_NAME = "intake"
DRIFT_REFERENCE_DIR = "drift_reference"  # the drift report's cached references
SAVED_MODEL_FILE = "saved_model.pb"
# Files an exported model version carries beside its graph (TF Serving ignores this directory).
ASSETS_EXTRA_DIR = "assets.extra"
ACCURACY_ESTIMATE_FILE = "accuracy_estimate.json"  # the label-free accuracy estimator fitted with the model
