#!/usr/bin/env bash
# The GPU check in one command, on a bare CUDA machine (Python 3.12 with torch, transformers,
# peft, accelerate; no network), after bench/gpu/prepare.sh filled .whl/ here:
#
#     bash bench/gpu/check.sh              # the checks; results in $OUT/gpu-check.json
#     bash bench/gpu/check.sh --dry-run    # the plan: steps, settings, wheels; no GPU needed
#
# It installs the carried wheels into /tmp/site, makes `import criticloop` work from this
# checkout (the repository root is the package: a link /tmp/criticloop-src/criticloop points at
# it, since a link made here would not travel), and runs bench/gpu/check.py. Without a CUDA GPU
# it refuses (exit 2) unless --dry-run or --cpu-smoke is given. Other options go to check.py.
set -uo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-python3}
case " $* " in
    *" --dry-run "*)
        exec "$PYTHON" "$repo/bench/gpu/check.py" "$@" ;;
    *" --cpu-smoke "*) ;;
    *)
        if ! { command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q GPU; }; then
            echo "no CUDA GPU here (nvidia-smi finds none): run this on the GPU machine, or --dry-run" >&2
            exit 2
        fi ;;
esac

site=${CHECK_SITE:-/tmp/site}
wheels=${CHECK_WHEELS:-$repo/.whl}  # both overridable for a rehearsal on another Python
if compgen -G "$wheels/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "$wheels"/*.whl || { echo "installing $wheels/*.whl failed" >&2; exit 1; }
else
    echo "no wheels in .whl/: run bash bench/gpu/prepare.sh where PyPI answers, and carry .whl" >&2
fi
src=$(mktemp -d /tmp/criticloop-src.XXXXXX)
ln -s "$repo" "$src/criticloop"
export PYTHONPATH="$src:$site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
exec "$PYTHON" "$repo/bench/gpu/check.py" "$@"
