"""Imported by the grading pool's forkserver: every worker then forks with math-verify loaded and warmed up.

The first parse builds antlr's parser tables and imports most of sympy (about a second); doing it once here
instead of in each worker keeps worker start-up, replacements included, to milliseconds.
"""

from nemo_recipes.grading.compare import compare_answers

compare_answers("$\\frac{1}{2}$", "0.5")
