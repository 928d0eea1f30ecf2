#!/usr/bin/env bash
# Optional test tier (`make test-viewport`, not part of `make test`): the viewport path
# (RenderEngine.view_update / view_draw, worker thread, gpu drawing) in a REAL Blender >= 4.2.
#
# The bpy PyPI module never calls view_draw, and Debian bookworm's blender is 3.4 (no
# extensions), so this script builds a Debian trixie tree (Blender 4.3, system Python 3.13)
# with debootstrap into .cache/trixie (git-ignored) and runs, inside it under Xvfb:
#   blender --command extension build          (the extension zip, Blender's own builder)
#   blender --factory-startup --python tools/viewport_check.py -- --zip ...
# PyTorch inside the tree: Debian's own python3-torch (CPU build, for Python 3.13), so the
# check runs the real networks; PyPI's torch for cp313 would pull the multi-GB CUDA stack.
# Results (report.json, screenshots) land in out/viewport/. Exit code: the check's.
#
# Needs root (debootstrap, chroot, mounts) and the Debian package mirror this machine's apt
# uses (read from /etc/apt at run time). First run: ~500 MB download, a few minutes; later
# runs reuse the tree.
#
# Environment: VIEWPORT_MODE (VERTEX_PROJECTION | NEURAL_TEXTURE | GAUSSIAN_BONES),
# VIEWPORT_STUB=1 (no torch: numpy stand-in, see viewport_check.py), VIEWPORT_TIMEOUT (s),
# VIEWPORT_NO_ZIP=1 (import the checkout instead of installing the built extension),
# VIEWPORT_TORCH_THREADS=N (torch.set_num_threads(N) in Blender before the run).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache/trixie"
OUT="$ROOT/out/viewport"
SUITE=trixie
PKGS="blender xvfb xauth x11-apps libgl1-mesa-dri python3-numpy python3-torch python3-safetensors"
MODE="${VIEWPORT_MODE:-VERTEX_PROJECTION}"
TIMEOUT="${VIEWPORT_TIMEOUT:-900}"

log() { echo "[viewport_test] $*"; }
die() { echo "[viewport_test] ERROR: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap/chroot/mount)."

debian_mirror() {
    # The first Debian archive URI in this machine's apt sources (deb822 or one-line format).
    local uri
    uri=$( (grep -hsE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null || true) \
        | sed -E 's/^[[:space:]]*URIs:[[:space:]]*//' | tr ' ' '\n' \
        | grep -E '/debian/?$' | head -n1)
    if [ -z "$uri" ]; then
        uri=$( (grep -hsE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true) \
            | sed -E 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' | awk '{print $1}' \
            | grep -E '/debian/?$' | head -n1)
    fi
    [ -n "$uri" ] || die "no Debian mirror found in /etc/apt/sources.list*; cannot debootstrap."
    echo "${uri%/}"
}

host_tools() {
    local missing=""
    command -v debootstrap >/dev/null || missing="$missing debootstrap"
    command -v xvfb-run >/dev/null || missing="$missing xvfb"
    if [ -n "$missing" ]; then
        log "installing on the host:$missing"
        apt-get install -y --no-install-recommends $missing >/dev/null 2>&1 || {
            apt-get update >/dev/null && apt-get install -y --no-install-recommends $missing >/dev/null; }
    fi
}

MOUNTED=()
mount_tree() {
    local m
    for m in proc sys dev dev/pts; do
        mkdir -p "$CACHE/$m"
        if ! mountpoint -q "$CACHE/$m"; then
            case $m in
                proc) mount -t proc proc "$CACHE/proc" ;;
                sys) mount -t sysfs sys "$CACHE/sys" ;;
                dev) mount --bind /dev "$CACHE/dev" ;;
                dev/pts) mount --bind /dev/pts "$CACHE/dev/pts" ;;
            esac
            MOUNTED=("$CACHE/$m" "${MOUNTED[@]}")
        fi
    done
}
umount_tree() {
    local m
    for m in "${MOUNTED[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    MOUNTED=()
}
trap umount_tree EXIT INT TERM

in_tree() {
    chroot "$CACHE" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive BLENDER_USER_RESOURCES=/na/blender_user "$@"
}

