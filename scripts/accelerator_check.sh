#!/usr/bin/env bash
# The open issues' accelerator checks as one short script for a lent GPU: the throughput
# grid of the performance issue (GhostNet-CIFAR 1.0x train/eval img/s by batch, dtype and
# conv formulation, compile time) and a timed default-recipe run (time to accuracy) of the
# accuracy issue. Sized for one 10-minute call of a development machine's device tool.
#
#   on the development machine (once; writes the git-ignored folder .device/):
#       bash scripts/accelerator_check.sh prepare TRAIN_TAR
#   on the accelerator (the repo root; OUT is where results go, 8 files at most):
#       OUT=/tmp/out bash scripts/accelerator_check.sh run
#   then, in a second call, the study's full 3x3 lr x batch grid (the study issue):
#       OUT=/tmp/out bash scripts/accelerator_check.sh study-grid
#   and the study's ablation, one fix at a time, 20 epochs each (several calls; it resumes):
#       OUT=/tmp/out bash scripts/accelerator_check.sh study-ablation
#   a CPU dry run of the same steps, tiny sizes, to check the script itself:
#       OUT=/tmp/out ACCEL_DRY_RUN=1 bash scripts/accelerator_check.sh run   (or another step)
#
# `prepare` downloads, as CPython 3.12 manylinux wheels, the packages this project needs
# that a CUDA JAX image usually lacks (TFDS, ml_collections, tensorboardX and their
# dependencies), and copies TRAIN_TAR, a .tar.gz of CIFAR-10's train split as
# train/<class>/*.jpg (docs/data.md's folder layout), beside them.
# `run` installs the wheels into /tmp/site without touching the image's JAX, extracts the
# data and writes: log.txt, bench.json (one entry per grid point), train_results.json,
# train_metrics.jsonl and env.txt into $OUT. Each step has its own timeout, so a failure
# or a slow step leaves the rest running; TRAIN_MINUTES sizes the training run.
set -uo pipefail
cd "$(dirname "$0")/.."
HERE=.device

prepare() {
  local tar=${1:?usage: accelerator_check.sh prepare TRAIN_TAR}
  grep -qxF "/$HERE/" .git/info/exclude 2>/dev/null || echo "/$HERE/" >> .git/info/exclude
  mkdir -p "$HERE/whl"
  local platforms=()
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
           manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 any; do
    platforms+=(--platform "$p")
  done
  # promise has no wheel on PyPI; it is pure Python, so a locally built one serves.
  python3 -m pip wheel -q --no-deps -w "$HERE/whl" promise || return
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d "$HERE/whl" \
    ml_collections tensorboardX tensorflow-datasets importlib_resources array_record \
    dm-tree immutabledict simple_parsing docstring_parser tensorflow-metadata termcolor \
    toml googleapis-common-protos || return
  cp "$tar" "$HERE/train.tar.gz" || return
  du -sh "$HERE"
  echo "ready: call the device tool with carry=[\"$HERE\"] and command" \
       "\"OUT=\$OUT bash scripts/accelerator_check.sh run\""
}

