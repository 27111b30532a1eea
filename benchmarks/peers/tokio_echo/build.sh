#!/usr/bin/env bash
# Builds the Tokio echo peer offline, from Debian's packaged crates (librust-tokio-dev).
#
#   build.sh [TARGET_DIR]     (default: <repo>/build/tokio)
#
# Never touches ~/.cargo: cargo runs with CARGO_HOME=TARGET_DIR/cargo-home, whose
# config.toml replaces crates.io with /usr/share/cargo/registry and forbids the network.
# The package is staged in TARGET_DIR/pkg so that Cargo.lock lands there, not in the
# source tree (cargo versions disagree on the lock format). On success the last line
# printed is the binary's path, TARGET_DIR/release/tokio_echo.
# Exit status: 0 built, 1 the build failed, 3 skipped (cargo or tokio's crates missing).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
target_dir="${1:-$here/../../../build/tokio}"
registry=/usr/share/cargo/registry

if ! command -v cargo >/dev/null 2>&1; then
    echo "skip: cargo not installed (apt-get install cargo librust-tokio-dev)"
    exit 3
fi
if ! compgen -G "$registry/tokio-1.*" >/dev/null; then
    echo "skip: librust-tokio-dev not installed"
    exit 3
fi

mkdir -p "$target_dir"
target_dir="$(cd "$target_dir" && pwd)"

cargo_home="$target_dir/cargo-home"
mkdir -p "$cargo_home"
cat >"$cargo_home/config.toml" <<EOF
[source.crates-io]
replace-with = "debian"

[source.debian]
directory = "$registry"

[net]
offline = true
EOF

# Stage the sources; -p keeps their mtimes, so an unchanged tree rebuilds nothing. The
# lock is re-resolved every time (one version of each crate in the registry: the same
# result), which also keeps a lock from a newer cargo away from an older one.
pkg="$target_dir/pkg"
rm -rf "$pkg/src"
mkdir -p "$pkg"
cp -p "$here/Cargo.toml" "$pkg/Cargo.toml"
cp -pR "$here/src" "$pkg/src"
rm -f "$pkg/Cargo.lock"

export CARGO_HOME="$cargo_home"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
# (rustup proxies, if that is the cargo found, keep using RUSTUP_HOME=~/.rustup.)

if ! cargo build --release --offline \
        --manifest-path "$pkg/Cargo.toml" --target-dir "$target_dir"; then
    echo "error: cargo build of tokio_echo failed" >&2
    exit 1
fi

binary="$target_dir/release/tokio_echo"
if [ ! -x "$binary" ]; then
    echo "error: cargo succeeded but $binary is missing" >&2
    exit 1
fi
echo "$binary"
