"""Where each model role's weights are: a hub id or local folder, a toy model built on demand, or the SFT output."""

from __future__ import annotations

from pathlib import Path

from nemo_recipes.errors import UserError

ROLES = ("teacher", "base", "sft")


def model_config(cfg, role: str):
    """The conf/model entry behind a role: the teacher, or the student (base and sft share its architecture)."""
    return cfg.teacher if role == "teacher" else cfg.student


def sampling_key(role: str) -> str:
    """The config group a role is sampled with: the teacher's on the seed problems, the students' on the benchmark."""
    return "teacher_sampling" if role == "teacher" else "eval_sampling"


def sampling_config(cfg, role: str):
    """The sampling settings a role is sampled with (sampling_key)."""
    return cfg[sampling_key(role)]


def model_path(cfg, role: str, build: bool = True) -> str:
    """The path (or hub id) generation and training load for `role`; toy models are built here on first use.

    With build=False (planning), a toy model that is not built yet is named by where it will be.
    """
    if role not in ROLES:
        raise UserError(f"unknown model role '{role}'; use one of {', '.join(ROLES)}.")
    if role == "sft":
        return str(Path(cfg.run_dir) / "sft" / "model")
    model = model_config(cfg, role)
    key = "teacher" if role == "teacher" else "student"
    if model.source == "toy":
        if not build:
            return f"<toy {model.toy_role}, built on first use under {cfg.cache_dir}>"
        from nemo_recipes.toy.build import ensure_toy_models

        return str(ensure_toy_models(cfg.cache_dir)[model.toy_role])
    if not model.path:
        raise UserError(f"{key}.path is empty; set it to a hub id or a local Hugging Face folder.")
    if model.source == "local" and not Path(model.path).is_dir():
        raise UserError(f"{key}.path: {model.path} is not a folder.")
    return str(model.path)


def local_model_dir(cfg, role: str, download: bool = True) -> str:
    """A local folder for `role` (conversion and packing need files, not a hub id): hub models are fetched into the
    Hugging Face cache at their pinned revision. With download=False (planning) the folder is only named."""
    path = model_path(cfg, role, build=download)
    model = model_config(cfg, role)
    if role == "sft" or model.source != "hub" or Path(path).is_dir():
        return path
    if not download:  # where snapshot_download will put it, without importing the hub client
        from nemo_recipes.resources import hub_repo_dir

        return f"{hub_repo_dir(path)}/snapshots/<{model.revision or 'main'}>"
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id=path, revision=model.revision)


def model_name(cfg, role: str) -> str:
    name = model_config(cfg, role).name
    return f"{name} + SFT" if role == "sft" else name
