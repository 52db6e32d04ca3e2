"""Stand-in for modules/scripts.py (A1111 v1.10.1): basedir() and current_basedir, what an entry script reads."""
import os

current_basedir = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def basedir():
    return current_basedir
