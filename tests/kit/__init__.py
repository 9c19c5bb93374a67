"""The parts of the test kit that stand alone; tests import them through tests/support.py."""

import os

# The repository: tests run the proxy from here.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
