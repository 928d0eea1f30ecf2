#!/usr/bin/env bash
# Optional real-Blender tier (`make test-stock`, not part of `make test`): the README's path for a
# new user, from *Install from Disk* to an F12 image, in STOCK Blenders from Debian, whose Python
# has none of our pip packages (not even numpy):
#   trixie: Blender 4.3 (Python 3.13)      sid: Blender 5.2 LTS (Python 3.14)
# Each runs in a debootstrapped tree under .cache/stock-<suite> (git-ignored), under Xvfb:
#   1. `blender --command extension build` + `extension install-file -e` (the zip, enabled)
#   2. phase bare:    no numpy → enabled anyway; prefs/sidebar say what is missing; Add Body and
#                     F12 report it; no frame written                      (tools/stock_check.py)
#   3. apt python3-numpy; phase numpy: Add Body works, F12 reports the dependencies message;
#      the installer's CPU choice for real: download.pytorch.org is unreachable from this machine,
#      so it must refuse (STOCK_EXPECT_INSTALL=refused) instead of taking PyPI's CUDA build
#   4. apt python3-torch (Debian's CPU build stands in for the unreachable CPU index); the
#      installer for real again: keeps that torch, installs smplx/safetensors/pytorch-msssim from
#      PyPI into the extension's user folder and checks the build
#   5. restart; phase render: F12 renders, the Rendered viewport draws; `blender -b scene.blend -a`
#   6. an update: a zip of a higher version installed over it; the deps folder must survive
# Results: out/stock/<suite>/ (report_*.json, screenshots, logs). Needs root and Debian's mirror.
# Environment: STOCK_SUITES ("trixie sid"), STOCK_TIMEOUT (s per Blender run).
set -euo pipefail

