#!/usr/bin/env bash
# The GPU acceptance check: one command that, on a single-GPU H100/H200 box with Python 3.12, a
# torch 2.x CUDA wheel, transformers, nvcc, cmake and ninja, and neither Node nor network, builds
# the addon against the wheel and measures everything the GPU work promises, in one run of at most
# 8 minutes (GPU time on such a box is scarce).
#
#   bash scripts/gpu-check.sh --prepare   here (Node, node_modules): packs what the box lacks into
#                                         .gpu-check/ (Node runtime, production node_modules),
#                                         compiles dist/, prints the paths to carry and their size
#   bash scripts/gpu-check.sh             on the box, from the repo root: clean build, then every step
#   bash scripts/gpu-check.sh --dry-run   anywhere, in seconds: every step through the same plumbing,
#                                         the GPU steps skipped (their helpers still load and parse)
#   bash scripts/gpu-check.sh --rehearse  here: every GPU step on the CPU with tiny shapes, against the
#                                         existing build (PYTHON must have torch and transformers)
#
# Options: --out DIR (default: $OUT, else ./gpu-check-out), --budget SECONDS (all steps together;
# default 470), --python PATH (default: $PYTHON, else python3), --node-bundler SCRIPT (--prepare;
# default scripts/gpu-check/node-runtime-bundle.sh).
#
# Writes DIR/gpu-check.json, rewritten after every step (a run cut short keeps what it did), and
# DIR/gpu-check.log. Steps, each under its own `timeout` (clipped to what is left of the budget):
#   environment        nvidia-smi, nvcc, cmake, ninja; python's torch, CUDA, cuDNN, NCCL, transformers
#   build              rm -rf build; node scripts/setup.js against the wheel; readelf -d / ldd of the addon
#   info               octo-native info --json
#   hf-parity-fp32     ours vs the committed fixtures on the GPU, fp32, max |Δlogit| <= 1e-4
#   hf-parity-bf16     ours vs transformers, both bf16 on the GPU, same inputs and checkpoints
#   sampler-graphs     greedy tokens with CUDA graphs and with OCTO_NATIVE_CUDA_GRAPHS=0: identical
#   decode-throughput  tokens/s vs transformers generate, random Qwen2.5-0.5B shape, batch 64 x 256 new
#   loss-memory        fused loss peak memory vs eager, 8k tokens, vocab 151,936
#   train-mfu          train-step tokens/s and MFU, random Qwen2.5-1.5B shape
#   train-run          octo-native train --set model.device=cuda, 3 steps
# Each step's helper is in scripts/gpu-check/ and says what it measures. Exit status: 0 when no
# step failed.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo" || exit 1
prepared=.gpu-check
helpers=scripts/gpu-check

mode=run
out=${OUT:-./gpu-check-out}
budget=
python=${PYTHON:-python3}
node_bundler=$helpers/node-runtime-bundle.sh

usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while (($# > 0)); do
  case $1 in
    --prepare) mode=prepare ;;
    --dry-run) mode=dry-run ;;
    --rehearse) mode=rehearse ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    --budget) budget=${2:?--budget needs seconds}; shift ;;
    --python) python=${2:?--python needs a path}; shift ;;
    --node-bundler) node_bundler=${2:?--node-bundler needs a script}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu-check: unknown argument '$1' (--help lists them)" >&2; exit 2 ;;
  esac
  shift
done

die() { echo "gpu-check: $*" >&2; exit 1; }

# ---- --prepare: what the box lacks, packed here ----------------------------------------------

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

