"""SFT backends: NeMo-Aligner (the faithful GPU path) and a plain-PyTorch reference on the same packed data."""
