# syntax=docker/dockerfile:1.7
# The training image: `plateau-lstm` as ENTRYPOINT; every Airflow task is one call of it.
# The base is the official TensorFlow GPU image at the project's TensorFlow version (CUDA and
# cuDNN included); Python packages come from the same requirements.lock as `make install`.
ARG TF_IMAGE=tensorflow/tensorflow:2.21.0-gpu

FROM ${TF_IMAGE} AS build
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY training_image ./training_image
# TensorFlow is already in the base image at the locked version; the lock pins everything else.
RUN python3 -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && grep -vE '^(apache-airflow|tensorflow==)' requirements.lock > /tmp/image.lock \
 && python3 -m pip install --no-cache-dir --prefix /install --constraint /tmp/image.lock \
      "$(ls /wheels/plateau_lstm-*.whl)[train]"

FROM ${TF_IMAGE}
LABEL org.opencontainers.image.title="plateau-lstm" \
      org.opencontainers.image.description="Residual LSTM training with plateau-breaking callbacks" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /install /usr/local
RUN groupadd --gid 10001 plateau && useradd --uid 10001 --gid 10001 --no-create-home plateau
# Works with a read-only root filesystem: scratch space is /tmp (an emptyDir in the pod).
ENV HOME=/tmp MPLCONFIGDIR=/tmp/matplotlib TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["plateau-lstm"]
CMD ["--help"]
