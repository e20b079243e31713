"""The numeric settings every run reads, checked once when the config is composed: a value of the wrong kind or
range is one sentence naming its key, not a TypeError or ZeroDivisionError in whichever stage reads it first."""

from __future__ import annotations

# key: (kind, lowest allowed, highest allowed); kind "int" takes whole numbers only, "number" any real number.
_SAMPLING = {
    "n": ("int", 1, None), "chunk_size": ("int", 1, None), "batch_size": ("int", 1, None),
    "max_tokens": ("int", 1, None), "temperature": ("number", 0, None), "top_p": ("number", 0, 1),
    "top_k": ("int", -1, None), "seed": ("int", 0, None), "num_shards": ("int", 1, None),
    "expected_tokens": ("number", 0, None), "throughput_tokens_per_s": ("number", 1, None),
}
RANGES = {
    **{f"teacher_sampling.{key}": rule for key, rule in _SAMPLING.items()},
    **{f"eval_sampling.{key}": rule for key, rule in _SAMPLING.items()},
    "selection.num_examples": ("int", 1, None), "selection.target_tokens": ("number", 0, None),
    "grading.workers": ("int", 0, None), "grading.timeout_s": ("number", 0, None),
    "metrics.bootstrap": ("int", 0, None),
    "traces.reasoning_mode.min_share_with_markers": ("number", 0, 1),
    "traces.reasoning_mode.min_length_vs_base": ("number", 0, None),
    "traces.reasoning_mode.max_truncated": ("number", 0, 1),
    "sft.lr": ("number", 0, None), "sft.min_lr": ("number", 0, None), "sft.weight_decay": ("number", 0, None),
    "sft.warmup_steps": ("int", 0, None), "sft.constant_steps": ("int", 0, None),
    "sft.global_batch_size": ("int", 1, None), "sft.micro_batch_size": ("int", 1, None),
    "sft.max_steps": ("int", 1, None), "sft.max_epochs": ("int", 1, None), "sft.pack_size": ("int", 1, None),
    "sft.save_interval": ("int", 1, None), "sft.val_check_interval": ("int", 1, None), "sft.seed": ("int", 0, None),
    "cluster.nodes": ("int", 1, None), "cluster.gpus_per_node": ("int", 0, None),
    "cluster.assumed_mfu": ("number", 0.01, 1), "cluster.gpu_bf16_tflops": ("number", 1, None),
    "cluster.gpu_memory_gb": ("number", 1, None),
    **{f"{model}.{key}": ("int", 1, None) for model in ("teacher", "student")
       for key in ("parallel.tp", "parallel.pp", "parallel.cp", "generation_tp")},
}


def config_value_problem(cfg) -> str | None:
    """The first setting out of its kind or range, as one sentence; None when all are fine."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    for key, (kind, low, high) in RANGES.items():
        try:
            value = OmegaConf.select(cfg, key, default=None)
        except OmegaConfBaseException as error:  # e.g. ${oc.env:X} with X unset
            return f"{key} cannot be resolved: {str(error).splitlines()[0].rstrip('.')}."
        if value is None:
            continue
        if isinstance(value, str):  # an interpolation such as ${oc.env:NGPUS} resolves to text; readers cast it
            value = _number(value)
        whole = isinstance(value, int) and not isinstance(value, bool)
        number = whole or (isinstance(value, float) and not isinstance(value, bool))
        if not (whole if kind == "int" else number) or (low is not None and value < low) or (
                high is not None and value > high):
            what = "a whole number" if kind == "int" else "a number"
            bounds = f" from {low} to {high}" if high is not None else f" of at least {low}"
            return f"{key} is {value!r}; it must be {what}{bounds}."
    return None


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
