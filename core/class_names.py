"""Class names of the published datasets, in label order (0-based label = index)."""

# DVS128 Gesture class ids 1-11 in order, as in the dataset's README.
DVS_GESTURE: tuple[str, ...] = (
    "hand clap",
    "right hand wave",
    "left hand wave",
    "right arm clockwise",
    "right arm counter clockwise",
    "left arm clockwise",
    "left arm counter clockwise",
    "arm roll",
    "air drums",
    "air guitar",
    "other gestures",
)

# CIFAR10-DVS: also the names of its class folders.
CIFAR10: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
