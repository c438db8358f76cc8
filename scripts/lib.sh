# Shared settings of MouthMap's scripts. Source it; every value can be overridden
# from the environment.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export MOUTHMAP_STACK_DIR=${MOUTHMAP_STACK_DIR:-$ROOT/.stack}
export MOUTHMAP_SHARED=${MOUTHMAP_SHARED:-$ROOT/../shared}
export MOUTHMAP_FACE_MODEL=${MOUTHMAP_FACE_MODEL:-$MOUTHMAP_SHARED/models/yunet/face_detection_yunet_2026may.onnx}
export MOUTHMAP_KAFKA_PORT=${MOUTHMAP_KAFKA_PORT:-9092}
export MOUTHMAP_REDIS_PORT=${MOUTHMAP_REDIS_PORT:-6379}
export MOUTHMAP_RTMP_PORT=${MOUTHMAP_RTMP_PORT:-1935}
# nginx's loopback proxy for the RTMP callbacks (adds the callback secret).
export MOUTHMAP_RTMP_CALLBACK_PORT=${MOUTHMAP_RTMP_CALLBACK_PORT:-1936}
export MOUTHMAP_INGEST_PORT=${MOUTHMAP_INGEST_PORT:-8088}
export MOUTHMAP_PREPROCESS_PORT=${MOUTHMAP_PREPROCESS_PORT:-9101}
export MOUTHMAP_INFER_PORT=${MOUTHMAP_INFER_PORT:-9102}
export MOUTHMAP_DECODE_PORT=${MOUTHMAP_DECODE_PORT:-9103}
export MOUTHMAP_FEATURES_PORT=${MOUTHMAP_FEATURES_PORT:-9104}
export MOUTHMAP_GATEWAY_PORT=${MOUTHMAP_GATEWAY_PORT:-8080}
export MOUTHMAP_GATEWAY_GRPC_PORT=${MOUTHMAP_GATEWAY_GRPC_PORT:-8081}
export MOUTHMAP_REDIS_URL=${MOUTHMAP_REDIS_URL:-redis://127.0.0.1:${MOUTHMAP_REDIS_PORT:-6379}/0}
export MOUTHMAP_BROKERS=${MOUTHMAP_BROKERS:-127.0.0.1:$MOUTHMAP_KAFKA_PORT}
# Release builds for the stack's services; debug for a quicker first build.
export MOUTHMAP_PROFILE=${MOUTHMAP_PROFILE:-release}
TANSU_VERSION=0.6.0
ORT_VERSION=1.31.1
HELM_SDK_VERSION=0.2.2
KUBERNETES_VALIDATE_VERSION=1.37.0
KEDA_MODELS_VERSION=2.0.0
# The web view's browser test drives Debian's chromium with puppeteer-core
# (24.x: the last line that runs on Debian 12's node 20).
PUPPETEER_CORE_VERSION=24.43.1
TRITONCLIENT_VERSION=2.73.0
TENSORFLOW_VERSION=2.21.0
TF2ONNX_VERSION=1.17.0
export MOUTHMAP_ORT_DIR=${MOUTHMAP_ORT_DIR:-$MOUTHMAP_STACK_DIR/onnxruntime}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$MOUTHMAP_ORT_DIR/libonnxruntime.so}
export PATH="$HOME/.cargo/bin:$PATH"

RUN_DIR=$MOUTHMAP_STACK_DIR/run
LOG_DIR=$MOUTHMAP_STACK_DIR/logs
DATA_DIR=$MOUTHMAP_STACK_DIR/data

log() { printf '\033[1m[%s]\033[0m %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# port_open PORT: true when something listens on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port PORT SECONDS NAME
wait_port() {
  local port=$1 secs=$2 name=$3 i
  for ((i = 0; i < secs * 10; i++)); do
    port_open "$port" && return 0
    sleep 0.1
  done
  die "$name did not open port $port within ${secs}s (see $LOG_DIR/$name.log)"
}

# Cargo's dev profile builds into target/debug.
mouthmap_bin() {
  local dir=$MOUTHMAP_PROFILE
  [ "$dir" = dev ] && dir=debug
  echo "$ROOT/target/$dir/mouthmap"
}

python_with() {
  # A Python with onnxruntime, numpy and matplotlib: the model's venv when
  # it exists, else a small one of our own.
  if [ -x "$ROOT/model/.venv/bin/python" ] && "$ROOT/model/.venv/bin/python" -c 'import onnxruntime, matplotlib' 2>/dev/null; then
    echo "$ROOT/model/.venv/bin/python"; return
  fi
  local venv="$MOUTHMAP_STACK_DIR/bench-venv"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "onnxruntime==$ORT_VERSION" numpy matplotlib
  fi
  echo "$venv/bin/python"
}
