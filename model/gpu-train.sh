#!/usr/bin/env bash
# Train several runs side by side on one lent GPU, from the crops `carry pack`
# made (../.carry/crops), and bring back each run's best weights (slimmed:
# the moving average as float16 weights) and the logs under $OUT.
#
#   python -m mouthmap_model.carry pack --out ../.carry/crops   # here, once
#   MINUTES=7 bash model/gpu-train.sh                           # there, from the repo root
#   SET=restarts MINUTES=2.5 GRACE=30 bash model/gpu-train.sh    # two restarts only
#   SET=v4 MINUTES=3 GRACE=30 bash model/gpu-train.sh            # four restarts of version 4
#
# Each run's one-cycle schedule is sized to MINUTES from its own timing steps
# (taken while the others run too); `timeout` stops a run GRACE seconds (90)
# past it, so the weights come back even when the timing was optimistic.
set -u
export PYTHONUNBUFFERED=1
MINUTES=${MINUTES:-7}
OUT=${OUT:-/tmp/gpu-train-out}
mkdir -p "$OUT" /tmp/runs
cd "$(dirname "$0")"
python3 -c "import torch, cv2; print('torch', torch.__version__, 'cv2', cv2.__version__, torch.cuda.get_device_name())"
python3 -m mouthmap_model.carry unpack --src ../.carry/crops --out /tmp/data || exit 1
run() {
  local name=$1; shift
  timeout "$(python3 -c "print(int($MINUTES * 60 + ${GRACE:-90}))")" python3 -m mouthmap_model.train --data /tmp/data --run /tmp/runs/$name \
    --device cuda --threads 3 --minutes "$MINUTES" --eval-every 250 "$@" > /tmp/runs/$name.out 2>&1
  echo "run $name exited $?"
}
if [ "${SET:-ablation}" = v4 ]; then
  # G-J: low-peak restarts of version 4 (the default), soup ingredients as
  # E and F were for it; I and J repeat G and H with the frame-level word
  # loss, whose CPU runs were too short to tell (model card, "Eighth session").
  NAMES="G H I J"
  run G --recipe v1 --ema 0.999 --no-bf16 --init checkpoints/v4.pt --peak-lr 5e-4 --seed 11 &
  run H --recipe v1 --ema 0.999 --no-bf16 --init checkpoints/v4.pt --peak-lr 5e-4 --seed 12 &
  run I --recipe v1 --ema 0.999 --no-bf16 --init checkpoints/v4.pt --peak-lr 5e-4 --seed 11 --word-frames 0.3 &
  run J --recipe v1 --ema 0.999 --no-bf16 --init checkpoints/v4.pt --peak-lr 5e-4 --seed 12 --word-frames 0.3 &
elif [ "${SET:-ablation}" = restarts ]; then
  # E, F: more low-peak restarts of the version-4 candidate (ingredients of a soup).
  NAMES="E F"
  run E --recipe v1 --ema 0.999 --no-bf16 --init checkpoints/v4-soup.pt --peak-lr 5e-4 --seed 4 &
  run F --recipe v1 --ema 0.999 --no-bf16 --init checkpoints/v4-soup.pt --peak-lr 5e-4 --seed 5 &
else
  NAMES="A B C D"
  # A, B: from scratch, strong (v2) and mild (v1) augmentation, batch 32.
  run A --recipe v2 --batch 32 --seed 1 &
  run B --recipe v1 --ema 0.999 --no-bf16 --batch 32 --seed 1 &
  # C: a long low-peak restart of the version-4 candidate (the one lever that
  # moved WER on the CPU); D: version 3 under the strong augmentation.
  run C --recipe v1 --ema 0.999 --no-bf16 --init checkpoints/v4-soup.pt --peak-lr 5e-4 --seed 2 &
  run D --recipe v2 --init checkpoints/v3-wr.pt --peak-lr 1e-3 --seed 3 &
fi
(sleep 60; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv; top -bn1 | head -15) &
wait
for n in $NAMES; do
  grep -a '^{' /tmp/runs/$n.out | tail -2 | cut -c1-300
  grep -a -E 'per step|done:' /tmp/runs/$n.out
  [ -f /tmp/runs/$n/best.pt ] && python3 -m mouthmap_model.slim /tmp/runs/$n/best.pt "$OUT/$n.pt" --ema-as-weights
done
# The logs alone (the full checkpoints beside them are 52 MB each).
(cd /tmp/runs && tar czf "$OUT/logs.tgz" ./*.out ./*/log.jsonl)
ls -la "$OUT"
