"""Sub-commands of the ``facekit`` CLI; each module defines ``register(subparsers)``."""
