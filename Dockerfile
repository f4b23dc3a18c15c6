# syntax=docker/dockerfile:1.7
# The training image: `plateau-lstm` as ENTRYPOINT; every Airflow task is one call of it.
#
# Base: the official slim Python image at the interpreter requirements.lock was compiled for
# (3.11), not the TensorFlow GPU image: that one brings its own Python and its own TensorFlow
# dependency set, so the lock's exact versions could not be installed as they are. CUDA and cuDNN
# come as NVIDIA's wheels through `tensorflow[and-cuda]`, TensorFlow's own way to install for
# GPUs on Linux, pinned in requirements-cuda.lock; the node needs only the NVIDIA driver.
# Every other package is the exact version in requirements.lock, the file `make install` uses.
FROM python:3.11.14-slim-bookworm AS python-base

FROM python-base AS build
# uv: the same installer, at the same version, as the Makefile.
ARG UV_VERSION=0.13.8
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m pip install --no-cache-dir "uv==${UV_VERSION}" \
 && python -m venv /opt/venv
WORKDIR /src
COPY requirements.lock requirements-cuda.lock pyproject.toml README.md ./
COPY training_image ./training_image
# The project's train extra and TensorFlow's CUDA wheels, held to the two lock files: nothing is
# resolved afresh. Bytecode is compiled now because the root filesystem is read-only at run time.
RUN uv pip install --python /opt/venv/bin/python --no-cache --compile-bytecode \
      --constraint requirements.lock --constraint requirements-cuda.lock \
      ".[train]" "tensorflow[and-cuda]" \
 && /opt/venv/bin/plateau-lstm --help >/dev/null

FROM python-base
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="plateau-lstm" \
      org.opencontainers.image.description="Nightly residual LSTM retraining that breaks out of loss plateaus" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"
# A fixed, non-root UID/GID that the pod template's securityContext names too (runAsUser 10001).
RUN groupadd --system --gid 10001 plateau \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin plateau
COPY --from=build /opt/venv /opt/venv
# Read-only root filesystem: everything that wants to write goes to /tmp (an emptyDir in the pod,
# a tmpfs with `docker run --read-only --tmpfs /tmp`); artifacts go to the artifact store.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    MPLCONFIGDIR=/tmp/matplotlib \
    KERAS_HOME=/tmp/keras \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2
USER 10001:10001
WORKDIR /tmp
# A batch command, not a service: there is nothing to health-check between steps.
HEALTHCHECK NONE
ENTRYPOINT ["plateau-lstm"]
CMD ["--help"]
