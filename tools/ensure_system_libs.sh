#!/usr/bin/env bash
# Install the system libraries the bpy wheel (and its headless EGL/Workbench path) needs,
# but only those that are missing. Needs root (or sudo) for apt-get; prints what it does.
set -euo pipefail
pkgs=(libx11-6 libxrender1 libxfixes3 libxi6 libxkbcommon0 libxcb1 libsm6 libice6 libxxf86vm1 libxext6
      libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri libglx-mesa0)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "Installing system libraries bpy needs: ${missing[*]}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
