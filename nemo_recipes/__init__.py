"""nemo_recipes: reproduce arXiv 2507.09850 (long-CoT SFT of a base model on 20 reasoning traces) with NeMo-Aligner."""

__version__ = "0.1.0"
