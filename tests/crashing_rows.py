"""A row reader whose reads kill the process, as a segfault in an image decoder would.

Its own light module: Grain's spawned worker imports it to unpickle the reader, and
importing a test module would cost the worker seconds (JAX, TFDS)."""

import os
import signal

from ghostnet_jax.data.rows import FolderRows


class CrashOnRead(FolderRows):
    def read(self, row):
        os.kill(os.getpid(), signal.SIGKILL)
