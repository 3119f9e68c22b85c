#!/usr/bin/env bash
# Creates benchmarks/peer/.venv-joeynmt: a venv separate from the project's, holding the peer
# system (JoeyNMT 2.3.0) on torch 2.14.1. Idempotent: re-running only installs what is missing.
#
# JoeyNMT 2.3.0's wheel pins protobuf<3.21 and pulls in a dev toolchain (pylint, yapf, flake8,
# pytest, plotly, ...) that it never imports at run time. We first try the full install; if the
# resolver fails on Python 3.11, we fall back to `--no-deps` plus the subset that `joeynmt train`
# and `joeynmt test` import (see RUNTIME_DEPS), and say so.
#   nice -n 19 bash benchmarks/peer/setup_joeynmt.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${JOEYNMT_VENV:-$HERE/.venv-joeynmt}"
PY="${PYTHON:-python3}"
TORCH_VERSION=2.14.1
JOEYNMT_VERSION=2.3.0
# What joeynmt 2.3.0 imports when training/testing/translating (checked against its source):
RUNTIME_DEPS=(numpy pyyaml sacrebleu subword-nmt "sentencepiece==0.2.0" tensorboard
              matplotlib seaborn pillow packaging importlib-metadata)
# joeynmt/helpers.py does `import importlib_metadata`, which its wheel does not declare.
UNDECLARED_DEPS=(importlib-metadata)
# joeynmt/tokenizers.py calls SentencePieceProcessor.SetVocabulary, which sentencepiece >= 0.2.1
# no longer has (AttributeError when a sentencepiece model is used): pin the release of its time.
SENTENCEPIECE_VERSION=0.2.0

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
# pip warns about absent local index folders ("Location ... is ignored"); drop that noise.
pip_install() {
    "$VENV/bin/python" -m pip --disable-pip-version-check -q install "$@" \
        2> >(grep -v "^WARNING: Location .* is ignored" >&2)
}

if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
    pip_install "torch==$TORCH_VERSION"
fi

if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('joeynmt') != '$JOEYNMT_VERSION')" 2>/dev/null; then
    if ! pip_install "joeynmt==$JOEYNMT_VERSION" "torch==$TORCH_VERSION" "sentencepiece==$SENTENCEPIECE_VERSION"; then
        echo "setup_joeynmt: full dependency install failed; using --no-deps + runtime subset" >&2
        pip_install "${RUNTIME_DEPS[@]}" "torch==$TORCH_VERSION"
        pip_install --no-deps "joeynmt==$JOEYNMT_VERSION"
    fi
fi
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('sentencepiece') != '$SENTENCEPIECE_VERSION')" 2>/dev/null; then
    pip_install "sentencepiece==$SENTENCEPIECE_VERSION"
fi
if ! "$VENV/bin/python" -c "import importlib_metadata" 2>/dev/null; then
    pip_install "${UNDECLARED_DEPS[@]}"
fi

"$VENV/bin/python" - <<'PY'
import importlib.metadata as m
import sys
print("python", sys.version.split()[0])
for name in ("torch", "joeynmt", "sacrebleu", "subword-nmt", "sentencepiece", "numpy", "protobuf"):
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        print(name, "(not installed)")
import joeynmt.training, joeynmt.prediction  # noqa: E401,F401  (fails loudly if a runtime dep is missing)
import sentencepiece
assert hasattr(sentencepiece.SentencePieceProcessor, "SetVocabulary"), "joeynmt needs SetVocabulary"
print("import joeynmt: ok")
PY
