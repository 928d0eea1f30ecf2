"""The dressed demo subject: materials, per-vertex colours, skinned extra geometry, render set-up."""
import os
import pathlib

import numpy as np
import pytest

pytestmark = pytest.mark.bpy


def default_model():
    """The default body; ``NEURAL_AVATAR_TEST_BODY`` may point at a body file while
    data/bodies/neutral.npz is being rebuilt."""
    from neural_avatar.body import model as bm
    from neural_avatar.errors import BodyModelError

    alt = os.environ.get("NEURAL_AVATAR_TEST_BODY")
    if alt and not bm.default_body_path().is_file():
        bm.load_default.cache_clear()
        bm.default_body_path = lambda: pathlib.Path(alt)
    try:
        return bm.load_default()
    except BodyModelError as e:
        pytest.skip(f"default body missing: {e}")


@pytest.fixture
def dressed(addon):
    from neural_avatar.lab import subject

    model = default_model()
    out = subject.build_demo_subject(addon.context, texture_size=256)
    return addon, model, out


def _eval_world(bpy, obj):
    dg = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(dg)
    me = ev.to_mesh()
    co = np.empty(len(me.vertices) * 3, np.float32)
    me.vertices.foreach_get("co", co)
    M = np.array(ev.matrix_world)
    ev.to_mesh_clear()
    co = co.reshape(-1, 3).astype(np.float64)
    return co @ M[:3, :3].T + M[:3, 3]


def test_subject_materials_and_vertex_colors(dressed):
    bpy, model, s = dressed
    from neural_avatar.blender import rig
    from neural_avatar.lab import subject

    arm, body = s["armature"], s["body"]
    assert arm.neural_avatar.is_body and body.parent == arm
    assert [m.name for m in body.data.materials] == [f"NeuralAvatar_{r.capitalize()}" for r in subject.REGIONS]
    mi = np.empty(len(body.data.polygons), np.int32)
    body.data.polygons.foreach_get("material_index", mi)
    assert set(np.unique(mi)) == set(range(5))  # every region is used
    # baked albedo: the palette's stripes, iris and mouth are all present in the texture
    px = np.array(s["image"].pixels[:]).reshape(256, 256, 4)[..., :3]
    for key in ("shirt_a", "shirt_b", "sleeve", "trousers", "iris", "mouth", "hair", "sole"):
        d = np.abs(px - np.asarray(subject.PALETTE[key])).max(-1)
        assert (d < 0.01).sum() > 0, key
    vc = s["vertex_colors"]
    assert vc.shape == (model.num_verts, 3) and vc.dtype == np.float32
    assert vc.min() >= 0 and vc.max() <= 1
    # the attribute holds the same colours (scene-linear)
    attr = body.data.color_attributes[rig.COLOR_ATTR]
    c = np.empty(len(attr.data) * 4, np.float32)
    attr.data.foreach_get("color", c)
    np.testing.assert_allclose(subject.linear_to_srgb(c.reshape(-1, 4)[:, :3]), vc, atol=2e-3)
    # vertices the garments cover take the garment's colours: the crown is hair, the hips skirt
    v = np.asarray(model.v_template)
    top = np.argmax(v[:, 1])
    hair_cols = np.asarray([subject.PALETTE["hair"], subject.PALETTE["hair_light"]])
    assert np.abs(vc[top] - hair_cols.mean(0)).max() < 0.2
    from neural_avatar.body import kinematics

    _, J = kinematics.shape(model, None)
    pel = J[0]
    hips = np.nonzero((np.abs(v[:, 1] - (pel[1] - 0.05)) < 0.02) & (v[:, 2] > pel[2]))[0]
    skirt_cols = np.asarray([subject.PALETTE["skirt_a"], subject.PALETTE["skirt_b"]])
    d = np.abs(vc[hips][:, None, :] - skirt_cols[None]).max(-1).min(-1)
    assert np.mean(d < 0.01) > 0.9


