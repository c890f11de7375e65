"""The default model's tokenizer is the real CLIP BPE vocabulary: checked against golden ids and against an
independent implementation of OpenAI's simple_tokenizer BPE over the same merges."""
import json
import re
from functools import lru_cache

import pytest
from transformers import CLIPTokenizer

from mobilediff.data import sample_scene
from mobilediff.loading import DEFAULT_MODEL_DIR
from mobilediff.tokenizer import bytes_to_unicode

TOK_DIR = DEFAULT_MODEL_DIR / "tokenizer"


@pytest.fixture(scope="module")
def tok():
    return CLIPTokenizer.from_pretrained(str(TOK_DIR))


class ReferenceBPE:
    """OpenAI CLIP simple_tokenizer's algorithm, ASCII subset (no ftfy)."""

    PAT = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+")

    def __init__(self):
        self.encoder = json.loads((TOK_DIR / "vocab.json").read_text())
        merges = (TOK_DIR / "merges.txt").read_text().split("\n")[1:]
        self.ranks = {tuple(m.split()): i for i, m in enumerate(m for m in merges if m)}
        self.byte_encoder = bytes_to_unicode()

    @lru_cache(maxsize=None)
    def bpe(self, token):
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            new, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    new.append(word[i] + word[i + 1])
                    i += 2
                else:
                    new.append(word[i])
                    i += 1
            word = tuple(new)
        return word

    def encode(self, text):
        text = " ".join(text.split()).strip().lower()
        ids = [49406]
        for t in self.PAT.findall(text):
            t = "".join(self.byte_encoder[b] for b in t.encode("utf-8"))
            ids += [self.encoder[p] for p in self.bpe(t)]
        return ids + [49407]


def test_vocabulary_layout(tok):
    assert len(tok) == 49408
    assert tok.bos_token_id == 49406 and tok.eos_token_id == 49407 and tok.pad_token_id == 49407
    assert tok.model_max_length == 32


def test_golden_ids_of_the_published_clip_tokenizer(tok):
    # ids of openai/clip-vit-large-patch14 (Stable Diffusion's tokenizer) for this sentence
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_ids_match_reference_bpe(tok):
    ref = ReferenceBPE()
    texts = [sample_scene(0, i).caption for i in range(300)] + [
        "A big RED triangle, in the top-left corner!", "it's 2026: diffusion's on phones", "rhombus rhombi xyzzyq",
        "   lots   of    spaces  ", "numbers 12345 and symbols #@%&*",
    ]
    for t in texts:
        assert tok(t).input_ids == ref.encode(t), t


def test_licence_notice_ships_with_the_vocabulary():
    assert "Permission is hereby granted" in (TOK_DIR / "LICENSE-open_clip").read_text()
