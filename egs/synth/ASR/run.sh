#!/usr/bin/env bash
# The synth recipe: an offline multi-voice English corpus, then the model stages
# shared by every recipe (egs/common/stages.sh): teacher, streaming baseline,
# two-stage distillation, ablations, decoding and results.
#
#   bash egs/synth/ASR/run.sh [--stage N] [--stop-stage M] [--preset NAME] [--exp-dir DIR] ...
#
# Data stages (this recipe):
#   0  corpus: synthesise speech + word times  -> DATA_DIR/corpus
#   1  lhotse manifests + fbank features       -> DATA_DIR/{manifests,fbank}
#   2  BPE model (sentencepiece)                -> DATA_DIR/lang_bpe_<bpe_vocab>
# Presets (conf/NAME.conf): small (default: closed 1k-word vocabulary, clean, <= 1 h
# on 2 cores), long (2k words, mild degradation, ~4 h), open (open vocabulary, full
# degradation), full (open, ~34 h of audio: GPUs), zipformer (small's task, Zipformer
# encoder), tiny (smoke), micro (tests).
# Relative DATA_DIR/EXP_DIR are relative to this recipe's directory (default
# data/<preset>, exp/<preset>).
set -euo pipefail

recipe_dir=$(cd "$(dirname "$0")" && pwd)
cd "$recipe_dir"
export PYTHONPATH="$recipe_dir/../../..${PYTHONPATH:+:$PYTHONPATH}"

recipe_options=""  # this recipe has only the common options
# shellcheck source=../../common/lib.sh
. "$recipe_dir/../../common/lib.sh"
parse_args "$@"
load_preset

train_set=train
dev_set=dev
test_sets="test_seen test_heldout"
eval_sets="$dev_set $test_sets"
lang_dir=$data/lang_bpe_${bpe_vocab}

log "preset=$preset data=$data exp_dir=$exp_dir stages $stage..$stop_stage num_jobs=$num_jobs"

if [ "$skip_setup" != true ]; then
  need_debs=false
  run_stage 0 && need_debs=true
  PYTHON=$python bash local/setup.sh --debs "$need_debs" --python true
fi

# corpus settings a preset may leave out: open vocabulary, one read per sentence, full degradation
vocab_size=${vocab_size:-0}
min_words=${min_words:-4}
max_words=${max_words:-14}
train_reads=${train_reads:-1}
degradation=${degradation:-full}
if run_stage 0; then
  key="$(grep '^BUILDER_VERSION' local/build_corpus.py) train=$train_utts dev=$dev_utts test_seen=$test_seen_utts test_heldout=$test_heldout_utts babble=$babble_utts seed=$corpus_seed snr=$snr_range text=$text_weights"
  # closed-vocabulary and degradation settings join the key only when a preset sets them,
  # so corpora built before they existed stay up to date
  [ "$vocab_size" = 0 ] || key="$key vocab=$vocab_size words=$min_words-$max_words reads=$train_reads"
  [ "$degradation" = full ] || key="$key degradation=$degradation"
  if stage_done "$data/.stage0.done" "$key"; then
    log "stage 0: corpus already built ($data/corpus)"
  else
    log "stage 0: synthesising the corpus into $data/corpus"
    start_stage 0
    "$python" local/build_corpus.py --out-dir "$data/corpus" \
      --train "$train_utts" --dev "$dev_utts" --test-seen "$test_seen_utts" --test-heldout "$test_heldout_utts" \
      --num-babble "$babble_utts" --seed "$corpus_seed" --snr "$snr_range" --text-weights "$text_weights" \
      --vocab-size "$vocab_size" --min-words "$min_words" --max-words "$max_words" --train-reads "$train_reads" \
      --degradation "$degradation" --num-jobs "$num_jobs"
    mark_done "$data/.stage0.done" "$key"
  fi
fi

if run_stage 1; then
  need 1 "$data/corpus/plan.jsonl" 0
  key="corpus=$(cat "$data/corpus/plan.jsonl" "$data/corpus/failed.txt" 2>/dev/null | sha256sum | cut -d' ' -f1) sets=$train_set,$eval_sets"
  if stage_done "$data/.stage1.done" "$key"; then
    log "stage 1: manifests and features already computed ($data/fbank)"
  else
    log "stage 1: lhotse manifests ($data/manifests) and fbank features ($data/fbank)"
    start_stage 1
    "$python" local/make_manifests.py --corpus-dir "$data/corpus" --out-dir "$data/manifests"
    # shellcheck disable=SC2086  # eval_sets is a list
    fbank_sets "$data/manifests" "" $train_set $eval_sets
    mark_done "$data/.stage1.done" "$key"
  fi
fi

run_stage 2 && bpe_stage 2 "$data/manifests/transcripts_train.txt"

# ---- model stages 3-9, the same for every corpus (data contract: egs/common/stages.sh)
# shellcheck source=../../common/stages.sh
. "$recipe_dir/../../common/stages.sh"
