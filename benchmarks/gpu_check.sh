#!/usr/bin/env bash
# GPU paths, end to end, on one CUDA GPU: fp32 / bf16-mixed / bf16-mixed + torch.compile training
# throughput of the got_char shape, then a bf16 + compiled fit whose checkpoint is resumed eagerly
# in fp32, generated from on the GPU and on the CPU, each with and without --model.compiled_decode
# (a CPU-only step: on the GPU it must warn and fall back to eager).
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]      (default: logs/gpu_check; ~5 minutes on an H100)
#
# Corpus: Python's docs (builtin, no download). Prints one JSON line per throughput run and the
# generated text; every step must succeed (set -e).
set -euo pipefail
out=${1:-logs/gpu_check}
py=${PYTHON:-python3}
mkdir -p "$out"
cfg=configs/got_char.yaml
data=(--data.path data/pydoc_topics.txt --data.builtin_corpus pydoc)
gpu=(--trainer.accelerator gpu --trainer.devices 1 --trainer.enable_progress_bar false)

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$py -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, torch.cuda.get_device_name())"

for opts in "--trainer.precision 32-true" "--trainer.precision bf16-mixed" \
            "--trainer.precision bf16-mixed --model.compile true"; do
  echo "== throughput: $opts"
  # shellcheck disable=SC2086
  $py benchmarks/train_throughput.py --config $cfg --steps 120 --warmup 40 "${data[@]}" "${gpu[@]}" $opts
done

echo "== fit 300 steps, bf16-mixed + compile"
run=(--config $cfg "${data[@]}" --log_dir "$out" --experiment gpu_run --trainer.max_epochs -1)
$py -m craft fit "${run[@]}" "${gpu[@]}" --trainer.precision bf16-mixed --model.compile true \
  --trainer.max_steps 300 --trainer.val_check_interval 150 --checkpoint.last_every_n_steps 150
echo "== resume from last, fp32 eager, to step 350"
$py -m craft fit "${run[@]}" "${gpu[@]}" --trainer.max_steps 350 --trainer.val_check_interval 150 \
  --checkpoint.last_every_n_steps 50 --ckpt_path last
echo "== predict on the GPU"
$py -m craft predict "${run[@]}" "${gpu[@]}" --ckpt_path last --model.sampling.max_new_tokens 200 \
  --data.prompts '["The "]'
echo "== predict on the CPU from the same checkpoint"
$py -m craft predict "${run[@]}" --trainer.accelerator cpu --ckpt_path last \
  --model.sampling.max_new_tokens 200 --data.prompts '["The "]'
echo "== predict on the GPU with --model.compiled_decode true (CPU-only: must warn and generate eagerly)"
$py -m craft predict "${run[@]}" "${gpu[@]}" --ckpt_path last --model.sampling.max_new_tokens 200 \
  --data.prompts '["The "]' --model.compiled_decode true
echo "== predict on the CPU with --model.compiled_decode true (compiles the step once, then generates)"
$py -m craft predict "${run[@]}" --trainer.accelerator cpu --ckpt_path last \
  --model.sampling.max_new_tokens 200 --data.prompts '["The "]' --model.compiled_decode true
echo "== generation tokens/s on the GPU (batch 1 / 8 / 32, KV cache vs none)"
$py benchmarks/generation.py --device cuda --config $cfg --ckpt_path "$out/gpu_run/checkpoints/last.ckpt" \
  --new-tokens 500 --repeats 2 --batches 1,8,32
echo "GPU CHECK OK"
