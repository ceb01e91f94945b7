#!/usr/bin/env bash
# The synth recipe: an offline multi-voice English corpus, then (later stages)
# teacher, streaming baseline, two-stage distillation, decoding and results.
#
#   bash run.sh [--stage N] [--stop-stage M] [--preset tiny|small|full] [--exp-dir DIR]
#               [--num-jobs J] [--skip-setup true]
#
# Stages:
#   0  corpus: synthesise speech + word times  -> data/<preset>/corpus
#   1  lhotse manifests + fbank features       -> data/<preset>/{manifests,fbank}
#   2  BPE model (sentencepiece)                -> data/<preset>/lang_bpe_<vocab>
#   3  full-context teacher                     -> EXP_DIR/teacher/pretrained.pt
#   4  streaming baseline (chunk-wise student)  -> EXP_DIR/baseline/pretrained.pt
#
# Each stage writes data/<preset>/.stageN.done (or EXP_DIR/.stageN.done for
# experiment stages) when it has finished, holding the settings it ran with; a
# rerun skips a stage whose marker matches its settings and redoes a stage that
# was interrupted or whose settings changed (the corpus builder keeps the
# utterances that are already built). Redoing a stage removes the markers of
# all later stages, so they are redone too. Presets live in conf/<preset>.conf.
set -euo pipefail

cd "$(dirname "$0")"
recipe_dir=$(pwd)
export PYTHONPATH="$recipe_dir/../../..${PYTHONPATH:+:$PYTHONPATH}"

stage=0
stop_stage=100
preset=small
exp_dir=
num_jobs=$(nproc 2>/dev/null || echo 2)
skip_setup=false

while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage="$2"; shift 2 ;;
    --stop-stage|--stop_stage) stop_stage="$2"; shift 2 ;;
    --preset) preset="$2"; shift 2 ;;
    --exp-dir|--exp_dir) exp_dir="$2"; shift 2 ;;
    --num-jobs|--num_jobs) num_jobs="$2"; shift 2 ;;
    --skip-setup) skip_setup="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

conf=conf/${preset}.conf
[ -f "$conf" ] || { echo "run.sh: no preset '$preset' ($conf missing; have: $(ls conf | sed 's/\.conf//' | tr '\n' ' '))" >&2; exit 2; }
# shellcheck source=conf/small.conf
. "$conf"

data=data/${preset}
exp_dir=${exp_dir:-exp/${preset}}
python=${PYTHON:-python3}
train_set=train
dev_set=dev
test_sets="test_seen test_heldout"
eval_sets="$dev_set $test_sets"
lang_dir=$data/lang_bpe_${bpe_vocab}
mkdir -p "$data" "$exp_dir"

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') [run.sh] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
# stage_done MARKER KEY: the stage finished before with the same settings
stage_done() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }
mark_done() { echo "$2" > "$1.tmp" && mv "$1.tmp" "$1"; }
# start_stage N: stage N is (re)done, so everything after it is out of date
start_stage() {
  local n m
  n=$1
  for m in $(seq "$n" 99); do rm -f "$data/.stage$m.done" "$exp_dir/.stage$m.done"; done
}

log "preset=$preset data=$data exp_dir=$exp_dir stages $stage..$stop_stage num_jobs=$num_jobs"

if [ "$skip_setup" != true ]; then
  need_debs=false
  run_stage 0 && need_debs=true
  PYTHON=$python bash local/setup.sh --debs "$need_debs" --python true
fi

if run_stage 0; then
  key="$(grep '^BUILDER_VERSION' local/build_corpus.py) train=$train_utts dev=$dev_utts test_seen=$test_seen_utts test_heldout=$test_heldout_utts babble=$babble_utts seed=$corpus_seed snr=$snr_range text=$text_weights"
  if stage_done "$data/.stage0.done" "$key"; then
    log "stage 0: corpus already built ($data/corpus)"
  else
    log "stage 0: synthesising the corpus into $data/corpus"
    start_stage 0
    "$python" local/build_corpus.py --out-dir "$data/corpus" \
      --train "$train_utts" --dev "$dev_utts" --test-seen "$test_seen_utts" --test-heldout "$test_heldout_utts" \
      --num-babble "$babble_utts" --seed "$corpus_seed" --snr "$snr_range" --text-weights "$text_weights" \
      --num-jobs "$num_jobs"
    mark_done "$data/.stage0.done" "$key"
  fi
