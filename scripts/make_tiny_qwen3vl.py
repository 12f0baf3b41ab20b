#!/usr/bin/env python3
"""Build the tiny random Qwen3-VL test fixtures (GGUFs, images, reference vectors) fully offline.

What it does, in order:

1. Rebuilds the real Qwen byte-level BPE tokenizer from ``qwen.tiktoken`` (shipped inside the PyPI
   ``dashscope`` package) with the ``tokenizers`` library, adds the Qwen3-VL special tokens
   151643..151668 and the Qwen3-VL chat template, and writes the processor configs.
2. Builds a tiny random ``Qwen3VLForConditionalGeneration`` (fan-in-scaled init, fixed seed, weights
   rounded to float16-representable values so the f16 GGUF holds exactly the reference weights), with a
   sentence-transformers last-token pooling module so llama.cpp's converter writes pooling type LAST.
3. Converts it with llama.cpp's ``convert_hf_to_gguf.py`` (the copy vendored in the llama-cpp-python
   sdist) to an f16 text GGUF, an f16 mmproj GGUF and a Q8_0 text GGUF, and checks their metadata.
4. Draws the test images and computes reference embeddings with transformers on the same weights,
   following the official Qwen3-VL-Embedding embedder: instruction as system message, user content
   videos -> images -> texts, chat template with the generation prompt, qwen-vl-utils image fetching
   (factor 32, min 4*32*32, max 1800*32*32 pixels), the processor with ``do_resize=False``, the
   ``Qwen3VLModel`` forward in float32, last-token pooling and L2 normalisation.

Everything is deterministic: rerunning gives byte-identical outputs on the same software stack.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import types
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "tiny-qwen3vl"
MODEL_NAME = "tiny-qwen3vl"
SEED = 20240611

# ---------------------------------------------------------------------------------------------------
# Tokenizer facts (Qwen2/2.5/3 byte-level BPE; Qwen3-VL added tokens)
# ---------------------------------------------------------------------------------------------------

# The pre-tokenizer split pattern of every Qwen tokenizer since Qwen1 (tiktoken PAT_STR).
QWEN_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)

# (content, special) in id order starting at 151643, as in Qwen3-VL's tokenizer_config.json.
QWEN3VL_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
FIRST_ADDED_ID = 151643
N_TIKTOKEN_RANKS = 151643
VOCAB_SIZE = 151936  # the model's embedding rows (padded past the 151669 tokenizer entries)

# The chat template shipped with Qwen3-VL (Instruct; Qwen3-VL-Embedding reuses the Qwen3-VL tokenizer files):
# 5292 bytes, kept byte-exact in qwen3vl_chat_template.jinja next to this script and checked by sha256.
CHAT_TEMPLATE_PATH = Path(__file__).resolve().parent / "qwen3vl_chat_template.jinja"
QWEN3VL_CHAT_TEMPLATE = CHAT_TEMPLATE_PATH.read_bytes().decode("utf-8")
QWEN3VL_CHAT_TEMPLATE_SHA256 = "3636d0f0bd6bef02654cdffdc447b79cb2cef8ab02cc75267345946291a489e4"

# ---------------------------------------------------------------------------------------------------
# Embedder facts (Qwen3-VL-Embedding's released code)
# ---------------------------------------------------------------------------------------------------
DEFAULT_INSTRUCTION = "Represent the user's input."
IMAGE_PATCH_SIZE = 16
SPATIAL_MERGE = 2
IMAGE_FACTOR = IMAGE_PATCH_SIZE * SPATIAL_MERGE  # 32: one visual token per 32x32 pixels
MIN_PIXELS = 4 * IMAGE_FACTOR * IMAGE_FACTOR
MAX_PIXELS = 1800 * IMAGE_FACTOR * IMAGE_FACTOR
MAX_LENGTH = 8192
MAX_RATIO = 200

# ---------------------------------------------------------------------------------------------------
# Tiny model shape
# ---------------------------------------------------------------------------------------------------
TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "hidden_act": "silu",
    "max_position_embeddings": 262144,
    "rms_norm_eps": 1e-6,
    "rope_theta": 5000000.0,
    # head_dim/2 = 8 rotary pairs; [3, 3, 2] interleaved (T H W T H W T H) leaves no pair to a fourth
    # section, so transformers and ggml's IMROPE assign every pair to the same axis.
    "rope_scaling": {"rope_type": "default", "mrope_section": [3, 3, 2], "mrope_interleaved": True},
    "attention_bias": False,
    "attention_dropout": 0.0,
    "tie_word_embeddings": True,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "use_cache": True,
}
VISION_CONFIG: dict[str, Any] = {
    "depth": 2,
    "hidden_size": 64,
    "hidden_act": "gelu_pytorch_tanh",
    "intermediate_size": 128,
    "num_heads": 4,
    "in_channels": 3,
    "patch_size": IMAGE_PATCH_SIZE,
    "spatial_merge_size": SPATIAL_MERGE,
    "temporal_patch_size": 2,
    "out_hidden_size": 64,
    "num_position_embeddings": 2304,
    "deepstack_visual_indexes": [0, 1],
    "initializer_range": 0.02,
}

PREPROCESSOR_CONFIG: dict[str, Any] = {
    "image_processor_type": "Qwen2VLImageProcessorFast",
    "processor_class": "Qwen3VLProcessor",
    "do_resize": True,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "do_convert_rgb": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "resample": 3,
    "size": {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
    "patch_size": IMAGE_PATCH_SIZE,
    "temporal_patch_size": 2,
    "merge_size": SPATIAL_MERGE,
}
VIDEO_PREPROCESSOR_CONFIG: dict[str, Any] = {
    "video_processor_type": "Qwen3VLVideoProcessor",
    "processor_class": "Qwen3VLProcessor",
    "do_resize": True,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "do_convert_rgb": True,
    "do_sample_frames": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "resample": 3,
    "size": {
        "shortest_edge": 128 * IMAGE_FACTOR * IMAGE_FACTOR,
        "longest_edge": 768 * IMAGE_FACTOR * IMAGE_FACTOR,
    },
    "patch_size": IMAGE_PATCH_SIZE,
    "temporal_patch_size": 2,
    "merge_size": SPATIAL_MERGE,
    "fps": 2,
    "min_frames": 4,
    "max_frames": 768,
}


def log(msg: str) -> None:
    """Print a progress line to stderr."""
    print(f"[make_tiny_qwen3vl] {msg}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: Path, obj: Any) -> None:
    """Write JSON deterministically (sorted keys only where dicts are built unordered, UTF-8, LF)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------------
