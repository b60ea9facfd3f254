"""Makes the checkout importable under plain `pytest` (the package is not installed in the venv)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
