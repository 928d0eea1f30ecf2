"""Registration is all or nothing: a failure half-way (a module's register, or one class deep
inside a package) unregisters everything done before it, so the next enable works."""
import pytest

pytestmark = pytest.mark.bpy


def _ours(bpy):
    return sorted(n for n in dir(bpy.types) if n.startswith("NEURAL_AVATAR"))


@pytest.mark.parametrize("where", ["module", "class", "engine"])
def test_failed_register_leaves_nothing_and_next_enable_works(clean_bpy, monkeypatch, where):
    bpy = clean_bpy
    import neural_avatar
    from neural_avatar.engine import render_engine
    from neural_avatar.operators import capture

    assert not _ours(bpy)
    if where == "module":
        monkeypatch.setattr(capture, "register", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    elif where == "class":
        real = bpy.utils.register_class

        def flaky(cls):
            if cls.__name__ == "NEURAL_AVATAR_OT_import_motion":
                raise RuntimeError("boom")
            return real(cls)

        monkeypatch.setattr(bpy.utils, "register_class", flaky)
    else:
        monkeypatch.setattr(render_engine, "_add_compat", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        neural_avatar.register()
    assert not _ours(bpy), _ours(bpy)
    assert not hasattr(bpy.types.Scene, "neural_avatar") and not hasattr(bpy.types.Object, "neural_avatar")
    assert not render_engine.NeuralAvatarRenderEngine.is_registered
    assert not render_engine._ADDED
    monkeypatch.undo()
    neural_avatar.register()
    try:
        assert "NEURAL_AVATAR_OT_add_body" in _ours(bpy) and hasattr(bpy.types.Scene, "neural_avatar")
        assert bpy.ops.neural_avatar.add_body() == {"FINISHED"}
    finally:
        neural_avatar.unregister()
    assert not _ours(bpy)
