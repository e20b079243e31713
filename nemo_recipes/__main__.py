import sys

from nemo_recipes.cli import main

sys.exit(main())
