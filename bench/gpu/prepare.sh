#!/usr/bin/env bash
# Fetch what the GPU check needs beyond the GPU machine's image into .whl/ (git-ignored), here,
# where PyPI answers; bench/gpu/check.sh installs it there, where nothing can be fetched.
#
#     bash bench/gpu/prepare.sh          # download the wheels and the tokenizer files
#     bash bench/gpu/prepare.sh --list   # print what it would fetch, download nothing
#
# The image (Python 3.12, torch, transformers, peft, accelerate, numpy, pandas, pyarrow, ...)
# lacks TRL, datasets, pydantic, sqlite-utils and bitsandbytes. The wheels below are the
# packages criticloop.training.worker, criticloop.settings and criticloop.store import that the
# image does not have, at this .venv's versions, for CPython 3.12 on manylinux x86_64.
# typing-extensions is on the image but pydantic needs >= 4.14.1: carried to be sure (45 KB).
# The bundled SmolLM2's weights (a 98 MB GGUF) cannot travel in the 64 MiB a run carries, so
# its config and tokenizer go to .whl/smollm2/ and check.sh builds the same shape with random
# weights. bitsandbytes (about 41 MiB) is fetched only if it fits in what is left.
set -euo pipefail

cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
DEST=.whl
LIMIT=$((64 * 1024 * 1024))
WHEELS=(
    trl datasets dill multiprocess
    pydantic pydantic-core pydantic-settings annotated-types typing-inspection python-dotenv
    typing-extensions
    sqlite-utils sqlite-fts4 click-default-group
    platformdirs
)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64
    manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)

list=0
case "${1:-}" in
    --list | --dry-run) list=1 ;;
    "") ;;
    *) echo "usage: bash bench/gpu/prepare.sh [--list]" >&2; exit 2 ;;
esac

version() {  # NAME -> the version installed in this .venv
    "$PYTHON" -c 'import sys, importlib.metadata as m; print(m.version(sys.argv[1]))' "$1"
}

specs=()
for name in "${WHEELS[@]}"; do
    specs+=("$name==$(version "$name")")
done
bnb="bitsandbytes==$(version bitsandbytes)"

if [ "$list" = 1 ]; then
    for spec in "${specs[@]}"; do
        wheel=$(ls "$DEST"/"$(echo "${spec%%==*}" | tr - _)"-"${spec##*==}"-*.whl 2>/dev/null | head -1 || true)
        echo "wheel $spec ${wheel:+(present: $wheel)}"
    done
    echo "wheel $bnb (only if it fits in 64 MiB with the rest)"
    echo "files $DEST/smollm2/: config.json, generation_config.json, tokenizer.json," \
        "tokenizer_config.json, chat_template.jinja of the bundled SmolLM2 (no weights)"
    exit 0
fi

pip_download() {  # DIR SPEC...
    local dir=$1
    shift
    local platform_args=()
    for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${platform_args[@]}" -d "$dir" "$@" 2>&1 | grep -v '^WARNING: Location' || true
}

mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # one version of each: two stop the install there
pip_download "$DEST" "${specs[@]}"
for spec in "${specs[@]}"; do
    ls "$DEST"/"$(echo "${spec%%==*}" | tr - _)"-"${spec##*==}"-*.whl >/dev/null 2>&1 \
        || { echo "no cp312 manylinux wheel for $spec was downloaded" >&2; exit 1; }
done

# The bundled policy's config and tokenizer, from criticloop's own conversion (done once).
"$PYTHON" - "$DEST/smollm2" <<'EOF'
import shutil, sys
from pathlib import Path
from criticloop.agents import policy_ref
from criticloop.settings import Settings

source = Path(policy_ref(Settings.load(env_file=None)).source)
target = Path(sys.argv[1])
target.mkdir(parents=True, exist_ok=True)
for name in ("config.json", "generation_config.json", "tokenizer.json",
             "tokenizer_config.json", "chat_template.jinja"):
    if (source / name).exists():
        shutil.copy2(source / name, target / name)
EOF

# What travels: the files git tracks or would add (shared/ included), plus what is carried.
repo_bytes=$("$PYTHON" - <<'EOF'
import os, subprocess
names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       capture_output=True, check=True).stdout.split(b"\0")
print(sum(os.path.getsize(n) for n in names if n and os.path.isfile(n)))
EOF
)
carried=$(du -sb "$DEST" | cut -f1)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pip_download "$tmp" "$bnb"
bnb_bytes=$(du -cb "$tmp"/*.whl | tail -1 | cut -f1)
if [ $((repo_bytes + carried + bnb_bytes)) -le "$LIMIT" ]; then
    mv "$tmp"/*.whl "$DEST"/
    carried=$(du -sb "$DEST" | cut -f1)
    echo "$bnb fits ($(mib "$bnb_bytes")): carried, so the QLoRA step runs"
else
    echo "$bnb does not fit ($(mib "$bnb_bytes")): left out, so the QLoRA step is skipped"
fi

ls -l "$DEST"/*.whl | awk '{ printf "%10d  %s\n", $5, $9 }'
echo "carried $DEST: $(mib "$carried") (wheels $(du -cb "$DEST"/*.whl | tail -1 | cut -f1) bytes," \
    "smollm2 files $(du -sb "$DEST/smollm2" | cut -f1) bytes); repo: $(mib "$repo_bytes");" \
    "together $(mib $((repo_bytes + carried))) of 64 MiB"
if [ $((repo_bytes + carried)) -gt "$LIMIT" ]; then
    echo "too large: $(mib $((repo_bytes + carried))) is over the 64 MiB a run carries" >&2
    exit 1
fi