# 1. Tokenizer
# ---------------------------------------------------------------------------------------------------


def find_tiktoken(explicit: Path | None) -> Path:
    """Locate qwen.tiktoken: an explicit path, else inside the installed dashscope package (not imported)."""
    if explicit is not None:
        if not explicit.is_file():
            raise SystemExit(f"--tiktoken {explicit} does not exist")
        return explicit
    spec = importlib.util.find_spec("dashscope")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("qwen.tiktoken not found: `pip install dashscope==2.0.2` or pass --tiktoken PATH")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "resources" / "qwen.tiktoken"
        if candidate.is_file():
            return candidate
    raise SystemExit("the installed dashscope has no resources/qwen.tiktoken; pass --tiktoken PATH")


def load_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """Parse a tiktoken BPE file (`base64 rank` per line) into {token bytes: rank}."""
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        token_b64, rank = line.split()
        ranks[base64.b64decode(token_b64)] = int(rank)
    if len(ranks) != N_TIKTOKEN_RANKS or sorted(ranks.values()) != list(range(N_TIKTOKEN_RANKS)):
        raise SystemExit(f"{path}: expected ranks 0..{N_TIKTOKEN_RANKS - 1}, got {len(ranks)} entries")
    return ranks


def byte_to_unicode_table() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character table used by byte-level BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def canonical_split(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes]:
    """Split a token into the two parts tiktoken's BPE joins last, using only lower-ranked merges."""
    limit = ranks[token]
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best_rank, best_at = -1, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < limit and (best_at < 0 or rank < best_rank):
                best_rank, best_at = rank, i
        if best_at < 0:
            break
        parts[best_at : best_at + 2] = [parts[best_at] + parts[best_at + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} (rank {limit}) is not reachable by lower-ranked merges")
    return parts[0], parts[1]


def build_tokenizer_object(ranks: dict[bytes, int]) -> Any:
    """Assemble the Qwen byte-level BPE `tokenizers.Tokenizer` with the Qwen3-VL added tokens."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    to_unicode = byte_to_unicode_table()

    def as_str(token: bytes) -> str:
        return "".join(to_unicode[b] for b in token)

    vocab = {as_str(tok): rank for tok, rank in ranks.items()}
    merges: list[tuple[str, str]] = []
    for tok, _rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(tok) < 2:
            continue
        left, right = canonical_split(ranks, tok)
        merges.append((as_str(left), as_str(right)))

    model = models.BPE(
        vocab=vocab,
        merges=merges,
        dropout=None,
        unk_token=None,
        continuing_subword_prefix="",
        end_of_word_suffix="",
        fuse_unk=False,
        byte_fallback=False,
        ignore_merges=False,
    )
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(
        add_prefix_space=False, trim_offsets=False, use_regex=False
    )
    # decoders.ByteLevel() takes no options in Python; spell them as Qwen's tokenizer.json does (no effect on
    # decoding, only on the serialised form).
    as_json = json.loads(tokenizer.to_str())
    as_json["decoder"] = {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": False,
        "use_regex": False,
    }
    tokenizer = Tokenizer.from_str(json.dumps(as_json, ensure_ascii=False))
    for offset, (content, special) in enumerate(QWEN3VL_ADDED_TOKENS):
        added = AddedToken(
            content, single_word=False, lstrip=False, rstrip=False, normalized=False, special=special
        )
        if special:
            tokenizer.add_special_tokens([added])
        else:
            tokenizer.add_tokens([added])
        got = tokenizer.token_to_id(content)
        if got != FIRST_ADDED_ID + offset:
            raise RuntimeError(f"{content} got id {got}, expected {FIRST_ADDED_ID + offset}")
    log(f"tokenizer: {len(vocab)} BPE tokens, {len(merges)} merges, {len(QWEN3VL_ADDED_TOKENS)} added tokens")
    return tokenizer


def write_tokenizer(hf_dir: Path, ranks: dict[bytes, int]) -> None:
    """Save tokenizer.json / tokenizer_config.json (with the chat template) the way Qwen3-VL ships them."""
    from transformers import Qwen2TokenizerFast

    tokenizer_object = build_tokenizer_object(ranks)
    special = [content for content, is_special in QWEN3VL_ADDED_TOKENS if is_special]
    tok = Qwen2TokenizerFast(
        tokenizer_object=tokenizer_object,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=special[1:],
        model_max_length=262144,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        add_prefix_space=False,
        errors="replace",
    )
    tok.chat_template = QWEN3VL_CHAT_TEMPLATE
    tok.save_pretrained(str(hf_dir))
    # Keep the template inside tokenizer_config.json (what llama.cpp's converter and older loaders read).
    config_path = hf_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["chat_template"] = QWEN3VL_CHAT_TEMPLATE
    config["add_bos_token"] = False
    write_json(config_path, config)
    jinja = hf_dir / "chat_template.jinja"
    if jinja.exists():
        jinja.unlink()


def write_processor_configs(hf_dir: Path) -> None:
    """Write preprocessor/video preprocessor configs and the processor chat template."""
    write_json(hf_dir / "preprocessor_config.json", PREPROCESSOR_CONFIG)
    write_json(hf_dir / "video_preprocessor_config.json", VIDEO_PREPROCESSOR_CONFIG)
    write_json(hf_dir / "chat_template.json", {"chat_template": QWEN3VL_CHAT_TEMPLATE})


# ---------------------------------------------------------------------------------------------------
# 2. Model
# ---------------------------------------------------------------------------------------------------


def init_parameters(model: Any, seed: int) -> None:
    """Fan-in-scaled deterministic init; every value rounded to float16-representable float32."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if param.ndim >= 2:
                fan_in = math.prod(param.shape[1:])
                value = torch.randn(param.shape, generator=gen, dtype=torch.float32) / math.sqrt(fan_in)
            elif name.endswith("bias"):
                value = 0.05 * torch.randn(param.shape, generator=gen, dtype=torch.float32)
            else:  # norm scales
                value = 1.0 + 0.1 * torch.randn(param.shape, generator=gen, dtype=torch.float32)
            param.copy_(value.to(torch.float16).to(torch.float32))


def build_model(hf_dir: Path, seed: int) -> None:
    """Create and save the tiny Qwen3VLForConditionalGeneration plus its sentence-transformers pooling."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    torch.manual_seed(seed)
    config = Qwen3VLConfig(
        text_config=dict(TEXT_CONFIG),
        vision_config=dict(VISION_CONFIG),
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=True,
    )
    config.architectures = ["Qwen3VLForConditionalGeneration"]
    model = Qwen3VLForConditionalGeneration(config).eval()  # float32: torch's default dtype
    init_parameters(model, seed)
    model.tie_weights()
    if model.lm_head.weight.data_ptr() != model.model.language_model.embed_tokens.weight.data_ptr():
        raise RuntimeError("lm_head is not tied to embed_tokens")
    model.save_pretrained(str(hf_dir), safe_serialization=True)
    gen_cfg = hf_dir / "generation_config.json"
    if gen_cfg.exists():
        gen_cfg.unlink()
    write_json(
        hf_dir / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
    )
    write_json(
        hf_dir / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": TEXT_CONFIG["hidden_size"],
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": False,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": True,
            "include_prompt": True,
        },
    )
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params} parameters saved to {hf_dir}")


# ---------------------------------------------------------------------------------------------------
# 3. Conversion
# ---------------------------------------------------------------------------------------------------


LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"  # the sdist whose vendored llama.cpp the engine runs
SDIST_CACHE = Path.home() / ".cache" / "launcher" / "llama-cpp-python-0.3.36"


def _has_converter(folder: Path) -> bool:
    return (folder / "convert_hf_to_gguf.py").is_file() and (folder / "gguf-py").is_dir()


def fetch_llama_cpp_sdist(cache: Path = SDIST_CACHE) -> Path:
    """Download the pinned llama-cpp-python sdist with pip (the package registry is all it needs)
    and unpack it once into `cache`; its vendor/llama.cpp folder holds the converter."""
    import tarfile

    vendored = cache / "vendor" / "llama.cpp"
    if _has_converter(vendored):
        return vendored
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llama-sdist-", dir=cache.parent) as tmp:
        log(f"fetching the {LLAMA_CPP_PYTHON} sdist for llama.cpp's converter (pip download)")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-binary",
                ":all:",
                "--no-deps",
                LLAMA_CPP_PYTHON,
                "-d",
                tmp,
            ],
            check=True,
        )
        archive = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        unpacked = next(p for p in Path(tmp).iterdir() if p.is_dir())
        if cache.exists():
            shutil.rmtree(cache)
        unpacked.rename(cache)
    if not _has_converter(vendored):
        raise SystemExit(f"the {LLAMA_CPP_PYTHON} sdist has no vendor/llama.cpp converter: {cache}")
    return vendored


def find_llama_cpp(explicit: Path | None, fetch: bool = True) -> Path:
    """Locate llama.cpp's source tree (convert_hf_to_gguf.py + gguf-py): --llama-cpp, then
    $LLAMA_CPP_DIR, then the pinned sdist unpacked in ~/.cache/launcher (fetched if missing)."""
    candidates = [explicit] if explicit else []
    if os.environ.get("LLAMA_CPP_DIR"):
        candidates.append(Path(os.environ["LLAMA_CPP_DIR"]))
    candidates.append(SDIST_CACHE / "vendor" / "llama.cpp")
    for cand in candidates:
        if cand is not None and _has_converter(cand):
            return cand
    if explicit is not None or not fetch:
        raise SystemExit(
            f"llama.cpp sources not found at {explicit or candidates[-1]}: pass --llama-cpp DIR (or set "
            f"LLAMA_CPP_DIR) pointing at the vendor/llama.cpp folder of the {LLAMA_CPP_PYTHON} sdist"
        )
    return fetch_llama_cpp_sdist()


def run_converter(llama_cpp: Path, hf_dir: Path, out: Path, outtype: str, mmproj: bool = False) -> None:
    """Run the vendored convert_hf_to_gguf.py with its own gguf-py."""
    cmd = [
        sys.executable,
        str(llama_cpp / "convert_hf_to_gguf.py"),
        str(hf_dir),
        "--outfile",
        str(out),
        "--outtype",
        outtype,
        "--model-name",
        MODEL_NAME,
    ]
    if mmproj:
        cmd.append("--mmproj")
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)
    env["PYTHONPATH"] = os.pathsep.join([str(llama_cpp / "gguf-py"), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env["PYTHONHASHSEED"] = "0"
    log(f"convert: {out.name} ({outtype}{', mmproj' if mmproj else ''})")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"converter failed for {out.name}")


def gguf_metadata(llama_cpp: Path, path: Path) -> dict[str, Any]:
    """A GGUF's metadata (large token/merge arrays left out) read with the vendored gguf-py."""
    sys.path.insert(0, str(llama_cpp / "gguf-py"))
    try:
        import gguf
    finally:
        sys.path.pop(0)
    reader = gguf.GGUFReader(str(path))
    skip = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type")
    meta = {key: fld.contents() for key, fld in reader.fields.items() if key not in skip}
    meta["tensor_types"] = sorted({t.tensor_type.name for t in reader.tensors})
    return meta


def check_ggufs(llama_cpp: Path, text_ggufs: Sequence[Path], mmproj: Path) -> None:
    """Assert the converter wrote what the engine relies on (pooling LAST, qwen2 pre-tokenizer, ...)."""
    text_expect = {
        "general.architecture": "qwen3vl",
        "qwen3vl.pooling_type": 3,  # LLAMA_POOLING_TYPE_LAST
        "tokenizer.ggml.pre": "qwen2",
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.eos_token_id": 151645,
        "tokenizer.ggml.add_bos_token": False,
        "qwen3vl.rope.dimension_sections": [*TEXT_CONFIG["rope_scaling"]["mrope_section"], 0],
        "qwen3vl.n_deepstack_layers": len(VISION_CONFIG["deepstack_visual_indexes"]),
        "tokenizer.chat_template": QWEN3VL_CHAT_TEMPLATE,
    }
    mmproj_expect = {
        "general.architecture": "clip",
        "clip.projector_type": "qwen3vl_merger",
        "clip.vision.patch_size": IMAGE_PATCH_SIZE,
        "clip.vision.spatial_merge_size": SPATIAL_MERGE,
        "clip.vision.is_deepstack_layers": [True, True],
        "clip.vision.image_mean": [0.5, 0.5, 0.5],
    }
    for path, expect in [(p, text_expect) for p in text_ggufs] + [(mmproj, mmproj_expect)]:
        meta = gguf_metadata(llama_cpp, path)
        for key, want in expect.items():
            got = meta.get(key)
            if got != want:
                raise SystemExit(f"{path.name}: {key} = {got!r}, expected {want!r}")
        shown = {k: meta[k] for k in expect if k != "tokenizer.chat_template"}
        log(f"{path.name}: {shown} tensors {meta['tensor_types']}")


# ---------------------------------------------------------------------------------------------------
# 4. Images
# ---------------------------------------------------------------------------------------------------


def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer x/y coordinate grids of shape (height, width)."""
    ys, xs = np.mgrid[0:height, 0:width]
    return xs.astype(np.int64), ys.astype(np.int64)


def draw_images(images_dir: Path) -> dict[str, Path]:
    """Draw the deterministic test images; return {key: path}."""
    images_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, Image.Image] = {}

    # Odd size RGB with a busy pattern: 123x77 -> 128x64 (8 tokens).
    x, y = _grid(123, 77)
    rgb = np.stack([(x * 2 + y) % 256, (y * 3 + (x // 8) * 40) % 256, ((x ^ y) * 5) % 256], axis=-1)
    made["odd_rgb_123x77"] = Image.fromarray(rgb.astype(np.uint8), "RGB")

    # Tiny: 10x10 -> scaled up to the 4-token minimum, 64x64.
    x, y = _grid(10, 10)
    tiny = np.stack([((x + y) % 2) * 255, x * 25, y * 25], axis=-1)
    made["tiny_10x10"] = Image.fromarray(tiny.astype(np.uint8), "RGB")

    # Huge: 2600x2000 flat colour blocks (compresses to a few KB) -> capped at max pixels, 1536x1184.
    x, y = _grid(2600, 2000)
    palette = np.array(
        [[230, 57, 70], [241, 250, 238], [168, 218, 220], [69, 123, 157], [29, 53, 87], [255, 183, 3]],
        dtype=np.uint8,
    )
    made["huge_2600x2000"] = Image.fromarray(palette[(x // 200 + 2 * (y // 250)) % len(palette)], "RGB")

    # RGBA: left third fully transparent over saturated red, middle alpha ramp, right opaque.
    x, y = _grid(150, 100)
    color = np.stack([np.full_like(x, 220), (y * 2) % 256, (x * 3) % 256], axis=-1)
    alpha = np.where(x < 50, 0, np.where(x < 100, (x - 50) * 5, 255))
    alpha = np.where((y // 10) % 3 == 0, np.minimum(alpha, 128), alpha)
    made["rgba_150x100"] = Image.fromarray(np.dstack([color, alpha]).astype(np.uint8), "RGBA")

    # Grayscale L, 144x80: 144/32 = 4.5 and 80/32 = 2.5 -> banker's rounding gives 128x64 (half-up: 160x96).
    x, y = _grid(144, 80)
    made["gray_144x80"] = Image.fromarray(((x * 7 + y * 3) % 256).astype(np.uint8), "L")

    # Palette P, 96x96, 8 colours, no transparency.
    x, y = _grid(96, 96)
    pal_img = Image.fromarray(((x // 12 + y // 12) % 8).astype(np.uint8), "P")
    pal_img.putpalette(
        [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 0, 255, 0, 255, 0, 255, 255, 255, 255, 255]
    )
    made["palette_96x96"] = pal_img

    # Palette with a transparent index (tRNS): the reference's to_rgb() only composites mode RGBA, so the
    # transparent pixels keep their palette colour (blue) instead of turning white.
    x, y = _grid(64, 48)
    idx = np.where((x // 8 + y // 8) % 2 == 0, 0, 1 + (x // 16) % 3).astype(np.uint8)
    trns_img = Image.fromarray(idx, "P")
    trns_img.putpalette([0, 0, 255, 250, 200, 0, 20, 160, 60, 120, 40, 200])
    made["palette_trns_64x48"] = trns_img

    paths: dict[str, Path] = {}
    for key, img in made.items():
        path = images_dir / f"{key}.png"
        if key == "palette_trns_64x48":
            img.save(path, format="PNG", transparency=0, optimize=False, compress_level=9)
        else:
            img.save(path, format="PNG", optimize=False, compress_level=9)
        paths[key] = path
    return paths


# ---------------------------------------------------------------------------------------------------
# 5. Reference embeddings
# ---------------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One reference input: texts, image keys, optional instruction."""

    name: str
    texts: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    instruction: str | None = None
    note: str | None = None


LONG_TEXT = " ".join(
    [
        "The launcher indexes every document, photo and note on this computer so that a short query typed",
        "after the hotkey finds the right file even when its name says nothing about its content.",
        "Quarterly budget spreadsheets, holiday photos from Lisbon, the scanned lease agreement, a draft of",
        "the conference talk on vector search, meeting minutes from the 14th of March, invoices numbered",
        "INV-2023-0042 through INV-2023-0057, and a folder of recipes (sourdough, ramen, and a lemon tart)",
        "all live in different places. Each file is read, split into passages where it is long, embedded",
        "with the same model that later embeds the query, and stored next to its path and modification time.",
        "When the user types something like 'that contract with the blue letterhead' or 'slides about",
        "approximate nearest neighbours', the query vector is compared with every stored vector and the",
        "closest files are listed within a few milliseconds. Nothing leaves the machine: the model runs",
        "locally on the CPU or a GPU when one is present, and the index is an ordinary file in the user's",
        "data directory that can be deleted at any time to start over. Unicode matters too: café, naïve,",
        "Zürich, 東京, and emoji like 📄 or 🗂️ must survive the round trip unchanged.",
    ]
)

CASES: tuple[Case, ...] = (
    Case("text_plain_en", texts=["A photo of a golden retriever playing in fresh snow."]),
    Case(
        "text_multilingual",
        texts=[
            "北京的冬天很冷。 مرحبا بالعالم! 😀🎉👩‍💻 Crème brûlée à la française, naïve façade, Ελληνικά."
        ],
    ),
    Case("text_nfc", texts=["caf\u00e9 r\u00e9sum\u00e9"], note="NFC twin of text_nfd"),
    Case(
        "text_nfd",
        texts=["cafe\u0301 re\u0301sume\u0301"],
        note="NFD spelling of text_nfc; the reference tokenizer normalises to NFC: same ids and vector",
    ),
    Case(
        "instruction_no_punct",
        texts=["quarterly budget spreadsheet"],
        instruction="Retrieve files that match the user's query",
        note="'.' is appended to the instruction",
    ),
    Case(
        "instruction_punct",
        texts=["quarterly budget spreadsheet"],
        instruction="  Find the document the user is looking for:  ",
        note="instruction is stripped; ends with punctuation so nothing is appended",
    ),
    Case("empty", note="no text, image or video: the user content becomes the text NULL"),
    Case("text_long", texts=[LONG_TEXT]),
    Case("image_odd_rgb", images=["odd_rgb_123x77"]),
    Case("image_tiny", images=["tiny_10x10"], note="upscaled to the 4-token minimum"),
    Case("image_huge", images=["huge_2600x2000"], note="downscaled to the 1800-token maximum"),
    Case("image_rgba", images=["rgba_150x100"], note="alpha composited onto white"),
    Case("image_gray", images=["gray_144x80"], note="mode L; 4.5 and 2.5 round to even (banker's rounding)"),
    Case("image_palette", images=["palette_96x96"], note="mode P"),
    Case(
        "image_palette_transparent",
        images=["palette_trns_64x48"],
        note="mode P with tRNS: the reference converts with Image.convert('RGB'), dropping transparency",
    ),
    Case("text_and_image", texts=["a colourful striped test pattern"], images=["odd_rgb_123x77"]),
    Case(
        "two_images_and_text",
        texts=["two test images"],
        images=["tiny_10x10", "gray_144x80"],
        instruction="Represent this pair of images for retrieval",
    ),
)


# --- image fetching: the official qwen_vl_utils path, and an independent reimplementation to cross-check.


def _import_qwen_vl_utils() -> Any:
    """Import qwen_vl_utils.vision_process; stub torchvision (video only) when it is missing or broken."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        saved = {k: v for k, v in sys.modules.items() if k == "torchvision" or k.startswith("torchvision.")}
        for k in saved:
            del sys.modules[k]
        stub = types.ModuleType("torchvision")
        stub.__version__ = "0.0.0"  # type: ignore[attr-defined]
        stub_io = types.ModuleType("torchvision.io")
        stub_tf = types.ModuleType("torchvision.transforms")
        stub_tf.InterpolationMode = types.SimpleNamespace(BICUBIC="bicubic")  # type: ignore[attr-defined]
        stub.io, stub.transforms = stub_io, stub_tf  # type: ignore[attr-defined]
        sys.modules.update(
            {"torchvision": stub, "torchvision.io": stub_io, "torchvision.transforms": stub_tf}
        )
        try:
            import qwen_vl_utils.vision_process as vp
        finally:
            for k in ("torchvision", "torchvision.io", "torchvision.transforms"):
                sys.modules.pop(k, None)
            sys.modules.update(saved)
        return vp
    import qwen_vl_utils.vision_process as vp

    return vp


def smart_resize(
    height: int,
    width: int,
    factor: int = IMAGE_FACTOR,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
) -> tuple[int, int]:
    """Target (height, width): multiples of factor, pixel count within bounds, Python round() (to even)."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError("aspect ratio too extreme")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def fetch_image_reimplemented(path: Path) -> Image.Image:
    """Open, convert to RGB (only RGBA is composited on white), smart-resize with PIL bicubic."""
    with Image.open(path) as opened:
        img = opened
        img.load()
        if img.mode == "RGBA":
            rgb = Image.new("RGB", img.size, (255, 255, 255))
            rgb.paste(img, mask=img.split()[3])
        else:
            rgb = img.convert("RGB")
    height, width = smart_resize(rgb.height, rgb.width)
    return rgb.resize((width, height), resample=Image.Resampling.BICUBIC)


def format_model_input(
    texts: Sequence[str], image_paths: Sequence[Path], instruction: str | None
) -> list[dict]:
    """The embedder's conversation: system = instruction, user = videos, images, texts (or 'NULL')."""
    if instruction:
        instruction = instruction.strip()
        if instruction and not unicodedata.category(instruction[-1]).startswith("P"):
            instruction = instruction + "."
    content: list[dict[str, Any]] = []
    conversation = [
        {"role": "system", "content": [{"type": "text", "text": instruction or DEFAULT_INSTRUCTION}]},
        {"role": "user", "content": content},
    ]
    if not texts and not image_paths:
        content.append({"type": "text", "text": "NULL"})
        return conversation
    for path in image_paths:
        content.append(
            {
                "type": "image",
                "image": "file://" + str(path),
                "min_pixels": MIN_PIXELS,
                "max_pixels": MAX_PIXELS,
            }
        )
    for text in texts:
        content.append({"type": "text", "text": text})
    return conversation


def load_processor(hf_dir: Path) -> Any:
    """Qwen3VLProcessor with the slow (numpy) image processor and no video processor.

    transformers' video processor needs torchvision, which has no CPU wheel matching torch 2.13 on PyPI;
    no case here has a video, and the processor only touches the video processor for videos. The slow
    image processor is used everywhere so the reference does not depend on whether torchvision exists.
    """
    from transformers import AutoTokenizer, Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    class ImageOnlyQwen3VLProcessor(Qwen3VLProcessor):
        """Qwen3VLProcessor that accepts a missing video processor."""

        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            """Allow video_processor=None; check everything else as usual."""
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    image_processor = Qwen2VLImageProcessor.from_pretrained(str(hf_dir))
    # fix_mistral_regex=False only silences a spurious transformers 4.57.3+ warning (no change to the regex).
    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir), padding_side="right", fix_mistral_regex=False)
    template = json.loads((hf_dir / "chat_template.json").read_text(encoding="utf-8"))["chat_template"]
    return ImageOnlyQwen3VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=None, chat_template=template
    )


