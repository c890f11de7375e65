"""The embedded emoji model (trained on the Noto emoji sprites), its LCM student and its feature extractor: the names
resolve, the student borrows the teacher's text encoder and VAE (sha256-checked) and plans LCM-4, and the student's
4-step images of emoji names are recognised by the emoji classifier, a network trained on the real sprites only."""
import json

import pytest
import torch

from mobilediff.card import model_card
from mobilediff.features import NAMED_EXTRACTORS
from mobilediff.loading import NAMED_MODELS, load_pipeline, resolve_model, shared_components
from mobilediff.metrics import FeatureExtractor

# names of emoji from distinct sub-categories, as the captions spell them
PROMPTS = ["cat face", "red apple", "slice of pizza", "rocket", "smiling face with sunglasses", "ghost",
           "deciduous tree", "automobile"]


def test_names_resolve_and_the_student_borrows_the_teachers_components():
    teacher, student = resolve_model("default:emoji"), resolve_model("default:emoji:lcm")
    assert NAMED_MODELS["default:emoji:lcm"] == student and student.parent.parent == teacher
    borrowed = shared_components(student)
    assert {"text_encoder", "vae"} <= set(borrowed)
    assert borrowed["vae"].resolve() == (teacher / "vae").resolve()
    card = model_card(load_pipeline("default:emoji:lcm"), student, "default:emoji:lcm")
    assert (card.role.method, card.plan.sampler, card.plan.steps) == ("lcm", "lcm", 4)
    assert model_card(load_pipeline("default:emoji"), teacher, "default:emoji").role.role == "teacher"


@pytest.fixture(scope="module")
def classifier():
    folder = NAMED_EXTRACTORS["default:emoji"]
    config = json.loads((folder / "config.json").read_text())
    from mobilediff.features import load_classifier

    return load_classifier(folder, config), config


def test_the_extractor_is_named_and_better_than_chance_on_held_out_sprites(classifier):
    _, config = classifier
    record = config["training"]
    assert record["validation_accuracy"] > 4 * record["chance_accuracy"]
    fx = FeatureExtractor.load("default:emoji")
    assert (fx.kind, fx.dim) == ("classifier", config["architecture"]["feature_dim"])


@pytest.mark.slow
def test_student_images_are_recognised_by_the_classifier(classifier):
    """Top-5 sub-category of each 4-step student image against the sub-category of the sprite that prompt names."""
    from mobilediff.sampling import generate

    net, config = classifier
    labels = config["training"]["labels"]
    truth = {"cat face": "animal-mammal", "red apple": "food-fruit", "slice of pizza": "food-prepared",
             "rocket": "transport-air", "smiling face with sunglasses": "face-glasses", "ghost": "face-costume",
             "deciduous tree": "plant-other", "automobile": "transport-ground"}
    pipe = load_pipeline("default:emoji:lcm")
    images = generate(pipe, PROMPTS, list(range(len(PROMPTS))), 4, "lcm", 3.5)
    with torch.no_grad():
        top5 = net(images).topk(5, dim=1).indices  # the classifier reads [-1, 1] images at its own 64 px
    hits = [truth[p] in [labels[i] for i in row] for p, row in zip(PROMPTS, top5.tolist())]
    # a top-5 hit by chance among the classifier's 99 labels has p ~ 0.05, so 3 or more of 8 by chance has p < 0.006;
    # measured: 4 of 8 for this student (its 50-step teacher: 3 of 8)
    assert sum(hits) >= 3, dict(zip(PROMPTS, hits))
