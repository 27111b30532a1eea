# Sourced by the other scripts: installs the Debian packages weft needs, if missing.
# Usage: weft_need_packages pkg...   (uses sudo when not root)
weft_need_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# What building and testing weft needs on Debian 12.
WEFT_BUILD_PACKAGES=(cmake make g++ pkg-config catch2 liburing-dev python3)
