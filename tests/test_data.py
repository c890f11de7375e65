import torch

from mobilediff.data import (BACKGROUNDS, COLORS, POSITIONS, SHAPES, SIZES, ShapesConfig, ShapesDataset, render,
                             sample_scene)
from mobilediff.evaluator import parse_caption


def test_same_seed_same_samples():
    a_img, a_cap, a_sc = ShapesDataset(seed=3).batch(100, 8)
    b_img, b_cap, b_sc = ShapesDataset(seed=3).batch(100, 8)
    assert torch.equal(a_img, b_img) and a_cap == b_cap and a_sc == b_sc


def test_sample_independent_of_batch_position():
    d = ShapesDataset(seed=5)
    whole, caps, _ = d.batch(10, 6)
    one, cap, _ = d.batch(13, 1)
    assert torch.equal(whole[3], one[0]) and caps[3] == cap[0]


def test_different_seeds_differ():
    a, _, _ = ShapesDataset(seed=1).batch(0, 16)
    b, _, _ = ShapesDataset(seed=2).batch(0, 16)
    assert not torch.equal(a, b)


def test_images_in_range_and_shape():
    x, _, _ = ShapesDataset(seed=0).batch(0, 4)
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1


def test_domain_covers_every_attribute():
    scenes = ShapesDataset(seed=0).scenes(0, 3000)
    objs = [o for s in scenes for o in s.objects]
    assert {o.shape for o in objs} == set(range(len(SHAPES))) and len(SHAPES) >= 4
    assert {o.color for o in objs} == set(range(len(COLORS))) and len(COLORS) >= 6
    assert {o.position for o in objs} == set(range(len(POSITIONS))) and len(POSITIONS) >= 9
    assert {o.size for o in objs} == set(range(len(SIZES))) and len(SIZES) >= 2
    assert {s.background for s in scenes} == set(range(len(BACKGROUNDS)))
    n_two = sum(len(s.objects) == 2 for s in scenes)
    assert 0.15 < n_two / len(scenes) < 0.35
    assert len({s.caption for s in scenes}) > 2500  # phrasing varies


def test_object_colour_is_drawn_where_the_scene_says():
    s = next(s for s in ShapesDataset(seed=0).scenes(0, 200) if len(s.objects) == 1 and s.objects[0].size == 1)
    img = render([s], ShapesConfig(color_jitter=0.0))[0]
    row, col = divmod(s.objects[0].position, 3)
    cy, cx = int((row + 0.5) / 3 * 64), int((col + 0.5) / 3 * 64)
    from mobilediff.data import COLOR_RGB

    want = torch.tensor(COLOR_RGB[COLORS[s.objects[0].color]], dtype=torch.float32) / 127.5 - 1
    assert torch.allclose(img[:, cy, cx], want, atol=0.05)


def test_captions_parse_back_to_their_scene():
    for i in range(500):
        s = sample_scene(11, i)
        p = parse_caption(s.caption)
        assert p.background == s.background and set(p.objects) == set(s.objects)


def test_rendering_is_fast_enough_for_training():
    import time

    d = ShapesDataset(seed=0)
    d.batch(0, 8)
    t = time.perf_counter()
    d.batch(0, 128)
    # generous bound: a training step on this machine takes about a second
    assert time.perf_counter() - t < 2.0
