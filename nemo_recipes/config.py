"""The composed config: Hydra's compose API over conf/, with every error turned into one sentence.

    from nemo_recipes.config import compose_config
    cfg = compose_config(["experiment=main", "eval_sampling.n=16"])

Used by the command line, the reproduction targets, the replica workers and the Slurm jobs alike; it imports no
stage and no launcher, so anything may import it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from nemo_recipes.errors import UserError

CONF_DIR = Path(os.environ.get("NEMO_RECIPES_CONF", Path(__file__).resolve().parents[1] / "conf"))


def config_options() -> dict[str, list[str]]:
    """Each config group and its options, read from conf/ (no Hydra import: --help must stay instant)."""
    groups = {}
    for folder in sorted(p for p in CONF_DIR.iterdir() if p.is_dir()):
        groups[folder.name] = sorted(f.stem for f in folder.glob("*.yaml"))
    return groups


def compose_config(overrides: list[str]):
    """The composed config, with Hydra's multi-line composition errors turned into one sentence."""
    return compose_configs([overrides])[0]


def compose_configs(override_lists: list[list[str]]) -> list:
    """Several configs, composed in forked worker processes when there are several CPUs: Hydra re-reads every YAML
    file for each composition (~0.2 s), and a reproduction target's dry run composes up to seven runs in < 2 s."""
    workers = min(len(override_lists), os.cpu_count() or 1)
    if workers > 1 and hasattr(os, "fork"):
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers) as pool:
            outcomes = pool.map(_compose_one, override_lists)
    else:
        outcomes = [_compose_one(overrides) for overrides in override_lists]
    for _, error in outcomes:
        if error:
            raise UserError(error)
    return [cfg for cfg, _ in outcomes]


def _compose_one(overrides: list[str]) -> tuple:
    """(config, None) or (None, the one-sentence error)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from yaml import MarkedYAMLError

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as error:
        return None, _one_sentence(error, overrides)
    except MarkedYAMLError as error:  # a config file that is not YAML
        mark = error.problem_mark
        where = f"{mark.name}, line {mark.line + 1}" if mark else "a config file"
        return None, f"bad configuration file: {error.problem or error.context} ({where})."
    from nemo_recipes.config_checks import config_value_problem

    _listify(cfg)
    problem = _replaced_group(cfg) or config_value_problem(cfg)
    return (None, problem) if problem else (cfg, None)


# Keys that hold lists of names or folders. `force=sft` on the command line is the string "sft", and a stage
# name tested with `in` against a string matches by substring ("sft" in "sample_sft"): make it a one-item list.
_LIST_KEYS = ("stages", "force", "evaluate", "reuse_from")


def _listify(cfg) -> None:
    for key in _LIST_KEYS:
        if isinstance(cfg.get(key), str):
            cfg[key] = [cfg[key]]


# Config nodes filled from a group; `student=x` would replace the whole node with the string "x".
_GROUP_OF_NODE = {"teacher": "model@teacher", "student": "model@student",
                  "teacher_sampling": "sampling@teacher_sampling", "eval_sampling": "sampling@eval_sampling", "problems": "problems", "benchmark": "benchmark",
                  "selection": "selection", "sft": "sft", "cluster": "cluster"}


def _replaced_group(cfg) -> str | None:
    from omegaconf import DictConfig

    for node, group in _GROUP_OF_NODE.items():
        if not isinstance(cfg.get(node), DictConfig):
            options = config_options()[group.split("@")[0]]
            return (f"'{node}' is chosen from config group '{group.split('@')[0]}' with {group}=<option>, not set to "
                    f"'{cfg.get(node)}'; options: {', '.join(options)}.")
    return None


def _one_sentence(error: Exception, overrides: list[str]) -> str:
    message = str(error).strip()
    options = config_options()
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        group = key.split("@")[0]
        if group in options and value and value not in options[group]:
            return (f"unknown option '{value}' for config group '{group}' (override '{override}'); "
                    f"choose one of: {', '.join(options[group])}.")
    first_line = message.splitlines()[0] if message else type(error).__name__
    missing = re.match(r"Could not override '([^']+)'", first_line)
    if missing and "To append to your config use" in message:
        key = missing.group(1)
        return (f"bad configuration: there is no key '{key}' to override; check the spelling, or add it with "
                f"'+{key}=...'.")
    return f"bad configuration: {first_line}"
