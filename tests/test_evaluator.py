import numpy as np
import pytest
import torch

from mobilediff.data import ShapesDataset, render
from mobilediff.evaluator import (Evaluator, EvaluatorNet, Prediction, evaluator_loss, frechet_distance,
                                  score_predictions)
from mobilediff.data import labels_tensor


def test_fd_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 16))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_fd_of_shifted_gaussians_is_the_squared_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 4))
    b = rng.normal(size=(20000, 4)) + np.array([1.0, 2.0, 0.0, 0.0])
    assert frechet_distance(a, b) == pytest.approx(5.0, rel=0.03)


def test_fd_closed_form_for_scaled_gaussians():
    # N(0, I) vs N(0, 4I) in d dims: tr(I + 4I - 2*2I) = d
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(20000, 3)), 2 * rng.normal(size=(20000, 3))
    assert frechet_distance(a, b) == pytest.approx(3.0, rel=0.05)


def _truth(scenes):
    lab = labels_tensor(scenes)
    return Prediction(background=lab["background"].numpy(), shape=lab["shape"].numpy(),
                      color=lab["color"].clamp(min=0).numpy(), size=lab["size"].clamp(min=0).numpy(),
                      feature=np.zeros((len(scenes), 2)))


def test_scores_of_known_predictions():
    scenes = ShapesDataset(seed=0).scenes(0, 40)
    perfect = score_predictions(_truth(scenes), scenes)
    assert perfect.prompt_accuracy == 1.0 and all(v == 1.0 for v in perfect.attribute_accuracy.values())
    p = _truth(scenes)
    o = scenes[0].objects[0]
    p.color[0, o.position] = (o.color + 1) % 6  # one wrong colour
    p.background[1] = (scenes[1].background + 1) % 4  # one wrong background
    r = score_predictions(p, scenes)
    assert r.prompt_accuracy == pytest.approx(38 / 40)
    n_obj = sum(len(s.objects) for s in scenes)
    assert r.attribute_accuracy["color"] == pytest.approx((n_obj - 1) / n_obj)
    assert r.attribute_accuracy["background"] == pytest.approx(39 / 40)
    assert r.per_image_correct[:2] == [False, False] and all(r.per_image_correct[2:])
    p = _truth(scenes)
    empty = next(c for c in range(9) if p.shape[2, c] == 0)
    p.shape[2, empty] = 1  # an extra object
    r = score_predictions(p, scenes)
    assert r.attribute_accuracy["count"] == pytest.approx(39 / 40) and r.prompt_accuracy == pytest.approx(39 / 40)


def test_evaluator_loss_trains_a_tiny_net():
    torch.manual_seed(0)
    net = EvaluatorNet()
    x, _, scenes = ShapesDataset(seed=0).batch(0, 8)
    loss = evaluator_loss(net(x), labels_tensor(scenes))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in net.parameters())


@pytest.fixture(scope="module")
def shipped():
    return Evaluator.load()


def test_shipped_evaluator_is_right_on_ground_truth(shipped):
    scenes = ShapesDataset(seed=424242).scenes(0, 512)
    r = shipped.score(render(scenes), scenes)
    assert r.prompt_accuracy >= 0.98
    assert min(r.attribute_accuracy.values()) >= 0.99


def test_shipped_evaluator_fd_real_vs_real_is_small_and_noise_is_large(shipped):
    d = ShapesDataset(seed=99)
    a = shipped.predict(d.batch(0, 512)[0]).feature
    b = shipped.predict(d.batch(512, 512)[0]).feature
    noise = shipped.predict(torch.rand(512, 3, 64, 64) * 2 - 1).feature
    real_fd, noise_fd = frechet_distance(a, b), frechet_distance(a, noise)
    assert real_fd < 0.2 * noise_fd  # FD is biased upwards at n = 512 (128-d features); noise is far off regardless


def test_shipped_evaluator_rejects_wrong_image_size(shipped):
    from mobilediff.errors import MobilediffError

    with pytest.raises(MobilediffError, match="expects"):
        shipped.predict(torch.zeros(1, 3, 32, 32))
