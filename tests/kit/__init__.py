"""The parts of the test kit that stand alone; tests import them through tests/support.py."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
