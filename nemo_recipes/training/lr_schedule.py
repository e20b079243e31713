"""NeMo's CosineAnnealing learning rate (nemo/core/optim/lr_scheduler.py, v2.1.0) as a pure function of the step.

NeMo steps the scheduler once per optimizer step, so the update at 0-based step s uses lr_at(s); the horizon is
trainer.max_steps. Two shapes, chosen by constant_steps:

* constant_steps == 0: warmup lr * (s + 1) / (warmup + 1) for s <= warmup, then a cosine from lr to min_lr over
  steps warmup..max_steps;
* constant_steps > 0 (Megatron's variant): warmup lr * s / warmup (so step 0 trains at lr 0), a cosine over
  decay = max_steps - warmup - constant steps, then min_lr held.

Past max_steps both return min_lr.
"""

from __future__ import annotations

import math

from nemo_recipes.errors import UserError


def check_schedule(*, lr: float, min_lr: float, warmup_steps: int, constant_steps: int, max_steps: int) -> None:
    """Refuse, in one sentence, the settings NeMo would reject with an exception deep inside training."""
    if min_lr > lr:
        raise UserError(f"min_lr {min_lr} is above lr {lr}; NeMo's CosineAnnealing refuses that.")
    if constant_steps > 0 and not lr > min_lr:
        raise UserError(
            f"constant_steps {constant_steps} > 0 needs lr > min_lr (NeMo asserts it), got {lr} and {min_lr}."
        )
    if warmup_steps < 0 or constant_steps < 0 or warmup_steps + constant_steps > max_steps:
        raise UserError(
            f"warmup_steps {warmup_steps} + constant_steps {constant_steps} must be non-negative and at most "
            f"max_steps {max_steps}."
        )
    if constant_steps > 0 and warmup_steps + constant_steps == max_steps:
        # Megatron's variant divides by the decay length, which would be zero.
        raise UserError(f"warmup_steps + constant_steps leaves no decay step before max_steps {max_steps}.")


def nemo_cosine_annealing_lr(
    step: int, *, lr: float, min_lr: float, max_steps: int, warmup_steps: int = 0, constant_steps: int = 0
) -> float:
    """The learning rate NeMo's CosineAnnealing gives the update at 0-based optimizer step `step`."""
    if constant_steps > 0:
        return _megatron_warmup_cosine_hold(step, lr, min_lr, warmup_steps, max_steps - warmup_steps - constant_steps)
    if warmup_steps > 0 and step <= warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    if step > max_steps:
        return min_lr
    progress = (step - warmup_steps) / (max_steps - warmup_steps)
    return (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress)) + min_lr


def _megatron_warmup_cosine_hold(step: int, lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    if warmup_steps > 0 and step <= warmup_steps:
        return lr * step / warmup_steps
    if step > warmup_steps + decay_steps:
        return min_lr
    progress = (step - warmup_steps) / decay_steps
    return min_lr + 0.5 * (math.cos(math.pi * progress) + 1.0) * (lr - min_lr)