ensure_tree() {
    if [ ! -x "$CACHE/usr/bin/apt-get" ] || [ ! -f "$CACHE/.debootstrap_done" ]; then
        local mirror
        mirror="$(debian_mirror)"
        log "debootstrap $SUITE into .cache/trixie (mirror from apt config)"
        rm -rf "$CACHE"
        mkdir -p "$CACHE"
        debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$CACHE" "$mirror" \
            > "$ROOT/.cache/debootstrap.log" 2>&1 || { tail -20 "$ROOT/.cache/debootstrap.log"; die "debootstrap failed"; }
        touch "$CACHE/.debootstrap_done"
    fi
    if [ "$(cat "$CACHE/.neural_avatar_pkgs" 2>/dev/null)" != "$PKGS" ]; then
        log "installing in the tree: $PKGS"
        cp /etc/resolv.conf "$CACHE/etc/resolv.conf" 2>/dev/null || true
        mount_tree
        in_tree apt-get update -q > "$ROOT/.cache/trixie-apt.log" 2>&1
        in_tree apt-get install -y -q --no-install-recommends $PKGS >> "$ROOT/.cache/trixie-apt.log" 2>&1 \
            || { tail -20 "$ROOT/.cache/trixie-apt.log"; die "apt-get install in the tree failed"; }
        in_tree apt-get clean
        echo "$PKGS" > "$CACHE/.neural_avatar_pkgs"
    fi
    [ -x "$CACHE/usr/bin/blender" ] || die "no blender in the tree"
}

host_tools
ensure_tree
mount_tree
log "$(in_tree blender --version 2>/dev/null | head -n1)"

# A copy of the checkout (no venv, caches, outputs) at /na/repo in the tree.
rm -rf "$CACHE/na/repo" "$CACHE/na/out" "$CACHE/na/dist" "$CACHE/na/blender_user"
mkdir -p "$CACHE/na/repo" "$CACHE/na/out" "$CACHE/na/dist" "$CACHE/na/blender_user"
tar -C "$ROOT" --exclude=./.venv --exclude=./.cache --exclude=./out --exclude=./dist --exclude=./build \
    --exclude=./.git --exclude='*/__pycache__' --exclude=./.pytest_cache --exclude=./.hypothesis -cf - . \
    | tar -C "$CACHE/na/repo" -xf -

CHECK_ARGS=(--out /na/out --mode "$MODE")
[ -n "${VIEWPORT_TORCH_THREADS:-}" ] && CHECK_ARGS+=(--torch-threads "$VIEWPORT_TORCH_THREADS")
if [ "${VIEWPORT_NO_ZIP:-0}" != 1 ]; then
    log "building the extension with Blender's own builder"
    in_tree blender --command extension build --source-dir /na/repo --output-dir /na/dist \
        > "$CACHE/na/out/build.log" 2>&1 || { tail -20 "$CACHE/na/out/build.log"; die "extension build failed"; }
    ZIP=$(cd "$CACHE/na/dist" && ls -1 *.zip | head -n1)
    [ -n "$ZIP" ] || die "the extension build wrote no zip"
    CHECK_ARGS+=(--zip "/na/dist/$ZIP")
fi
[ "${VIEWPORT_STUB:-0}" = 1 ] && CHECK_ARGS+=(--stub-neural)

log "running Blender under Xvfb: viewport_check.py ${CHECK_ARGS[*]}"
set +e
timeout "$TIMEOUT" chroot "$CACHE" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    BLENDER_USER_RESOURCES=/na/blender_user \
    xvfb-run -a -s "-screen 0 1280x800x24" \
    blender --factory-startup --python /na/repo/tools/viewport_check.py -- "${CHECK_ARGS[@]}" \
    > "$CACHE/na/out/blender.log" 2>&1
RC=$?
set -e

rm -rf "$OUT"
mkdir -p "$OUT"
cp -r "$CACHE/na/out/." "$OUT/"
# The copy of the checkout and the installed extension are not needed between runs.
rm -rf "$CACHE/na/repo" "$CACHE/na/dist" "$CACHE/na/blender_user"
grep -E '^\[viewport_check' "$OUT/blender.log" || tail -40 "$OUT/blender.log"
if [ "$RC" = 0 ]; then
    log "PASSED (report: out/viewport/report.json, screenshots: out/viewport/*.png)"
else
    log "FAILED with exit code $RC (see out/viewport/blender.log and report.json)"
fi
exit "$RC"