def compute_references(hf_dir: Path, out_dir: Path, image_paths: dict[str, Path]) -> list[dict[str, Any]]:
    """Run every case through the transformers reference and return the JSON records."""
    import torch
    import torch.nn.functional as F
    from transformers import Qwen3VLForConditionalGeneration

    torch.set_num_threads(1)
    vp = _import_qwen_vl_utils()
    processor = load_processor(hf_dir)
    tokenizer = processor.tokenizer
    model = Qwen3VLForConditionalGeneration.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    backbone = model.model  # Qwen3VLModel: what the embedder runs (no LM head)
    image_pad_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")

    records: list[dict[str, Any]] = []
    for case in CASES:
        paths = [image_paths[key] for key in case.images]
        conversation = format_model_input(case.texts, paths, case.instruction)
        prompts = processor.apply_chat_template([conversation], add_generation_prompt=True, tokenize=False)
        prompt = prompts[0]
        images, videos, video_kwargs = vp.process_vision_info(
            [conversation],
            image_patch_size=IMAGE_PATCH_SIZE,
            return_video_metadata=True,
            return_video_kwargs=True,
        )
        if videos is not None:
            raise RuntimeError("no video cases are expected")
        for path, img in zip(paths, images or [], strict=True):
            mine = fetch_image_reimplemented(path)
            if mine.size != img.size or mine.tobytes() != img.tobytes():
                raise RuntimeError(f"{path.name}: qwen_vl_utils.fetch_image and the reimplementation differ")
        inputs = processor(
            text=prompts,
            images=images,
            videos=None,
            video_metadata=None,
            truncation=True,
            max_length=MAX_LENGTH,
            padding=True,
            do_resize=False,
            return_tensors="pt",
            **video_kwargs,
        )
        with torch.no_grad():
            out = backbone(**{k: v for k, v in inputs.items()})
        hidden = out.last_hidden_state
        mask = inputs["attention_mask"]
        last = mask.shape[1] - mask.flip(dims=[1]).argmax(dim=1) - 1
        pooled = hidden[torch.arange(hidden.shape[0]), last]
        emb = F.normalize(pooled, p=2, dim=-1)[0].to(torch.float32).numpy()

        input_ids = inputs["input_ids"][0].tolist()
        counts: list[int] = []
        if images:
            grid = inputs["image_grid_thw"].tolist()
            counts = [int(t * h * w) // (SPATIAL_MERGE**2) for t, h, w in grid]
            if sum(counts) != input_ids.count(image_pad_id):
                raise RuntimeError(f"{case.name}: image token count mismatch")
        record: dict[str, Any] = {
            "name": case.name,
            "texts": list(case.texts),
            "images": [p.relative_to(out_dir).as_posix() for p in paths],
            "instruction": case.instruction,
            "prompt": prompt,
            "input_ids": input_ids,
            "image_token_counts": counts,
            "resized": [[img.width, img.height] for img in (images or [])],
            "embedding": [float(f"{v:.9g}") for v in emb.tolist()],
        }
        if case.note:
            record["note"] = case.note
        records.append(record)
        log(f"reference: {case.name}: {len(input_ids)} tokens, images {record['resized']}")
    by_name = {r["name"]: r for r in records}
    if by_name["text_nfd"]["input_ids"] != by_name["text_nfc"]["input_ids"]:
        raise RuntimeError("NFD and NFC spellings tokenised differently: the NFC normaliser is missing")
    return records


# ---------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------


def iter_outputs(out_dir: Path) -> Iterator[Path]:
    """Every file the script produces under the output folder (README excluded)."""
    for path in sorted(out_dir.rglob("*")):
        if path.is_file() and path.name != "README.md":
            yield path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="fixture folder (default: %(default)s)")
    parser.add_argument(
        "--tiktoken", type=Path, default=None, help="path to qwen.tiktoken (default: from dashscope)"
    )
    parser.add_argument(
        "--llama-cpp",
        type=Path,
        default=None,
        help="llama.cpp source folder with convert_hf_to_gguf.py and gguf-py "
        "(default: $LLAMA_CPP_DIR, then the llama-cpp-python 0.3.36 sdist in /work/cache)",
    )
    parser.add_argument(
        "--hf-dir",
        type=Path,
        default=None,
        help="keep the intermediate Hugging Face model folder here (default: a temp folder)",
    )
    parser.add_argument("--seed", type=int, default=SEED, help="random seed (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Build everything and print the sha256 of each produced file."""
    args = parse_args(argv)
    digest = hashlib.sha256(QWEN3VL_CHAT_TEMPLATE.encode("utf-8")).hexdigest()
    if digest != QWEN3VL_CHAT_TEMPLATE_SHA256:
        raise SystemExit(f"embedded chat template sha256 {digest} differs from the Qwen3-VL one")
    llama_cpp = find_llama_cpp(args.llama_cpp)
    ranks = load_tiktoken_ranks(find_tiktoken(args.tiktoken))
    out_dir: Path = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="tiny-qwen3vl-") as tmp:
        hf_dir = (args.hf_dir.resolve() if args.hf_dir else Path(tmp)) / MODEL_NAME
        if hf_dir.exists():
            shutil.rmtree(hf_dir)
        hf_dir.mkdir(parents=True)
        write_tokenizer(hf_dir, ranks)
        write_processor_configs(hf_dir)
        build_model(hf_dir, args.seed)

        text_f16 = out_dir / f"{MODEL_NAME}-f16.gguf"
        text_q8 = out_dir / f"{MODEL_NAME}-q8_0.gguf"
        mmproj = out_dir / f"mmproj-{MODEL_NAME}-f16.gguf"
        run_converter(llama_cpp, hf_dir, text_f16, "f16")
        run_converter(llama_cpp, hf_dir, text_q8, "q8_0")
        run_converter(llama_cpp, hf_dir, mmproj, "f16", mmproj=True)
        check_ggufs(llama_cpp, [text_f16, text_q8], mmproj)

        images_dir = out_dir / "images"
        if images_dir.exists():
            shutil.rmtree(images_dir)
        image_paths = draw_images(images_dir)
        records = compute_references(hf_dir, out_dir, image_paths)
        write_json(out_dir / "reference.json", records)

    for path in iter_outputs(out_dir):
        print(f"{sha256_file(path)}  {path.stat().st_size:>10}  {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
