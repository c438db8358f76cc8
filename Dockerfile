# syntax=docker/dockerfile:1
#
# The `mouthmap` binary (every role: ingest, preprocess, infer, decode,
# features, transcribe) with the ONNX Runtime library and the reference
# lip-reading model inside. The face model (YuNet) and any data are NOT in
# the image: mount them (see docs/deploy.md), e.g. at /models/yunet.
#
#   docker build -t mouthmap:cpu .
#   docker build -t mouthmap:cuda --build-arg RUNTIME=cuda .
#
# RUNTIME=cpu: Debian bookworm, onnxruntime (CPU) from its PyPI wheel.
# RUNTIME=cuda: an NVIDIA CUDA/cuDNN runtime base with onnxruntime-gpu from
# its PyPI wheel; run infer with --device cuda (no silent fallback to CPU).

ARG RUNTIME=cpu
ARG RUST_VERSION=1.95
# Keep in step with scripts/lib.sh.
ARG ORT_VERSION=1.31.1

# --- build: the release binary -------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      cmake pkg-config libssl-dev libzstd-dev \
      libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY contracts ./contracts
COPY onnx ./onnx
COPY bus ./bus
COPY ingest ./ingest
COPY preprocessor ./preprocessor
COPY inferencer ./inferencer
COPY decoder ./decoder
COPY feature-store ./feature-store
COPY embedded ./embedded
COPY benches ./benches
COPY models ./models
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin mouthmap \
 && cp target/release/mouthmap /usr/local/bin/mouthmap

# --- the ONNX Runtime library, from its PyPI wheel -------------------------
FROM python:3.11-slim-bookworm AS ort-cpu
ARG ORT_VERSION
RUN pip download -q --no-deps --only-binary=:all: -d /wheel "onnxruntime==${ORT_VERSION}" \
 && python -m zipfile -e /wheel/onnxruntime-*.whl /wheel/x \
 && mkdir /ort && cp -a /wheel/x/onnxruntime/capi/libonnxruntime*.so* /ort/

FROM python:3.11-slim-bookworm AS ort-cuda
ARG ORT_VERSION
RUN pip download -q --no-deps --only-binary=:all: -d /wheel "onnxruntime-gpu==${ORT_VERSION}" \
 && python -m zipfile -e /wheel/onnxruntime_gpu-*.whl /wheel/x \
 && mkdir /ort && cp -a /wheel/x/onnxruntime/capi/libonnxruntime*.so* /ort/

FROM ort-${RUNTIME} AS ort
RUN cd /ort && ln -sf "$(ls libonnxruntime.so.* | head -1)" libonnxruntime.so

# --- runtime bases ---------------------------------------------------------
FROM debian:bookworm-slim AS base-cpu
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 AS base-cuda

FROM base-${RUNTIME} AS runtime
# What `ldd mouthmap` needs (tests/deploy_files.rs checks this list against
# it), GStreamer's decoders for every source kind, and curl for HEALTHCHECK.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates curl libssl3 libzstd1 zlib1g \
      libgstreamer1.0-0 libgstreamer-plugins-base1.0-0 \
      gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
      gstreamer1.0-plugins-ugly gstreamer1.0-libav \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/mouthmap --create-home mouthmap
COPY --from=build /usr/local/bin/mouthmap /usr/local/bin/mouthmap
COPY --from=ort /ort/ /opt/onnxruntime/
# The image's model repository (docs/models.md): the reference model as
# version 4 (the latest, served by default: per-frame 2D convolutions, with
# the front end and back end that compute each frame's front end once; the
# back end reads its weights from model.onnx beside it), and its INT8
# variant as a model of its own, each with the card. Mount another
# repository over it, or one more version beside it, to serve your own.
COPY models/mouthmap-lipnet-grid-s1/4/model.onnx models/mouthmap-lipnet-grid-s1/4/front.onnx models/mouthmap-lipnet-grid-s1/4/back.onnx model/MODEL_CARD.md /opt/mouthmap/models/mouthmap-lipnet-grid-s1/4/
COPY models/mouthmap-lipnet-grid-s1-int8/4/model.onnx models/mouthmap-lipnet-grid-s1-int8/4/front.onnx models/mouthmap-lipnet-grid-s1-int8/4/back.onnx model/MODEL_CARD.md /opt/mouthmap/models/mouthmap-lipnet-grid-s1-int8/4/
ENV ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so \
    MOUTHMAP_MODELS_DIR=/opt/mouthmap/models \
    MOUTHMAP_FACE_MODEL=/models/yunet/face_detection_yunet_2026may.onnx \
    MOUTHMAP_LOG=info \
    MOUTHMAP_HEALTH_PORT=8088
USER 10001
WORKDIR /var/lib/mouthmap
# Every role serves /healthz: ingest on its API port, the stages beside
# their metrics; set MOUTHMAP_HEALTH_PORT to the role's port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${MOUTHMAP_HEALTH_PORT}/healthz" >/dev/null || exit 1
ENTRYPOINT ["mouthmap"]
CMD ["--help"]