# What both device steps start with: $OUT and its log, the wheels from `prepare` on the path.
# Sets dry and py for the caller (bash's dynamic scope).
setup() {
  : "${OUT:?set OUT to the folder for results}"
  mkdir -p "$OUT"
  exec > >(tee -a "$OUT/log.txt") 2>&1
  dry=${ACCEL_DRY_RUN:-0} py=${PYTHON:-python3}
  export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  if [ "$dry" != 1 ]; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
      "$HERE"/whl/*.whl && export PYTHONPATH="$PWD:/tmp/site"
  fi
}

run() {
  local dry py
  setup
  { date -u; nvidia-smi 2>/dev/null; $py -c 'import jax, flax, optax, orbax.checkpoint as o;
print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__,
      "orbax", o.__version__, "devices", jax.devices())'; } > "$OUT/env.txt" 2>&1
  cat "$OUT/env.txt"

  # 1. The throughput grid (performance issue): bfloat16 at three batches, float32, and the
  #    CPU's shifted formulation against the native conv, each its own process (cold compile).
  local model=ghostnet_cifar_100 steps=30 epoch_steps=30 grid
  grid="bfloat16:128:native bfloat16:512:native bfloat16:1024:native float32:512:native bfloat16:512:shifted"
  if [ "$dry" = 1 ]; then model=ghostnet_cifar_tiny steps=3 epoch_steps=2 grid="float32:16:auto"; fi
  local bench_dir=/tmp/accel_bench
  rm -rf "$bench_dir" && mkdir -p "$bench_dir"
  for point in $grid; do
    IFS=: read -r dtype batch conv <<< "$point"
    echo "== benchmark $model $dtype batch $batch conv $conv"
    timeout 150 $py -m ghostnet_jax.benchmark --model "$model" --batch-size "$batch" \
      --dtype "$dtype" --conv-impl "$conv" --steps "$steps" --epoch-steps "$epoch_steps" \
      --json "$bench_dir/$dtype-$batch-$conv.json" || echo "(failed: status $?)"
  done
  $py - "$bench_dir" "$OUT/bench.json" <<'EOF'
import json, pathlib, sys
runs = {p.stem: json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).glob('*.json'))}
pathlib.Path(sys.argv[2]).write_text(json.dumps(runs, indent=1))
for name, r in runs.items():
    print(name, 'train', r.get('train_images_per_sec'), 'mean', r.get('train_images_per_sec_mean'),
          'epoch', r.get('epoch_images_per_sec'), 'eval', r.get('eval_images_per_sec'),
          'compile_s', r.get('compile_s'))
EOF

  # 2. Time to accuracy (accuracy issue): the default recipe on the real train split,
  #    45,000 / 5,000, fitted by the trainer's time budget to TRAIN_MINUTES.
  local data=/tmp/accel_data run_dir=/tmp/accel_run minutes=${TRAIN_MINUTES:-5}
  rm -rf "$data" "$run_dir" && mkdir -p "$data"
  local extra=()
  if [ "$dry" = 1 ]; then
    $py -c "
import sys, pathlib; sys.path.insert(0, 'tests'); import train_harness as h
h.make_dataset(pathlib.Path('$data'))"
    extra=(--config configs/smoke.py --config.max_steps=4)
  else
    tar xzf "$HERE/train.tar.gz" -C "$data" || return
    extra=(--config configs/default.py --config.time_budget_minutes="$minutes")
  fi
  echo "== train ${extra[*]}"
  timeout $(( minutes * 60 + 240 )) $py -m ghostnet_jax.train "${extra[@]}" \
    --config.data.source="folder:$data" --config.data.test_split='' --config.report=False \
    --workdir "$run_dir" || echo "(training failed: status $?)"
  cp "$run_dir/results.json" "$OUT/train_results.json" 2>/dev/null
  cp "$run_dir/metrics.jsonl" "$OUT/train_metrics.jsonl" 2>/dev/null
  grep -h '"split": "val"' "$run_dir/metrics.jsonl" 2>/dev/null | tail -5
  date -u
}

# The study issue's full-size grid: the original study's 3x3 grid of learning rate x batch
# size on its own network and recipe (configs/original_study_net.py), 10 epochs each on the
# 45,000 / 5,000 split, the three rates of each batch size trained together (--vectorize;
# the study's callbacks off, as vectorized runs need). Writes results.csv, results.md and
# heatmap.png to $OUT. Its own call: about 10 minutes on one GPU is the estimate, not a
# measurement; rerunning the same call resumes the sweep where it stopped.
study_grid() {
  local dry py
  setup
  local data=/tmp/accel_data sweep_dir=/tmp/accel_study_grid
  local args=(--config configs/original_study_net.py --config.num_epochs=10
    --grid optimizer.learning_rate=0.001,0.01,0.1 --grid batch_size=16,32,64)
  if [ "$dry" = 1 ]; then
    rm -rf "$data" && mkdir -p "$data"
    $py -c "
import sys, pathlib; sys.path.insert(0, 'tests'); import train_harness as h
h.make_dataset(pathlib.Path('$data'))"
    args=(--config configs/original_study_net.py --config.model.name=ghostnet_cifar_tiny
      --config.num_epochs=1 --config.eval_batch_size=8
      --grid optimizer.learning_rate=0.001,0.01 --grid batch_size=8,16)
  elif [ ! -d "$data/train" ]; then
    mkdir -p "$data" && tar xzf "$HERE/train.tar.gz" -C "$data" || return
  fi
  echo "== study grid ${args[*]}"
  timeout 560 $py -m ghostnet_jax.sweep "${args[@]}" --vectorize \
    --config.callbacks.early_stopping.enabled=False \
    --config.callbacks.reduce_lr_on_plateau.enabled=False \
    --config.data.source="folder:$data" --config.data.test_split='' --config.report=False \
    --workdir "$sweep_dir" || echo "(sweep stopped: status $?; rerun to resume)"
  cp "$sweep_dir"/results.csv "$sweep_dir"/results.md "$sweep_dir"/heatmap.png "$OUT"/ 2>/dev/null
  cat "$sweep_dir/results.md" 2>/dev/null
  date -u
}

# The study issue's ablation: what each fix of configs/study_net_done_properly.py is worth on
# the study's own network, each added alone to the study's recipe (configs/original_study_net.py,
# 20 epochs, 45,000 / 5,000), then all together, and BatchNorm (ghost_study_net_bn, the other
# reading of the reconstruction's open choice). The cosine schedule replaces the study's
# callbacks, as in the done-properly config. Nine 20-epoch runs do not fit one 10-minute call
# (an estimate: 1,406 steps of batch 32 per epoch); rerun the same call and the sweep goes on
# where it stopped. Writes results.csv and results.md to $OUT.
study_ablation() {
  local dry py
  setup
  local data=/tmp/accel_data sweep_dir=/tmp/accel_study_ablation
  local cosine='optimizer.learning_rate=0.00108,optimizer.schedule=warmup_cosine,optimizer.warmup_epochs=1.0,callbacks.early_stopping.enabled=False,callbacks.reduce_lr_on_plateau.enabled=False'
  local fixes='data.mean=None,data.std=None,data.augment.crop_padding=4,data.augment.flip=True,model.dropout_rate=0.2,optimizer.name=adamw,optimizer.weight_decay=0.05'
  local base=(--config configs/original_study_net.py)
  if [ "$dry" = 1 ]; then
    rm -rf "$data" "$sweep_dir" && mkdir -p "$data"
    $py -c "
import sys, pathlib; sys.path.insert(0, 'tests'); import train_harness as h
h.make_dataset(pathlib.Path('$data'))"
    base+=(--config.model.name=ghostnet_cifar_tiny --config.num_epochs=1 --config.batch_size=8
      --config.eval_batch_size=8)
  elif [ ! -d "$data/train" ]; then
    mkdir -p "$data" && tar xzf "$HERE/train.tar.gz" -C "$data" || return
  fi
  echo "== study ablation ${base[*]}"
  timeout 560 $py -m ghostnet_jax.sweep "${base[@]}" \
    --variant 'study:' \
    --variant '+per_channel_norm:data.mean=None,data.std=None' \
    --variant '+augment:data.augment.crop_padding=4,data.augment.flip=True' \
    --variant '+dropout:model.dropout_rate=0.2' \
    --variant '+adamw_wd:optimizer.name=adamw,optimizer.weight_decay=0.05' \
    --variant "+cosine_lr_find:$cosine" \
    --variant "done_properly:$fixes,$cosine" \
    --variant '+batchnorm:model.name=ghost_study_net_bn' \
    --variant "done_properly+batchnorm:$fixes,$cosine,model.name=ghost_study_net_bn" \
    --config.data.source="folder:$data" --config.data.test_split='' --config.report=False \
    --workdir "$sweep_dir" || echo "(sweep stopped: status $?; rerun to resume)"
  cp "$sweep_dir"/results.csv "$sweep_dir"/results.md "$OUT"/ 2>/dev/null
  cat "$sweep_dir/results.md" 2>/dev/null
  date -u
}

case "${1:-}" in
  prepare) shift; prepare "$@" ;;
  run) run ;;
  study-grid) study_grid ;;
  study-ablation) study_ablation ;;
  *) echo "usage: $0 prepare TRAIN_TAR | run | study-grid | study-ablation" >&2; exit 2 ;;
esac