prepare() {
  command -v node >/dev/null || die "--prepare needs Node on this machine"
  [ -d node_modules/cmake-js ] || die "node_modules is not installed here: run npm ci first"
  [ -f "$node_bundler" ] || die "no Node runtime bundler at $node_bundler (pass --node-bundler SCRIPT)"
  mkdir -p "$prepared"
  echo "gpu-check: compiling dist/ (tsc)"
  node_modules/.bin/tsc -p tsconfig.json || die "tsc failed"
  echo "gpu-check: packing the Node runtime"
  bash "$node_bundler" "$prepared/node-runtime" >/dev/null || die "the Node runtime bundler failed"
  echo "gpu-check: packing the production node_modules"
  node "$helpers/pack-modules.js" "$prepared/node_modules.tar.xz" || die "packing node_modules failed"
  node "$helpers/source-hash.js" > "$prepared/dist-source-hash"
  local carried tree
  carried=$(du -scb "$prepared" dist | tail -1 | cut -f1)
  tree=$(git ls-files -z -co --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
  echo
  echo "carried: $prepared $(mib "$(du -sb "$prepared" | cut -f1)"), dist $(mib "$(du -sb dist | cut -f1)")"
  echo "working tree (tracked + untracked, not ignored): $(mib "$tree")"
  echo "total that travels: $(mib $((carried + tree))) of 64 MiB"
  (( carried + tree < 60 * 1048576 )) || echo "gpu-check: warning: over 60 MiB; the device tool refuses more than 64" >&2
  echo
  echo "carry: [\"$prepared\", \"dist\"]"
  echo "then, on the box:  bash scripts/gpu-check.sh"
}

if [ "$mode" = prepare ]; then
  prepare
  exit
fi

# ---- Node, node_modules, dist/ ----------------------------------------------------------------

work=$(mktemp -d "${TMPDIR:-/tmp}/octo-gpu-check.XXXXXX") || die "cannot make a scratch directory"
# The prepared runtime whenever it is there: the Node that --prepare packed is the one measured.
if [ -f "$prepared/node-runtime/activate.sh" ]; then
  # shellcheck source=/dev/null
  source "$prepared/node-runtime/activate.sh"
fi
command -v node >/dev/null || die "no node: run 'bash scripts/gpu-check.sh --prepare' where Node is, and carry $prepared"
modules_source=node_modules/
if [ ! -d node_modules/cmake-js ]; then
  [ -f "$prepared/node_modules.tar.xz" ] || die "no node_modules and no $prepared/node_modules.tar.xz: run --prepare and carry $prepared"
  tar -xJf "$prepared/node_modules.tar.xz" -C "$work" || die "cannot unpack $prepared/node_modules.tar.xz"
  # Bare requires (dist/, scripts/setup.js's cmake-js, CMake's node-addon-api probe) fall back to NODE_PATH.
  export NODE_PATH=$work/node_modules
  modules_source="$prepared/node_modules.tar.xz, unpacked to $NODE_PATH"
fi
[ -f dist/lib/commands/cli.js ] || die "dist/ is missing: run --prepare (it compiles dist/) and carry dist"

mkdir -p "$out" || die "cannot make $out"
report=$out/gpu-check.json
exec > >(tee -a "$out/gpu-check.log") 2>&1
tee_pid=$!
# At exit, let tee write the last lines before whatever collects $out reads the log.
trap 'exec >&- 2>&-; wait "$tee_pid"' EXIT
record() { node "$helpers/record.js" "$1" --report "$report" "${@:2}"; }

case $mode in
  run) budget=${budget:-470} ;;
  dry-run | rehearse) budget=${budget:-600} ;;
esac
deadline=$((SECONDS + budget))
dist_sources=unknown
if [ -f "$prepared/dist-source-hash" ]; then
  dist_sources=$([ "$(node "$helpers/source-hash.js")" = "$(cat "$prepared/dist-source-hash")" ] && echo yes || echo no)
fi
record init --mode "$mode" --budget "$budget" --node-modules "$modules_source" --dist-sources "$dist_sources" || die "cannot write $report"
echo "gpu-check: mode $mode, budget ${budget} s, report $report, scratch $work"
[ "$dist_sources" = no ] && echo "gpu-check: WARNING: lib/ or bench/ changed since --prepare compiled dist/: the steps run the older dist/"

# ---- the steps --------------------------------------------------------------------------------

python=$(command -v "$python" || echo "$python")
export PYTHON=$python WORK=$work PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
case $mode in
  run) export DEVICE=cuda SMALL= CHECK= ;;
  rehearse) export DEVICE=cpu SMALL=--small CHECK= ;;
  dry-run) export DEVICE=cuda SMALL= CHECK=--check ;;
esac

# run_step NAME LIMIT FUNCTION: FUNCTION (exported) under `timeout`, its result recorded.
run_step() {
  local name=$1 limit=$2 fn=$3 left=$((deadline - SECONDS))
  if ((left < 10)); then
    record skip --name "$name" --reason "the ${budget} s budget is spent"
    return
  fi
  ((limit > left)) && limit=$left
  local result=$work/$name.json log=$work/$name.log start=$SECONDS
  rm -f "$result"
  echo "=== $name (limit ${limit} s)"
  STEP_RESULT=$result timeout -k 5 "$limit" bash -c "$fn" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  record step --name "$name" --rc "$rc" --seconds $((SECONDS - start)) --limit "$limit" --result "$result" --log "$log"
}

skip_step() { record skip --name "$1" --reason "$2"; }  # skip_step NAME REASON

step_environment() { "$PYTHON" scripts/gpu-check/environment.py --result "$STEP_RESULT"; }

