#!/usr/bin/env bash
# The LibriSpeech recipe: a local LibriSpeech copy, then the model stages shared
# by every recipe (egs/common/stages.sh): teacher, streaming baseline, two-stage
# distillation, ablations, decoding dev-clean, dev-other, test-clean and test-other, results.
#
#   bash egs/librispeech/ASR/run.sh --corpus-dir DIR [--preset NAME] [--train-subsets "..."] ...
#
# Data stages (this recipe):
#   0  lhotse manifests of DIR (lhotse's prepare_librispeech) -> DATA_DIR/manifests
#   1  fbank features (training set with 0.9/1.1 speed-perturbed copies)   -> DATA_DIR/fbank
#   2  BPE model (sentencepiece, bpe_vocab)                   -> DATA_DIR/lang_bpe_<bpe_vocab>
# Recipe options:
#   --corpus-dir DIR           the folder holding LibriSpeech's subset folders (train-clean-100/,
#                              dev-clean/, dev-other/, test-clean/, test-other/, ...); required
#   --train-subsets "A B"      training subsets (default: the preset's preset_train_subsets; 960 h:
#                              "train-clean-100 train-clean-360 train-other-500")
#   --alignments-dir DIR       word alignments, <speaker>-<chapter>.alignment.txt in the corpus
#                              layout (default: none besides any in DIR). Sets without them get
#                              model-aligned reference times when the preset sets decode_align=teacher
#   --musan-dir DIR            MUSAN: its music and noise are mixed into training (default: none)
#   --download true|false      true: lhotse downloads missing subsets into the parent of DIR,
#                              which must be named LibriSpeech (default false: never downloads)
# Presets (conf/NAME.conf): micro (tests, CPU, minutes), medium (default; GPU, ~20 M
# pair), large (GPU, the paper's size, ~76 M pair), zipformer (GPU, Zipformer encoder). A relative --data-dir or
# --exp-dir is relative to this recipe's directory (default data/<preset>,
# exp/<preset>); the other relative paths to the directory run.sh is started from.
set -euo pipefail

recipe_dir=$(cd "$(dirname "$0")" && pwd)
preset=medium
corpus_dir=
train_subsets=
alignments_dir=
musan_dir=
download=false
recipe_options="corpus_dir train_subsets alignments_dir musan_dir download"
# shellcheck source=../../common/lib.sh
. "$recipe_dir/../../common/lib.sh"
parse_args "$@"
check_bool download "$download"
[ -n "$corpus_dir" ] || die "--corpus-dir is required: the folder holding LibriSpeech's subset folders (see --help)"
# relative paths given by the user are relative to where run.sh was started
corpus_dir=$(realpath -m "$corpus_dir")
[ -z "$alignments_dir" ] || alignments_dir=$(realpath -m "$alignments_dir")
[ -z "$musan_dir" ] || musan_dir=$(realpath -m "$musan_dir")
[ -d "$corpus_dir" ] || [ "$download" = true ] || die "--corpus-dir $corpus_dir: no such directory"
cd "$recipe_dir"
export PYTHONPATH="$recipe_dir/../../..${PYTHONPATH:+:$PYTHONPATH}"
load_preset
train_subsets=${train_subsets:-$preset_train_subsets}

train_set=train
dev_set=dev-clean
# evaluation sets besides dev-clean (beam search runs on these); a preset may narrow them
test_sets=${test_sets:-dev-other test-clean test-other}
lang_dir=$data/lang_bpe_${bpe_vocab}
noise_sets=
[ -z "$musan_dir" ] || { noise_sets=musan; train_args="${train_args:-} --noise-cuts $data/fbank/cuts_musan.jsonl.gz"; }

log "preset=$preset corpus=$corpus_dir train=[$train_subsets] data=$data exp_dir=$exp_dir stages $stage..$stop_stage"

if [ "$skip_setup" != true ]; then
  "$python" -c "import asr_kd, lhotse, soundfile" ||
    die "PYTHON=$python cannot import asr_kd, lhotse and soundfile: pip install -e $(realpath ../../..)"
fi

if run_stage 0; then
  key="corpus=$corpus_dir train=$train_subsets eval=$dev_set $test_sets alignments=$alignments_dir musan=$musan_dir"
  if stage_done "$data/.stage0.done" "$key"; then
    log "stage 0: manifests already prepared ($data/manifests)"
  else
    log "stage 0: lhotse manifests of $corpus_dir -> $data/manifests"
    start_stage 0
    move_aside "$data/manifests"
    "$python" local/prepare.py --corpus-dir "$corpus_dir" --out-dir "$data/manifests" \
      --train-subsets "$train_subsets" --eval-subsets "$dev_set $test_sets" --num-jobs "$num_jobs" \
      --download "$download" ${alignments_dir:+--alignments-dir "$alignments_dir"} \
      ${musan_dir:+--musan-dir "$musan_dir"}
    mark_done "$data/.stage0.done" "$key"
  fi
fi

if run_stage 1; then
  need 1 "$data/manifests/cuts_train_raw.jsonl.gz" 0
  key="manifests=$(cat "$data"/manifests/cuts_*_raw.jsonl.gz | sha256sum | cut -d' ' -f1) speed=$speed_perturb"
  if stage_done "$data/.stage1.done" "$key"; then
    log "stage 1: features already computed ($data/fbank)"
  else
    log "stage 1: fbank features ($data/fbank), speed perturbation [$speed_perturb], $num_jobs jobs"
    start_stage 1
    # shellcheck disable=SC2086  # the set lists
    fbank_sets "$data/manifests" "$speed_perturb" $train_set $dev_set $test_sets $noise_sets
    mark_done "$data/.stage1.done" "$key"
  fi
fi

run_stage 2 && bpe_stage 2 "$data/manifests/transcripts_train.txt"

# ---- model stages 3-9, the same for every corpus (data contract: egs/common/stages.sh)
# shellcheck source=../../common/stages.sh
. "$recipe_dir/../../common/stages.sh"
