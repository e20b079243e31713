"""python -m nemo_recipes.grading: see nemo_recipes.grading.cli."""

import sys

from nemo_recipes.grading.cli import main

if __name__ == "__main__":
    sys.exit(main())
