"""The extension validates, builds into a zip, installs into a headless Blender with
``package_install_files`` (under a temp BLENDER_USER_RESOURCES), enables, and survives
register → unregister → register twice with nothing left behind.

Runs in a subprocess: installing an extension changes Blender's preferences and module table,
which must not leak into the other bpy tests.
"""
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

pytestmark = pytest.mark.bpy

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_validate_build_install_and_register_cycles(tmp_path):
    pytest.importorskip("bpy")
    from neural_avatar.cli import extension as packaging

    zip_path = packaging.build(str(tmp_path / "dist"), source_dir=REPO)
    assert os.path.getsize(zip_path) > 1000
    import zipfile

    names = zipfile.ZipFile(zip_path).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names
    assert not any(n.startswith((".venv/", "tests/", ".git/")) for n in names), "dev files leaked into zip"
    assert any(n.startswith("data/bodies/") for n in names), "embedded default body missing from zip"

    script = textwrap.dedent(f"""
        import sys, bpy, addon_utils
        zip_path = {zip_path!r}
        r = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                     enable_on_install=True)
        assert r == {{"FINISHED"}}, r
        mod_name = "bl_ext.user_default.neural_avatar"
        assert mod_name in sys.modules, sorted(m for m in sys.modules if m.startswith("bl_ext"))
        mod = sys.modules[mod_name]
        ours = lambda: sorted(n for n in dir(bpy.types) if n.startswith("NEURAL_AVATAR"))
        registered = ours()
        assert "NEURAL_AVATAR_PT_body" in registered and "NEURAL_AVATAR_OT_add_body" in registered, registered
        assert hasattr(bpy.types.Scene, "neural_avatar") and hasattr(bpy.types.Object, "neural_avatar")
        assert mod_name in bpy.context.preferences.addons
        for cycle in range(2):
            mod.unregister()
            left = ours()
            assert not left, ("leftover classes", cycle, left)
            assert not hasattr(bpy.types.Scene, "neural_avatar"), "leftover Scene property"
            assert not hasattr(bpy.types.Object, "neural_avatar"), "leftover Object property"
            mod.register()
            assert ours() == registered, (cycle, ours())
        # The installed copy works: add a default body.
        assert bpy.ops.neural_avatar.add_body() == {{"FINISHED"}}
        arm = [o for o in bpy.data.objects if o.type == "ARMATURE"][0]
        assert arm.neural_avatar.is_body and len(arm.data.bones) == 24
        print("EXTENSION_OK")
    """)
    env = dict(os.environ)
    env["BLENDER_USER_RESOURCES"] = tempfile.mkdtemp(prefix="na_ext_res_", dir=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=str(tmp_path), timeout=300)
    assert "EXTENSION_OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