fi

if run_stage 1; then
  key="corpus=$(cat "$data/corpus/plan.jsonl" "$data/corpus/failed.txt" 2>/dev/null | sha256sum | cut -d' ' -f1) sets=$train_set,$eval_sets"
  if stage_done "$data/.stage1.done" "$key"; then
    log "stage 1: manifests and features already computed ($data/fbank)"
  else
    log "stage 1: lhotse manifests ($data/manifests) and fbank features ($data/fbank)"
    start_stage 1
    "$python" local/make_manifests.py --corpus-dir "$data/corpus" --out-dir "$data/manifests"
    for part in $train_set $eval_sets; do
      rm -rf "$data/fbank/feats_$part"
      "$python" -m asr_kd.bin.compute_fbank --cuts "$data/manifests/cuts_${part}_raw.jsonl.gz" \
        --out-cuts "$data/fbank/cuts_${part}.jsonl.gz" --storage "$data/fbank/feats_$part" \
        --num-jobs "$num_jobs" --force
    done
    mark_done "$data/.stage1.done" "$key"
  fi
fi

if run_stage 2; then
  key="vocab=$bpe_vocab transcripts=$(sha256sum "$data/manifests/transcripts_train.txt" 2>/dev/null | cut -d' ' -f1)"
  if stage_done "$data/.stage2.done" "$key"; then
    log "stage 2: BPE model already trained ($lang_dir/bpe.model)"
  else
    log "stage 2: BPE model, vocabulary $bpe_vocab -> $lang_dir"
    start_stage 2
    "$python" -m asr_kd.bin.train_bpe --transcripts "$data/manifests/transcripts_train.txt" \
      --out-dir "$lang_dir" --vocab-size "$bpe_vocab"
    mark_done "$data/.stage2.done" "$key"
  fi
fi

# ---- experiment stages: every model is trained by the same entry point ----
cuts_train=$data/fbank/cuts_${train_set}.jsonl.gz
cuts_dev=$data/fbank/cuts_${dev_set}.jsonl.gz
bpe_model=$lang_dir/bpe.model
common_train_args=(--cuts-train "$cuts_train" --cuts-valid "$cuts_dev" --bpe-model "$bpe_model"
  --preset "$model_preset" --max-duration "$max_duration" --num-workers "$num_workers" --lr "$lr"
  --warmup-batches "$warmup_batches" --lr-batches "$lr_batches" --lr-epochs "$lr_epochs"
  --warm-step "$warm_step" --avg "$avg" --seed 42)
student_args=(--causal true --chunk-size "$chunk_size" --left-context "$left_context")

# train_model STAGE NAME ARGS...: trains $exp_dir/NAME unless its marker matches
# the arguments; an interrupted run resumes from its newest checkpoint.
train_model() {
  local n=$1 name=$2 key
  shift 2
  key="$*"
  if stage_done "$exp_dir/$name/.done" "$key" && [ -f "$exp_dir/$name/pretrained.pt" ]; then
    log "stage $n: $name already trained ($exp_dir/$name/pretrained.pt)"
    return 0
  fi
  log "stage $n: training $name -> $exp_dir/$name"
  if [ -f "$exp_dir/$name/.done" ]; then  # settings changed: start over
    rm -rf "$exp_dir/$name"
  fi
  mkdir -p "$exp_dir/$name"
  "$python" -m asr_kd.bin.train --exp-dir "$exp_dir/$name" --resume "$@"
  mark_done "$exp_dir/$name/.done" "$key"
}

if run_stage 3; then
  train_model 3 teacher "${common_train_args[@]}" --causal false --num-epochs "$teacher_epochs"
fi

if run_stage 4; then
  train_model 4 baseline "${common_train_args[@]}" "${student_args[@]}" --num-epochs "$student_epochs"
fi

log "done (stages $stage..$stop_stage)"