ROOT="${STOCK_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
SUITES="${STOCK_SUITES:-trixie sid}"
TIMEOUT="${STOCK_TIMEOUT:-900}"
PKGS="blender xvfb xauth x11-apps libgl1-mesa-dri python3-pip"
APT_OPTS="-o Acquire::Check-Valid-Until=false"
log() { echo "[stock_test] $*"; }
die() { echo "[stock_test] ERROR: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap/chroot/mount)."
command -v debootstrap >/dev/null && command -v xvfb-run >/dev/null \
    || apt-get install -y --no-install-recommends debootstrap xvfb xauth >/dev/null

MOUNTED=()
mount_tree() {
    local t=$1 m
    for m in proc sys dev dev/pts; do
        mkdir -p "$t/$m"
        mountpoint -q "$t/$m" && continue
        case $m in
            proc) mount -t proc proc "$t/proc" ;;
            sys) mount -t sysfs sys "$t/sys" ;;
            dev) mount --bind /dev "$t/dev" ;;
            dev/pts) mount --bind /dev/pts "$t/dev/pts" ;;
        esac
        MOUNTED=("$t/$m" "${MOUNTED[@]}")
    done
}
umount_all() { local m; for m in "${MOUNTED[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done; MOUNTED=(); }
trap umount_all EXIT INT TERM

in_tree() {  # in_tree TREE cmd...
    local t=$1; shift
    chroot "$t" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive BLENDER_USER_RESOURCES=/na/blender_user \
        STOCK_EXPECT_INSTALL="${STOCK_EXPECT_INSTALL:-ok}" STOCK_TIMEOUT="$TIMEOUT" "$@"
}

ensure_tree() {
    local suite=$1 t=$2
    if [ ! -f "$t/.debootstrap_done" ]; then
        log "$suite: debootstrap into ${t#$ROOT/}"
        rm -rf "$t"; mkdir -p "$t"
        debootstrap --variant=minbase --include=ca-certificates "$suite" "$t" http://deb.debian.org/debian \
            > "$t.debootstrap.log" 2>&1 || { tail -20 "$t.debootstrap.log"; die "debootstrap failed"; }
        touch "$t/.debootstrap_done"
    fi
    cp /etc/resolv.conf "$t/etc/resolv.conf" 2>/dev/null || true
    # This machine's HTTPS goes through a proxy with its own CA: the tree trusts what the host trusts.
    cp /etc/ssl/certs/ca-certificates.crt "$t/etc/ssl/certs/ca-certificates.crt" 2>/dev/null || true
    mount_tree "$t"
    if [ ! -x "$t/usr/bin/blender" ]; then
        in_tree "$t" apt-get $APT_OPTS update -q > "$t.apt.log" 2>&1
        in_tree "$t" apt-get $APT_OPTS install -y -q --no-install-recommends $PKGS >> "$t.apt.log" 2>&1 \
            || { tail -20 "$t.apt.log"; die "apt-get install failed"; }
    fi
    # A stock start: no numpy, no torch (left from an earlier run).
    in_tree "$t" apt-get $APT_OPTS remove -y -q python3-torch python3-numpy >> "$t.apt.log" 2>&1 || true
    in_tree "$t" apt-get $APT_OPTS autoremove -y -q >> "$t.apt.log" 2>&1 || true
}

blender_gui() {  # blender_gui TREE OUT PHASE
    local t=$1 out=$2 phase=$3 rc
    set +e
    timeout "$TIMEOUT" chroot "$t" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        BLENDER_USER_RESOURCES=/na/blender_user STOCK_EXPECT_INSTALL="${STOCK_EXPECT_INSTALL:-ok}" \
        STOCK_TIMEOUT="$TIMEOUT" xvfb-run -a -s "-screen 0 1280x800x24" \
        blender --python /na/repo/tools/stock_check.py -- --phase "$phase" --out /na/out \
        > "$t/na/out/blender_$phase.log" 2>&1
    rc=$?
    set -e
    grep -E '^\[stock_check' "$t/na/out/blender_$phase.log" || tail -30 "$t/na/out/blender_$phase.log"
    return $rc
}

run_suite() {  # run_suite SUITE TREE: the steps above; non-zero at the first failure
    local SUITE=$1 T=$2 ZIP ZIPB MAN N EXPECT
    in_tree "$T" blender --command extension build --source-dir /na/repo --output-dir /na/dist \
        > "$T/na/out/build.log" 2>&1 || { tail -20 "$T/na/out/build.log"; return 1; }
    ZIP=$(cd "$T/na/dist" && ls -1 *.zip | head -n1)
    in_tree "$T" blender --command extension install-file -r user_default -e "/na/dist/$ZIP" \
        > "$T/na/out/install.log" 2>&1 || { tail -20 "$T/na/out/install.log"; return 1; }
    # No splash screen over the screenshots (a user preference, saved once).
    in_tree "$T" blender -b --python-expr "import bpy; bpy.context.preferences.view.show_splash = False; bpy.ops.wm.save_userpref()" \
        > "$T/na/out/prefs.log" 2>&1 || return 1
    log "$SUITE: installed $ZIP; phase bare (no numpy, no torch)"
    blender_gui "$T" "$OUT" bare || return 1
    log "$SUITE: apt python3-numpy; phase numpy"
    in_tree "$T" apt-get $APT_OPTS install -y -q --no-install-recommends python3-numpy >> "$T.apt.log" 2>&1 || return 1
    blender_gui "$T" "$OUT" numpy || return 1
    if in_tree "$T" python3 -c "import urllib.request as u; u.urlopen('https://download.pytorch.org/whl/cpu/torch/', timeout=10)" 2>/dev/null; then
        EXPECT=ok
    else
        EXPECT=refused
    fi
    log "$SUITE: installer for real, CPU (PyTorch CPU index: $([ $EXPECT = ok ] && echo reachable || echo unreachable))"
    STOCK_EXPECT_INSTALL=$EXPECT blender_gui "$T" "$OUT" install || return 1
    mv "$T/na/out/report_install.json" "$T/na/out/report_install_cpu_index.json"
    mv "$T/na/out/prefs_install.png" "$T/na/out/prefs_install_cpu_index.png" 2>/dev/null || true
    if [ $EXPECT = refused ]; then
        log "$SUITE: apt python3-torch (Debian's CPU build stands in for the unreachable index); installer again"
        in_tree "$T" apt-get $APT_OPTS install -y -q --no-install-recommends python3-torch >> "$T.apt.log" 2>&1 || return 1
        STOCK_EXPECT_INSTALL=ok blender_gui "$T" "$OUT" install || return 1
    fi
    log "$SUITE: restart; phase render"
    blender_gui "$T" "$OUT" render || return 1
    log "$SUITE: blender -b scene.blend -a"
    in_tree "$T" blender -b /na/out/scene.blend -a > "$T/na/out/anim.log" 2>&1 || true
    N=$(ls "$T/na/out" | grep -c '^anim_.*\.png$' || true)
    echo "{\"frames_written\": $N}" > "$T/na/out/report_anim.json"
    [ "$N" = 3 ] || { log "FAIL: blender -b -a wrote $N of 3 frames"; tail -20 "$T/na/out/anim.log"; return 1; }
    log "$SUITE: PASS -a wrote 3 frames"
    # An update: the same package at a higher version, installed over it.
    sed -i -E 's/^version = "([0-9]+)\.([0-9]+)\.([0-9]+)"/version = "\1.\2.99"/' "$T/na/repo/blender_manifest.toml"
    in_tree "$T" blender --command extension build --source-dir /na/repo --output-dir /na/dist_b > /dev/null 2>&1
    ZIPB=$(cd "$T/na/dist_b" && ls -1 *.zip | head -n1)
    MAN=$(cd "$T" && ls -d na/blender_user/extensions/.user/user_default/neural_avatar/deps-*/neural_avatar_deps.json 2>/dev/null | head -n1)
    in_tree "$T" blender --command extension install-file -r user_default -e "/na/dist_b/$ZIPB" \
        > "$T/na/out/update.log" 2>&1
    if [ -n "$MAN" ] && [ -f "$T/$MAN" ]; then
        log "$SUITE: PASS deps survive an update ($ZIP → $ZIPB): $MAN"
        echo "{\"deps_survive_update\": true, \"manifest\": \"$MAN\"}" > "$T/na/out/report_update.json"
    else
        log "$SUITE: FAIL the deps folder is gone after an update ($MAN)"
        echo "{\"deps_survive_update\": false}" > "$T/na/out/report_update.json"; return 1
    fi
}

OVERALL=0
for SUITE in $SUITES; do
    T="$ROOT/.cache/stock-$SUITE"
    OUT="$ROOT/out/stock/$SUITE"
    ensure_tree "$SUITE" "$T"
    log "$SUITE: $(in_tree "$T" blender --version 2>/dev/null | head -n1)"
    rm -rf "$T/na"; mkdir -p "$T/na/repo" "$T/na/out" "$T/na/dist" "$T/na/dist_b" "$T/na/blender_user"
    tar -C "$ROOT" --exclude=./.venv --exclude=./.cache --exclude=./out --exclude=./dist --exclude=./build \
        --exclude=./.git --exclude='*/__pycache__' --exclude=./.pytest_cache --exclude=./.hypothesis -cf - . \
        | tar -C "$T/na/repo" -xf -
    RESULT=PASSED
    run_suite "$SUITE" "$T" || RESULT=FAILED
    rm -rf "$OUT"; mkdir -p "$OUT"
    cp -r "$T/na/out/." "$OUT/"
    rm -f "$OUT/scene.blend" "$OUT"/scene.blend1
    log "$SUITE: $RESULT (out/stock/$SUITE)"
    [ $RESULT = PASSED ] || OVERALL=1
    umount_all
done
exit $OVERALL
