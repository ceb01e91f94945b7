#!/usr/bin/env bash
# Set-up for the synth recipe: makes sure what the recipe runs on is installed.
#
#   local/setup.sh [--debs true|false] [--python true|false]
#
# --debs: the Debian packages of the corpus builder (text-to-speech engines and
#   voices, sox, the text sources). Missing ones are installed with apt-get when
#   running as root; otherwise the exact command is printed and we exit 1.
# --python: the asr_kd package. If `import asr_kd` (or one of its main
#   requirements) fails it is installed with
#   `pip install -e <repo>`; when no torch is present, torch==2.13.0 (the CPU
#   wheel) is installed first so pip does not pull a multi-GB CUDA build.
# Every install is announced before it runs.
set -euo pipefail

debs=true
python_pkg=true
while [ $# -gt 0 ]; do
  case "$1" in
    --debs) debs="$2"; shift 2 ;;
    --python) python_pkg="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../../.." && pwd)
PY=${PYTHON:-python3}

# Debian package -> what the recipe uses it for
DEB_PKGS=(
  sox                  # resampling and effects
  espeak-ng            # espeak-ng engine (libespeak-ng), 8 English accents
  flite                # flite engine (libflite) with kal16, awb, rms, slt
  festival             # festival engine
  festvox-kallpc16k    # festival voice kal_diphone
  festvox-kdlpc16k     # festival voice ked_diphone
  festvox-us-slt-hts   # festival voice cmu_us_slt_arctic_hts
  fortunes             # text: fortune cookies (BSD-style)
  bible-kjv            # text: King James Bible reader (pulls bible-kjv-text)
  wordnet-base         # text: WordNet glosses
)

if [ "$debs" = true ]; then
  missing=()
  for p in "${DEB_PKGS[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      echo "[setup] installing Debian packages: ${missing[*]}"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
      echo "[setup] missing Debian packages: ${missing[*]}" >&2
      echo "[setup] run:  sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
      exit 1
    fi
  else
    echo "[setup] Debian packages present: ${DEB_PKGS[*]}"
  fi
fi

if [ "$python_pkg" = true ]; then
  # asr_kd may be importable through PYTHONPATH without its requirements: check those too
  if ! "$PY" -c "import asr_kd, lhotse, sentencepiece, kaldi_native_fbank, kaldialign, soundfile, tqdm" >/dev/null 2>&1; then
    if ! "$PY" -c "import torch" >/dev/null 2>&1; then
      echo "[setup] no torch found: installing torch==2.13.0 (CPU wheel)"
      "$PY" -m pip install -q torch==2.13.0
    fi
    echo "[setup] installing the asr_kd package and its requirements: pip install -e $repo"
    "$PY" -m pip install -q -e "$repo"
  else
    echo "[setup] Python package asr_kd present ($("$PY" -c 'import asr_kd, os; print(os.path.dirname(asr_kd.__file__))'))"
  fi
fi
