"""python -m nemo_recipes.traces: see nemo_recipes.traces.cli."""

import sys

from nemo_recipes.traces.cli import main

if __name__ == "__main__":
    sys.exit(main())
