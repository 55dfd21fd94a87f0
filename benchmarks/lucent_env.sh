#!/usr/bin/env bash
# Lucent 0.1.8 (the PyTorch port of Lucid) in a virtual environment of its own, for
# benchmarks/bench_lucent.py. It reuses .venv's torch and torchvision (a .pth file adds .venv's
# site-packages after its own), so nothing of Lucent enters the project's environment and no second
# copy of torch is downloaded. Run .ci/setup first. Usage: bash benchmarks/lucent_env.sh [VENV]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-work_cache/lucent-venv}
[ -x .venv/bin/python ] || { echo "error: .venv not found; run bash .ci/setup first" >&2; exit 2; }
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
SITE=$(.venv/bin/python -c "import site; print(site.getsitepackages()[0])")
OWN=$("$VENV/bin/python" -c "import site; print(site.getsitepackages()[0])")
echo "import site; site.addsitedir('$SITE')" > "$OWN/dgnam-venv-torch.pth"
# Lucent pins kornia<=0.4.1; its test and notebook dependencies are not needed to run it
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps torch-lucent==0.1.8 kornia==0.4.1 decorator future
"$VENV/bin/python" -c "import lucent, kornia; print('Lucent', lucent.__name__, 'with kornia', kornia.__version__, 'in $VENV')"
