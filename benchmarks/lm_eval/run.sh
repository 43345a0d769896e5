#!/usr/bin/env bash
# Run lm-evaluation-harness (lm_eval 0.4.x, model type local-completions) on the
# llmtui_capitals task against an llmtui server already running on loopback:
#
#     llmtui serve --port 8000 &
#     benchmarks/lm_eval/run.sh            # port 8000
#     benchmarks/lm_eval/run.sh 8080       # another port
#
# Environment (all optional):
#   LM_EVAL    the lm_eval executable (default: lm_eval on PATH)
#   MODEL      the model id to send (default: the loaded one, from GET /v1/models)
#   TOKENIZER  a local Hugging Face tokenizer dir: use tokenizer_backend=huggingface with it
#              (needs transformers in lm_eval's venv). Unset: tokenizer_backend=remote, i.e. the
#              server's own GET /tokenizer_info, POST /tokenize, POST /detokenize.
#   TOKENIZED  1: send prompts as token ids ("prompt": [[ids]]); default 0: as text
#   LIMIT      evaluate only the first N items
#   OUTPUT     a folder for lm_eval's results and per-sample log (--output_path --log_samples)
#   OPENAI_API_KEY  the server's --api-key, if it has one
# Extra arguments after the port go to lm_eval as they are.
set -euo pipefail

PORT="${1:-8000}"
shift || true
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"   # the task's data_files path is relative to the repository root

LM_EVAL="${LM_EVAL:-lm_eval}"
BASE="http://127.0.0.1:${PORT}"

if [[ -z "${MODEL:-}" ]]; then
    MODEL="$(python3 - "$BASE" <<'EOF'
import json, os, sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/v1/models")
if os.environ.get("OPENAI_API_KEY"):
    req.add_header("Authorization", "Bearer " + os.environ["OPENAI_API_KEY"])
data = json.load(urllib.request.urlopen(req, timeout=10))["data"]
loaded = [m["id"] for m in data if m.get("loaded")] or [m["id"] for m in data]
print(loaded[0])
EOF
)"
fi

ARGS="model=${MODEL},base_url=${BASE}/v1/completions,num_concurrent=1,max_retries=1"
if [[ "${TOKENIZED:-0}" == 1 ]]; then
    ARGS+=",tokenized_requests=True"
else
    ARGS+=",tokenized_requests=False"
fi
if [[ -n "${TOKENIZER:-}" ]]; then
    ARGS+=",tokenizer_backend=huggingface,tokenizer=${TOKENIZER}"
else
    ARGS+=",tokenizer_backend=remote"
    if [[ -n "${OPENAI_API_KEY:-}" ]]; then
        ARGS+=",auth_token=${OPENAI_API_KEY}"   # the tokenizer endpoints' requests carry only this one
    fi
fi

EXTRA=()
[[ -n "${LIMIT:-}" ]] && EXTRA+=(--limit "$LIMIT")
[[ -n "${OUTPUT:-}" ]] && EXTRA+=(--output_path "$OUTPUT" --log_samples)

# nothing from a hub: the task reads benchmarks/lm_eval/capitals.jsonl; and 2 cores at most
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}" \
       MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}" RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-1}" \
       TOKENIZERS_PARALLELISM=false

set -x
"$LM_EVAL" --model local-completions --model_args "$ARGS" \
    --tasks llmtui_capitals --include_path benchmarks/lm_eval --batch_size 1 \
    "${EXTRA[@]}" "$@"
