"""Importing TensorFlow without its start-up chatter on stderr.

TensorFlow's C++ side prints oneDNN and CUDA notices before absl logging is configured, so
TF_CPP_MIN_LOG_LEVEL cannot hold them back; a person reading a 02:00 failure log should see our
one-line error, not those. Python-level errors raised by the import still surface normally.
"""

from __future__ import annotations

import os
import sys


def import_tensorflow_quietly() -> list[str]:
    """Import TensorFlow and find its devices with fd 2 silenced; returns the GPU names."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf

            # Device discovery is where a CPU-only machine logs its failed cuInit.
            return [device.name for device in tf.config.list_physical_devices("GPU")]
    finally:
        os.dup2(saved, 2)
        os.close(saved)
