#!/usr/bin/env bash
# The README's test command: every test of the workspace, from a fresh clone.
#
# Needs Rust 1.90+ (cargo), Node 20+ and npm. Installs, pinned by chain-anchor/package-lock.json
# and only where missing or stale: solc-js and OpenZeppelin (to check that the committed contract
# artifacts of chain-anchor and dao are what the sources compile to), anvil and cast (npm
# @foundry-rs/anvil and @foundry-rs/cast, for the tests against a real chain node). Then runs
# `cargo test --workspace --features fl-client/wgpu` with any extra arguments.
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "scripts/test.sh: $1 not found: $2" >&2; exit 1; }
}
need cargo "install Rust 1.90 or newer (https://rustup.rs)"
need node "install Node 20 or newer"
need npm "install npm (it comes with Node)"

# Contract packages: each has a package-lock.json and scripts/compile.mjs.
for dir in chain-anchor; do
    lock="$dir/package-lock.json"
    stamp="$dir/node_modules/.package-lock.json"
    if [ ! -f "$stamp" ] || [ "$lock" -nt "$stamp" ]; then
        echo "scripts/test.sh: installing the pinned npm tools of $dir"
        (cd "$dir" && npm ci --no-audit --no-fund)
    fi
    (cd "$dir" && node scripts/compile.mjs --check)
done

# dao: its contracts compile with chain-anchor's node_modules (same pins, no package.json of
# its own).
node dao/scripts/compile.mjs --check

export DAOFL_ANVIL="${DAOFL_ANVIL:-$PWD/chain-anchor/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil}"
"$DAOFL_ANVIL" --version | head -1

# fl-client's `wgpu` feature is compiled into the test build so that its agreement tests
# (training on wgpu matches the CPU backend) run; they need a Vulkan driver, which .ci/run
# installs (Mesa's lavapipe: apt-get install mesa-vulkan-drivers libvulkan1).
if ! compgen -G "/usr/share/vulkan/icd.d/*.json" >/dev/null \
    && ! compgen -G "/etc/vulkan/icd.d/*.json" >/dev/null; then
    echo "scripts/test.sh: no Vulkan driver found; the wgpu tests will fail." \
        "Install one: apt-get install mesa-vulkan-drivers libvulkan1" >&2
fi

cargo test --workspace --features fl-client/wgpu "$@"
