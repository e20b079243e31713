"""Command line: compose the Hydra config and run, plan or print it.

    python -m nemo_recipes [experiment=NAME] [stages=[a,b]] [dry_run=true] [key=value ...]
    python -m nemo_recipes --cfg [overrides]       # print the composed config
    python -m nemo_recipes --help

We compose with Hydra's compose API instead of @hydra.main: same override grammar, but no output folders,
no logging takeover and no change of working directory, and `--help` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from nemo_recipes.config import compose_config, config_options
from nemo_recipes.errors import RequirementsNotMet, UserError

USAGE = """\
usage: python -m nemo_recipes [experiment=NAME] [stages=[a,b]] [dry_run=true] [key=value ...]
       python -m nemo_recipes --cfg [overrides]     print the composed config and exit

Runs the stages of one experiment into runs/<experiment>/, skipping stages that are complete and resuming any
that were interrupted. Every config key can be overridden with Hydra syntax (key=value, +new_key=value).

config groups (choose with group=option):
{groups}

examples:
  python -m nemo_recipes                                       the toy pipeline on CPU (experiment=demo)
  python -m nemo_recipes experiment=main dry_run=true          plan the paper's main run
  python -m nemo_recipes experiment=demo stages=[sample_base] eval_sampling.n=16
"""


def print_refusal(error: RequirementsNotMet) -> None:
    """Why a run cannot start here, one line per unmet requirement, and where it can."""
    lines = [f"cannot start: {problem}" for problem in error.problems]
    if any("GPUs" in problem for problem in error.problems):
        lines.append("on a GPU node, build our image once with `make docker-build` and run the same make target "
                     "inside it, e.g. `make docker-run TARGET=reproduce-main ARGS=...` (README, 'On a GPU node'); "
                     "`make demo` runs the toy pipeline on this CPU.")
    print("\n".join(lines), file=sys.stderr)


def exit_status(command: Callable[[], int | None]) -> int:
    """Run a command line's work: what the user can fix is one sentence on stderr and an exit status, never a
    traceback (2: bad input; 3: this machine cannot run it; 130: interrupted, rerun to resume)."""
    try:
        return command() or 0
    except RequirementsNotMet as error:
        print_refusal(error)
        return error.exit_code
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    except OSError as error:  # a full disk, a folder that is a file: the machine's word, and what is kept
        print(f"error: {error}; what was computed is kept, run the same command again once that is fixed.",
              file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help") for arg in argv):
        groups = "\n".join(f"  {name:<12} {', '.join(opts)}" for name, opts in config_options().items())
        print(USAGE.format(groups=groups))
        return 0
    return exit_status(lambda: _run(argv))


def _run(argv: list[str]) -> int | None:
    print_config = "--cfg" in argv
    overrides = [arg for arg in argv if arg != "--cfg"]
    cfg = compose_config(overrides)
    if print_config:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(cfg, resolve=False))
        return
    from nemo_recipes.launching import run_experiment

    return run_experiment(cfg, overrides)


if __name__ == "__main__":
    sys.exit(main())