step_build() {
  rm -rf build
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) PATH="$(dirname "$PYTHON"):$PATH" node scripts/setup.js || exit 1
  node scripts/gpu-check/linkage.js --site-packages "$SITE_PACKAGES" --expect-cuda --result "$STEP_RESULT"
}

# The rehearsal builds nothing (this machine's addon as it is); the dry run only loads the helper.
step_linkage() { node scripts/gpu-check/linkage.js --site-packages "$SITE_PACKAGES" $CHECK --result "$STEP_RESULT"; }

step_info() { node scripts/gpu-check/info.js $EXPECT_CUDA --result "$STEP_RESULT"; }

step_hf_parity_fp32() { node scripts/gpu-check/hf-parity.js --device "$DEVICE" --dtype float32 $CHECK --result "$STEP_RESULT"; }

step_hf_parity_bf16() {
  "$PYTHON" scripts/gpu-check/hf_bf16_logits.py --fixtures test/fixtures/hf-parity --device "$DEVICE" --out "$WORK/hf-bf16-logits.json" $CHECK || exit 1
  node scripts/gpu-check/hf-parity.js --device "$DEVICE" --dtype bfloat16 --reference "$WORK/hf-bf16-logits.json" $CHECK --result "$STEP_RESULT"
}

step_sampler_graphs() { node scripts/gpu-check/sampler-graphs.js --device "$DEVICE" --work "$WORK" $SMALL $CHECK --result "$STEP_RESULT"; }

step_decode_throughput() {
  "$PYTHON" scripts/gpu-check/decode_baseline.py --model-dir "$WORK/decode-model" --result "$WORK/decode-baseline.json" --device "$DEVICE" $SMALL $CHECK || exit 1
  node scripts/gpu-check/decode-throughput.js --device "$DEVICE" --model "$WORK/decode-model" --baseline "$WORK/decode-baseline.json" $CHECK --result "$STEP_RESULT"
}

step_loss_memory() { node scripts/gpu-check/loss-memory.js --device "$DEVICE" $SMALL $CHECK --result "$STEP_RESULT"; }

step_train_mfu() { node scripts/gpu-check/train-mfu.js --device "$DEVICE" --device-name "$GPU_NAME" $SMALL $CHECK --result "$STEP_RESULT"; }

step_train_run() { node scripts/gpu-check/train-run.js --device "$DEVICE" --work "$WORK" $SMALL $CHECK --result "$STEP_RESULT"; }

export -f step_environment step_build step_linkage step_info step_hf_parity_fp32 step_hf_parity_bf16 step_sampler_graphs \
  step_decode_throughput step_loss_memory step_train_mfu step_train_run

run_step environment 60 step_environment
export SITE_PACKAGES GPU_NAME EXPECT_CUDA=
SITE_PACKAGES=$(record field --path steps.environment.torch.sitePackages)
GPU_NAME=$(record field --path device)
cuda_visible=$(record field --path steps.environment.torch.cudaAvailable)

case $mode in
  run)
    # The build starts with rm -rf build: never on a machine that is no GPU box.
    if [ "$cuda_visible" = true ]; then
      run_step build 300 step_build
    else
      skip_step build "torch sees no CUDA device: not a GPU box (use --dry-run or --rehearse here)"
    fi
    EXPECT_CUDA=--expect-cuda
    ;;
  rehearse | dry-run) run_step build 30 step_linkage ;;
esac

if [ -f build/Release/octo_native.node ]; then
  run_step info 60 step_info
else
  skip_step info "no addon at build/Release/octo_native.node"
fi

gpu_steps=(hf-parity-fp32 hf-parity-bf16 sampler-graphs decode-throughput loss-memory train-mfu train-run)
declare -A step_limits=([hf-parity-fp32]=60 [hf-parity-bf16]=90 [sampler-graphs]=90 [decode-throughput]=120 [loss-memory]=90 [train-mfu]=120 [train-run]=90)
for name in "${gpu_steps[@]}"; do
  if [ "$mode" = run ] && [ "$cuda_visible" != true ]; then
    skip_step "$name" "torch sees no CUDA device"
  elif [ "$mode" = run ] && [ "$(record field --path steps.build.status)" != ok ]; then
    skip_step "$name" "the build failed"
  else
    run_step "$name" "${step_limits[$name]}" "step_${name//-/_}"
  fi
done

record finish --seconds "$SECONDS"
failed=$(record field --path summary.failed)
echo "gpu-check: $(record field --path summary) in ${SECONDS} s -> $report"
if [ "$failed" = 0 ]; then
  rm -rf "$work"
else
  echo "gpu-check: scratch kept for a look at the failures: $work"
  exit 1
fi
