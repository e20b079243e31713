"""The toy world of `make demo`: a synthetic arithmetic task and tiny Qwen2 models the package trains itself."""
