import sys

from .cli import main

if __name__ == "__main__":   # not when multiprocessing's spawn imports this module as the main one (cluster.py)
    sys.exit(main())
