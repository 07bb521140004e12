#!/usr/bin/env bash
# The README's GPU figures in one go, on a machine with one CUDA GPU and dares installed:
#   bash bench/gpu.sh OUT [NODE_SEQUENCE [TRAIN_DATA]]
# training, the model at fp16 compiled, the node at 60 Hz on both eyes (fp16, compiled), the demo model's
# reduced-precision agreement, the compiled-path check (fp32 compiled against the reference path), and ONNX
# Runtime's CUDA and TensorRT providers on the depth and pose networks.
# NODE_SEQUENCE / TRAIN_DATA: `dares synth` output to use instead of generating scenes (open3d) there.
# Each step has a time limit, so one slow compilation cannot take the others with it.
set -uo pipefail
out=${1:?usage: bench/gpu.sh OUT [NODE_SEQUENCE [TRAIN_DATA]]}
node_sequence=(${2:+--sequence "$2"})
train_data=(${3:+--data "$3"})
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST  # DDS stays on loopback
step() {
    local limit=$1
    shift
    echo "== $* ($(date +%T), limit ${limit} s)"
    timeout --signal=INT --kill-after=15 "$limit" "$@" || echo "== failed with status $?: $*"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
step 90 dares bench train --device cuda "${train_data[@]}" --out "$out"
step 120 dares bench model --device cuda --precision fp16 --compile --out "$out"
step 240 dares bench node --device cuda --precision fp16 --compile --rate 60 --eyes both --duration 10 "${node_sequence[@]}" --out "$out"
for precision in fp16 bf16; do
    step 40 dares bench model --device cuda --precision "$precision" --weights dares_core/assets/demo_model.safetensors \
        --out "$out"
done
step 120 dares bench model --device cuda --compile --out "$out"
# ONNX Runtime's GPU providers (onnxruntime-gpu, or its TensorRT build, must be what is installed there): each
# result names the provider that ran, or "refused" where the check against torch refused it.
for providers in cuda tensorrt; do
    step 240 dares bench model --device cuda --backend onnxruntime --onnx-providers "$providers" --out "$out"
    step 120 dares bench pose --device cuda --backend onnxruntime --onnx-providers "$providers" --out "$out"
done
step 240 dares bench model --device cuda --precision fp16 --backend onnxruntime --onnx-providers tensorrt --out "$out"
