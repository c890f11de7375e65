"""Rebuild the real CLIP BPE tokenizer files (vocab.json, merges.txt) from ``bpe_simple_vocab_16e6.txt.gz``.

That file is OpenAI CLIP's byte-pair-encoding table; the MIT-licensed open-clip-torch wheel carries it as
package data. This module turns it into the two files ``transformers.CLIPTokenizer`` reads, exactly the way
OpenAI's ``simple_tokenizer.py`` builds its vocabulary (49,408 ids: 256 byte symbols, the same with the
end-of-word marker, 48,894 merges, then ``<|startoftext|>`` = 49406 and ``<|endoftext|>`` = 49407).

Usage (what built the default model's tokenizer):

    pip download --no-deps -d /tmp/oc open-clip-torch==3.3.0
    python -m mobilediff.tokenizer /tmp/oc/open_clip_torch-3.3.0-py3-none-any.whl OUT_DIR --max-length 32
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import zipfile
from pathlib import Path

from mobilediff.io import atomic_write_bytes

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
VOCAB_GZ_IN_WHEEL = "open_clip/bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # what simple_tokenizer.py keeps of the table


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def build_vocab(bpe_table: str) -> tuple[dict[str, int], list[str]]:
    """(vocab, merges) from the text of bpe_simple_vocab_16e6.txt."""
    merges = bpe_table.split("\n")[1 : N_MERGES + 1]
    pairs = [tuple(m.split()) for m in merges]
    symbols = list(bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols] + ["".join(p) for p in pairs] + [BOS, EOS]
    return {tok: i for i, tok in enumerate(vocab_list)}, [" ".join(p) for p in pairs]


def read_bpe_table(path: Path) -> str:
    """The BPE table from a .txt.gz file or from an open-clip-torch wheel."""
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as z:
            data = z.read(VOCAB_GZ_IN_WHEEL)
    else:
        data = path.read_bytes()
    return gzip.GzipFile(fileobj=io.BytesIO(data)).read().decode("utf-8")


def write_tokenizer_files(bpe_table: str, out_dir: Path, max_length: int = 77) -> None:
    """Write vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json to ``out_dir``.

    The layout and special tokens are those of Stable Diffusion's tokenizer folder (pad = eos).
    """
    vocab, merges = build_vocab(bpe_table)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "vocab.json", json.dumps(vocab, ensure_ascii=False).encode("utf-8"))
    atomic_write_bytes(out_dir / "merges.txt", ("#version: 0.2\n" + "\n".join(merges) + "\n").encode("utf-8"))
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, "do_lower_case": True,
              "clean_up_tokenization_spaces": True, "errors": "replace", **special}
    atomic_write_bytes(out_dir / "tokenizer_config.json", json.dumps(config, indent=2).encode())
    atomic_write_bytes(out_dir / "special_tokens_map.json", json.dumps(special, indent=2).encode())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source", type=Path, help="bpe_simple_vocab_16e6.txt.gz, or an open-clip-torch wheel holding it")
    ap.add_argument("out_dir", type=Path, help="folder to write the tokenizer files into")
    ap.add_argument("--max-length", type=int, default=77, help="model_max_length (tokens, with bos/eos)")
    args = ap.parse_args(argv)
    write_tokenizer_files(read_bpe_table(args.source), args.out_dir, args.max_length)


if __name__ == "__main__":
    main()
