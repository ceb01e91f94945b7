#!/usr/bin/env bash
# Installs what the tests need on a fresh Python 3.11 + Debian machine, then runs them.
# torch==2.13.0 (the CPU wheel) is installed first when no torch is present, so pip
# never resolves the bare "torch>=2.1" requirement to a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "[test.sh] no torch found: installing torch==2.13.0 (CPU wheel)"
  "$PY" -m pip install -q torch==2.13.0
fi

echo "[test.sh] installing asr_kd with its test extras"
"$PY" -m pip install -q -e ".[test,export]"

# Debian packages the corpus and end-to-end tests use (text-to-speech engines, voices,
# sox, text sources): the same list as egs/synth/ASR/local/setup.sh.
DEB_PKGS="sox espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts fortunes bible-kjv wordnet-base"
missing=""
for p in $DEB_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = "0" ]; then
    echo "[test.sh] installing Debian packages:$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
  else
    echo "[test.sh] missing Debian packages:$missing -- run: sudo apt-get install -y$missing" >&2
  fi
fi

exec "$PY" -m pytest -q tests "$@"
