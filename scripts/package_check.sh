#!/usr/bin/env bash
# Builds weft's Debian package (cpack -G DEB), installs it with apt-get and builds
# tests/consumer against the installed package, with CMake (find_package) and with
# pkg-config, on this machine as it is (liburing-dev installed: the io_uring backend is
# on) and then with liburing-dev removed (it is off, every other backend works). Puts
# liburing-dev back and removes the package at the end, also on failure. Needs root
# (or sudo) and Debian's archive. .ci/run runs it.
#   scripts/package_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
# dpkg-dev: dpkg-shlibdeps, which works out weft-doctor's runtime dependencies.
weft_need_packages cmake make g++ pkg-config liburing-dev dpkg-dev
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
work="$(mktemp -d /tmp/weft-package.XXXXXX)"
restore() {
    # Leave the machine as it was: liburing-dev back, weft's package gone.
    dpkg-query -W -f='${Status}' liburing-dev 2>/dev/null | grep -q "install ok installed" ||
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends liburing-dev >/dev/null
    dpkg-query -W -f='${Status}' weft 2>/dev/null | grep -q "install ok installed" &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get remove -y -qq weft >/dev/null
    rm -rf "$work"
}
trap restore EXIT

echo "== package: cpack -G DEB"
cmake -S . -B build/package -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
    -DWEFT_BUILD_TESTS=OFF -DWEFT_BUILD_EXAMPLES=OFF -DWEFT_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build build/package -j "$(nproc)" >/dev/null
(cd build/package && rm -f weft_*.deb && cpack -G DEB >/dev/null)
deb="$(ls "$PWD"/build/package/weft_*.deb)"
echo "built $(basename "$deb")"
dpkg-deb --info "$deb" | grep -E "Package|Version|Depends|Suggests"
dpkg-deb --contents "$deb" | awk '{print $6}' | grep -E "bin/weft-doctor|weftConfig.cmake|pkgconfig/weft|weft/weft.hpp"

echo "== package: apt-get install ./$(basename "$deb")"
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$deb" >/dev/null
weft-doctor | head -3

# Builds and runs the consumer with CMake and with pkg-config; $1 is what it must print.
consume() {
    local expected="$1" label="$2" out
    rm -rf "$work/cmake-$label"
    cmake -S tests/consumer -B "$work/cmake-$label" >"$work/configure.log"
    grep "weft: io_uring" "$work/configure.log"
    cmake --build "$work/cmake-$label" >/dev/null
    out="$("$work/cmake-$label/consumer")"
    echo "find_package(weft): $out"
    [ "$out" = "$expected" ] || { echo "expected: $expected"; exit 1; }
    # shellcheck disable=SC2046  # pkg-config's flags are words
    g++ tests/consumer/main.cpp -o "$work/pc-$label" $(pkg-config --cflags --libs weft)
    out="$("$work/pc-$label")"
    echo "pkg-config weft: $out"
    [ "$out" = "consumer: ok (io_uring backend: off)" ] || exit 1
    if pkg-config --exists liburing; then
        # shellcheck disable=SC2046
        g++ tests/consumer/main.cpp -o "$work/pc-uring-$label" $(pkg-config --cflags --libs weft-uring)
        out="$("$work/pc-uring-$label")"
        echo "pkg-config weft-uring: $out"
        [ "$out" = "consumer: ok (io_uring backend: on)" ] || exit 1
    else
        # Without liburing's .pc, weft-uring must refuse, naming what is missing.
        if pkg-config --exists weft-uring 2>"$work/pc.err"; then
            echo "pkg-config weft-uring succeeded without liburing"
            exit 1
        fi
        echo "pkg-config weft-uring refuses: $(pkg-config --print-errors --exists weft-uring 2>&1 | head -1)"
    fi
}

echo "== package: consumer, with liburing-dev"
consume "consumer: ok (io_uring backend: on)" with

echo "== package: consumer, without liburing-dev"
DEBIAN_FRONTEND=noninteractive $sudo apt-get remove -y -qq liburing-dev >/dev/null
[ ! -e /usr/include/liburing.h ] || { echo "liburing.h still installed"; exit 1; }
consume "consumer: ok (io_uring backend: off)" without
echo "package check: passed"
