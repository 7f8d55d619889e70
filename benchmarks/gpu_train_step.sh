#!/usr/bin/env bash
# The ResNet-50 + BERT-base MSA training step on one CUDA GPU: bf16 autocast, channels_last, TF32.
#
#   bash benchmarks/gpu_train_step.sh            # from the repository root
#
# Installs nothing: it needs a Python with torch (CUDA build), timm, transformers, tokenizers,
# pillow and pyyaml (the project's own dependencies; Ray is not used). PYTHON picks the
# interpreter (default: .venv/bin/python if present, else python3). It writes gpu.json (samples/s,
# peak GPU memory, the data loader's rate beside the step's) to $OUT when set, else to
# results/bench/. Takes about a minute on an H100 (most of it writing the synthetic images);
# exits 2 without a CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
DEST="${OUT:-results/bench}"
mkdir -p "$DEST"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false

if ! "$PYTHON" - <<'EOF'
import importlib.util, sys
missing = [m for m in ("torch", "timm", "transformers", "tokenizers", "PIL", "yaml")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_train_step.sh: missing Python packages: {', '.join(missing)}")
import torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_train_step.sh: no CUDA device visible to torch {torch.__version__} "
             f"(CUDA build: {torch.version.cuda}); this benchmark needs a GPU")
print(f"[gpu] {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
then
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

"$PYTHON" -m benchmarks.bench_train_step --case big --device cuda --amp bf16 --channels-last \
    --tf32 --warmup 5 --steps 30 --json "$DEST/gpu.json" > /dev/null
"$PYTHON" - "$DEST/gpu.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"[gpu] {r['device_name']}: {r['params_m']:.0f}M params, batch {r['spec']['batch_size']}, "
      f"{r['spec']['image_size']} px, bf16 + channels_last + TF32")
print(f"[gpu] train step {r['step_samples_per_s']:.0f} samples/s ({1000 * r['step_s']:.0f} ms), "
      f"peak GPU memory {r['peak_gpu_mem_gib']:.2f} GiB allocated / "
      f"{r['peak_gpu_reserved_gib']:.2f} GiB reserved")
print(f"[gpu] loader ({r['loader_workers']} workers): {r['loader_cold_samples_per_s']:.0f} "
      f"samples/s first epoch ({r['loader_cold_over_step']:.2f}x the step), "
      f"{r['loader_cached_samples_per_s']:.0f} cached ({r['loader_cached_over_step']:.2f}x)")
print(f"[gpu] wrote {sys.argv[1]}")
EOF