def test_extra_geometry_is_skinned_and_follows_pose(dressed):
    bpy, model, s = dressed
    arm = s["armature"]
    for obj in (s["hair"], s["garment"]):
        assert obj.parent == s["body"] and [c for c in arm.children if c.type == "MESH"] == [s["body"]]
        mods = [m for m in obj.modifiers if m.type == "ARMATURE"]
        assert mods and mods[0].object == arm
        W = np.zeros((len(obj.data.vertices), len(obj.vertex_groups)))
        for v in obj.data.vertices:
            for g in v.groups:
                W[v.index, g.group] = g.weight
        np.testing.assert_allclose(W.sum(1), 1.0, atol=1e-5)
        assert len(obj.data.materials) == 1 and obj.data.uv_layers.get("UVMap") is not None
    assert {g.name for g in s["hair"].vertex_groups} == {"head"}
    assert {g.name for g in s["garment"].vertex_groups} == {"pelvis", "left_hip", "right_hip"}

    from mathutils import Quaternion

    rest_h = _eval_world(bpy, s["hair"])
    rest_s = _eval_world(bpy, s["garment"])
    pb = arm.pose.bones
    pb["head"].rotation_quaternion = Quaternion((0, 1, 0), 0.8)
    pb["left_hip"].rotation_quaternion = Quaternion((1, 0, 0), -1.0)
    pb["pelvis"].location = (0.1, 0.0, 0.05)
    bpy.context.view_layer.update()
    posed_h = _eval_world(bpy, s["hair"])
    posed_s = _eval_world(bpy, s["garment"])
    # linear blend skinning with the bones' deformation matrices reproduces Blender's result
    A = np.array(arm.matrix_world)

    def lbs(obj, rest_world):
        rest_local = (rest_world - A[:3, 3]) @ np.linalg.inv(A[:3, :3]).T
        out = np.zeros_like(rest_local)
        for g in obj.vertex_groups:
            bone = arm.pose.bones[g.name]
            D = np.array(bone.matrix) @ np.linalg.inv(np.array(bone.bone.matrix_local))
            w = np.array([next((x.weight for x in v.groups if x.group == g.index), 0.0)
                          for v in obj.data.vertices])
            out += w[:, None] * (rest_local @ D[:3, :3].T + D[:3, 3])
        return out @ A[:3, :3].T + A[:3, 3]

    np.testing.assert_allclose(posed_h, lbs(s["hair"], rest_h), atol=1e-5)
    np.testing.assert_allclose(posed_s, lbs(s["garment"], rest_s), atol=1e-5)
    assert np.abs(posed_h - rest_h).max() > 0.05  # the hair really moved with the head
    # the skirt's hem on the left (raised thigh) moved more than its waist
    t = np.array([v.co.y for v in s["garment"].data.vertices])  # model Y = height
    hem, waist = t < t.min() + 1e-4, t > t.max() - 1e-4
    move = np.linalg.norm(posed_s - rest_s - np.array([0.1, 0, 0.05]) @ A[:3, :3].T, axis=1)
    assert move[hem].max() > move[waist].max() + 0.05


def test_workbench_render_and_composite(dressed, tmp_path):
    bpy, model, s = dressed
    from mathutils import Matrix

    from neural_avatar.lab import capture, subject

    sc = bpy.context.scene
    assert subject.setup_ground_truth_render(sc, 32, "WORKBENCH") == "BLENDER_WORKBENCH"
    assert sc.view_settings.view_transform == "Standard" and sc.render.film_transparent
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    sc.collection.objects.link(cam)
    sc.camera = cam
    cam.matrix_world = Matrix(capture._look_at_matrix(np.array([0.0, -4.0, 0.0]), np.zeros(3)).tolist())
    rgba = subject.render_ground_truth(sc, str(tmp_path))
    assert rgba.shape == (32, 32, 4)
    img, mask = subject.composite(rgba, (0.0, 1.0, 0.0))
    fg = mask > 0
    assert 0.05 < fg.mean() < 0.6
    assert np.all(img[rgba[..., 3] == 0] == [0, 255, 0])  # background colour where empty
    assert img[fg].std() > 5  # textured, not flat
    assert os.listdir(str(tmp_path)) == []


def test_render_setup_errors(addon):
    from neural_avatar.errors import NeuralAvatarError
    from neural_avatar.lab import subject

    sc = addon.context.scene
    with pytest.raises(NeuralAvatarError, match="Unknown ground-truth engine"):
        subject.setup_ground_truth_render(sc, 32, "POVRAY")
    with pytest.raises(NeuralAvatarError, match="at least 8"):
        subject.setup_ground_truth_render(sc, 4, "CYCLES")
    if subject.eevee_available():
        assert "EEVEE" in subject.setup_ground_truth_render(sc, 32, "EEVEE")
    else:
        with pytest.raises(NeuralAvatarError, match="EEVEE cannot render here"):
            subject.setup_ground_truth_render(sc, 32, "EEVEE")


def test_zoo_specs_are_seeded_and_varied():
    from neural_avatar.lab import subject

    a, b = subject.SubjectSpec.random(3), subject.SubjectSpec.random(3)
    assert a == b and a.name == "zoo0003" and a.seed == 3
    specs = [subject.SubjectSpec.random(s) for s in range(40)]
    assert len({s.colors()["shirt_a"].tobytes() for s in specs}) == 40
    for field, values in (("shirt", subject.SHIRTS), ("bottom", subject.BOTTOMS), ("hair", subject.HAIRS)):
        assert {getattr(s, field) for s in specs} == set(values)
    assert all(len(s.betas) == 4 and max(abs(x) for x in s.betas) <= 2 for s in specs)
    assert subject.SubjectSpec.demo().colors()["skirt_a"].tolist() == list(subject.PALETTE["skirt_a"])


def test_zoo_subject_dresses_the_body_by_its_spec(addon):
    from neural_avatar.lab import subject

    default_model()
    spec = next(subject.SubjectSpec.random(s) for s in range(100)
                if subject.SubjectSpec.random(s).bottom == "trousers" and subject.SubjectSpec.random(s).hair == "short")
    out = subject.build_demo_subject(addon.context, texture_size=64, spec=spec)
    assert out["garment"] is None and out["hair"] is None and out["spec"] is spec
    arm = out["armature"]
    assert list(arm.neural_avatar.betas)[:4] == pytest.approx(list(spec.betas))
    demo = subject.build_demo_subject(addon.context, texture_size=64)
    assert demo["garment"] is not None and demo["hair"] is not None
    assert not np.allclose(out["vertex_colors"], demo["vertex_colors"])
