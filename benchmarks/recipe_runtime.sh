#!/bin/bash
# The torch-free int8 runtime's speed, speedrun recipe (the configs' default) against the classic block,
# at the quickstart and got_char shapes. Weights do not change speed, so each model trains 2 steps.
#   bash benchmarks/recipe_runtime.sh        (from the repository root; about 2 minutes on 2 cores)
# Prints the runtime's own seconds for 1,000 new tokens (`python -m craft run DIR --int8`), three
# rounds alternating the four models, and each int8 graph's node count.
set -e
PY=${PY:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for shape in quickstart got_char; do
  for recipe in speedrun classic; do
    extra=(); [ "$recipe" = classic ] && extra=(--config configs/presets/classic.yaml)
    $PY -m craft fit --config "configs/$shape.yaml" "${extra[@]}" --data.path data/pydoc_topics.txt \
      --data.builtin_corpus pydoc --experiment "${shape}_$recipe" --log_dir "$work/logs" --trainer.max_steps 2 \
      --samples.every_n_steps 0 --samples.at_end false --trainer.enable_progress_bar false > /dev/null 2>&1
    $PY -m craft export --ckpt_path "$work/logs/${shape}_$recipe/checkpoints/last.ckpt" \
      --out "$work/export/${shape}_$recipe" --int8 > /dev/null 2>&1
    nodes=$($PY -c "import onnx, sys; print(len(onnx.load(sys.argv[1]).graph.node))" "$work/export/${shape}_$recipe/model.int8.onnx")
    echo "$shape $recipe: $nodes int8 graph nodes"
  done
done
for round in 1 2 3; do
  for shape in quickstart got_char; do
    for recipe in speedrun classic; do
      s=$($PY -m craft run "$work/export/${shape}_$recipe" --int8 --prompt "The " --max_new_tokens 1000 \
        --temperature 0.8 --seed 0 2>&1 > /dev/null | tail -1)
      echo "round $round $shape $recipe: 1000 new tokens in $s"
    done
  done
done
