"""Names and constants every step shares: raw features, transformed features, classes.

Kept free of TensorFlow so that data preparation, the pipeline wiring and the
tests can use it cheaply. One place, one spelling.
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
