"""Trace structure: lengths, truncation, boxed answers, reflection and verification markers, and the "reasoning
mode" verdict (the paper's claim that 7B and 14B bases fail to enter it). `python -m nemo_recipes.traces FILE`
runs it on any generations file."""
