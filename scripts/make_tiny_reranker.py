#!/usr/bin/env python3
"""Build the tiny random Qwen3-VL-Reranker test fixtures (GGUF, mmproj, reference scores) fully offline.

    python scripts/make_tiny_reranker.py [--llama-cpp DIR] [--hf-dir DIR]

What it does, in order:

1. Builds a Hugging Face folder for a tiny random Qwen3-VL reranker: the same tokenizer, chat template,
   processor configs, shapes and init as the tiny embedding fixture (all imported from
   ``make_tiny_qwen3vl.py``), but with its own seed, an UNTIED ``lm_head`` (Qwen3-VL-8B and its reranker are
   untied; with an untied head a backend that scored from the wrong rows, the input embeddings, fails the
   parity test) and a model card titled ``# Qwen3-VL-Reranker`` like the real one, which is what makes
   llama.cpp's converter treat it as a reranker.
2. Converts it with llama.cpp's ``convert_hf_to_gguf.py`` to an f16 text GGUF and an f16 mmproj, and checks
   the reranker layout the converter produced: pooling RANK, classifier labels ``["yes", "no"]`` and a
   ``cls.output.weight`` of shape 2 x hidden holding the ``lm_head`` rows of "yes" and "no".
3. Draws the test images (every side a multiple of 32, so that no Pillow resampling is involved; one
   case reuses a tiny-qwen3vl image that needs a resize) and computes reference scores with
   transformers on the same weights, following the official
   ``Qwen3VLReranker`` (QwenLM/Qwen3-VL-Embedding, ``src/models/qwen3_vl_reranker.py``), reimplemented:
   system prompt, ``<Instruct>:`` / ``<Query>:`` / ``\\n<Document>:`` user content, images through
   ``qwen_vl_utils``, the processor with ``do_resize=False``, truncation that keeps special tokens and the
   last 5 tokens, left padding, ``Qwen3VLModel`` in float32, the last hidden state times
   ``lm_head[yes] - lm_head[no]``, sigmoid.
4. Writes ``tests/fixtures/tiny-qwen3vl/mmproj-mismatched-f16.gguf``: a vision projector whose output width
   (32) does not match the tiny embedding model (64), for the engine's mismatch test.

The Hugging Face folder (about 80 MB of float32 weights, two 151936 x 64 tables) is not stored; tests that need
it rebuild it with ``build_hf_folder`` (about 15 s). Rerunning gives byte-identical files on the same stack.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "tiny-reranker"
TINY_DIR = REPO_ROOT / "tests" / "fixtures" / "tiny-qwen3vl"
MISMATCHED_MMPROJ = TINY_DIR / "mmproj-mismatched-f16.gguf"
IMAGES = "tests/fixtures/tiny-reranker/images"
# The one image that needs a bicubic resize (123x77 -> 128x64); Pillow releases differ slightly there.
RESIZED_IMAGE = "tests/fixtures/tiny-qwen3vl/images/odd_rgb_123x77.png"
MODEL_NAME = "tiny-qwen3vl-reranker"
SEED = 20260108
MISMATCH_SEED = 20260109


def load_tiny_script() -> types.ModuleType:
    """Import scripts/make_tiny_qwen3vl.py (a script, not a package) for its tokenizer and model helpers."""
    name = "make_tiny_qwen3vl"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parent / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


tq = load_tiny_script()

# ---------------------------------------------------------------------------------------------------
# Reranker facts (Qwen3-VL-Reranker's released code)
# ---------------------------------------------------------------------------------------------------
SYSTEM_PROMPT = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
DEFAULT_INSTRUCTION = "Given a search query, retrieve relevant candidates that answer the query."
MAX_LENGTH = 10240
KEPT_TAIL = 5  # <|im_end|> \n <|im_start|> assistant \n are never truncated
YES_ID, NO_ID = 9693, 2152  # "yes" and "no" in the Qwen vocabulary

TEXT_CONFIG: dict[str, Any] = {**tq.TEXT_CONFIG, "tie_word_embeddings": False}
VISION_CONFIG: dict[str, Any] = dict(tq.VISION_CONFIG)
MODEL_CARD = """# Qwen3-VL-Reranker (tiny random test model)

Random weights with the layout of Qwen/Qwen3-VL-Reranker: a Qwen3VLForConditionalGeneration whose
lm_head rows for "yes" and "no" score (query, document) pairs. Made by scripts/make_tiny_reranker.py.
"""

# The mismatched projector: same vision tower shape, output 32 wide (the tiny embedding model takes 64).
MISMATCH_TEXT_CONFIG: dict[str, Any] = {
    **tq.TEXT_CONFIG,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
}
MISMATCH_VISION_CONFIG: dict[str, Any] = {**tq.VISION_CONFIG, "out_hidden_size": 32}


def log(msg: str) -> None:
    """Print a progress line to stderr."""
    print(f"[make_tiny_reranker] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------
# 1. The Hugging Face folder
# ---------------------------------------------------------------------------------------------------


def save_model(hf_dir: Path, text_config: dict[str, Any], vision_config: dict[str, Any], seed: int) -> int:
    """Create, initialise (fan-in scaled, f16-representable) and save a tiny Qwen3VL; returns its parameter count."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    torch.manual_seed(seed)
    tied = bool(text_config["tie_word_embeddings"])
    config = Qwen3VLConfig(
        text_config=dict(text_config),
        vision_config=dict(vision_config),
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=tied,
    )
    config.architectures = ["Qwen3VLForConditionalGeneration"]
    model = Qwen3VLForConditionalGeneration(config).eval()
    tq.init_parameters(model, seed)
    shared = model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    if shared != tied:
        raise RuntimeError(f"lm_head tied={shared}, expected {tied}")
    model.save_pretrained(str(hf_dir), safe_serialization=True)
    gen_cfg = hf_dir / "generation_config.json"
    if gen_cfg.exists():
        gen_cfg.unlink()
    return sum(p.numel() for p in model.parameters())


def build_hf_folder(hf_dir: Path, *, tiktoken: Path | None = None, seed: int = SEED) -> Path:
    """Write the tiny reranker's Hugging Face folder (tokenizer, configs, weights, model card); returns it."""
    if hf_dir.exists():
        shutil.rmtree(hf_dir)
    hf_dir.mkdir(parents=True)
    ranks = tq.load_tiktoken_ranks(tq.find_tiktoken(tiktoken))
    tq.write_tokenizer(hf_dir, ranks)
    tq.write_processor_configs(hf_dir)
    n_params = save_model(hf_dir, TEXT_CONFIG, VISION_CONFIG, seed)
    (hf_dir / "README.md").write_text(MODEL_CARD, encoding="utf-8")
    log(f"model: {n_params} parameters (untied lm_head) saved to {hf_dir}")
    return hf_dir


# ---------------------------------------------------------------------------------------------------
# 2. Conversion and checks
# ---------------------------------------------------------------------------------------------------


def run_converter(llama_cpp: Path, hf_dir: Path, out: Path, name: str, *, mmproj: bool = False) -> None:
    """Run the vendored convert_hf_to_gguf.py (f16) with its own gguf-py."""
    cmd = [sys.executable, str(llama_cpp / "convert_hf_to_gguf.py"), str(hf_dir), "--outfile", str(out)]
    cmd += ["--outtype", "f16", "--model-name", name] + (["--mmproj"] if mmproj else [])
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)
    env["PYTHONPATH"] = os.pathsep.join([str(llama_cpp / "gguf-py"), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env["PYTHONHASHSEED"] = "0"
    log(f"convert: {out.name}{' (mmproj)' if mmproj else ''}")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"converter failed for {out.name}")


def gguf_tensors(llama_cpp: Path, path: Path) -> dict[str, Any]:
    """{name: ReaderTensor} of a GGUF, read with the vendored gguf-py."""
    sys.path.insert(0, str(llama_cpp / "gguf-py"))
    try:
        import gguf
    finally:
        sys.path.pop(0)
    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


def check_reranker_gguf(llama_cpp: Path, text_gguf: Path, mmproj: Path, hf_dir: Path) -> None:
    """Assert the converter wrote the rank-pooling layout with lm_head's yes/no rows as the classifier."""
    import numpy as np
    from safetensors.numpy import load_file

    meta = tq.gguf_metadata(llama_cpp, text_gguf)
    expect = {
        "general.architecture": "qwen3vl",
        "qwen3vl.pooling_type": 4,  # LLAMA_POOLING_TYPE_RANK
        "qwen3vl.classifier.output_labels": ["yes", "no"],
        "tokenizer.ggml.pre": "qwen2",
        "qwen3vl.n_deepstack_layers": len(VISION_CONFIG["deepstack_visual_indexes"]),
        "tokenizer.chat_template": tq.QWEN3VL_CHAT_TEMPLATE,
    }
    for key, want in expect.items():
        if meta.get(key) != want:
            raise SystemExit(f"{text_gguf.name}: {key} = {meta.get(key)!r}, expected {want!r}")
    tensors = gguf_tensors(llama_cpp, text_gguf)
    if "output.weight" in tensors:
        raise SystemExit(f"{text_gguf.name}: an untied reranker should have no output.weight")
    head = np.asarray(tensors["cls.output.weight"].data, dtype=np.float32)
    weights = load_file(str(hf_dir / "model.safetensors"))
    lm_head = weights["lm_head.weight"]
    if head.shape != (2, TEXT_CONFIG["hidden_size"]) or not np.array_equal(head, lm_head[[YES_ID, NO_ID]]):
        raise SystemExit(f"{text_gguf.name}: cls.output.weight is not lm_head[[yes, no]]")
    if gguf_metadata_type(llama_cpp, mmproj) != "clip":
        raise SystemExit(f"{mmproj.name} is not a clip mmproj")
    log(
        f"{text_gguf.name}: pooling RANK, labels [yes, no], cls.output.weight {head.shape} = lm_head[[yes, no]]"
    )


def gguf_metadata_type(llama_cpp: Path, path: Path) -> str:
    """general.architecture of a GGUF."""
    return str(tq.gguf_metadata(llama_cpp, path).get("general.architecture"))


def build_mismatched_mmproj(llama_cpp: Path, work: Path, out: Path) -> None:
    """An mmproj whose projector output (32 wide) fits no model in the fixtures."""
    hf_dir = work / "tiny-qwen3vl-mismatched"
    if hf_dir.exists():
        shutil.rmtree(hf_dir)
    hf_dir.mkdir(parents=True)
    tq.write_processor_configs(hf_dir)
    save_model(hf_dir, MISMATCH_TEXT_CONFIG, MISMATCH_VISION_CONFIG, MISMATCH_SEED)
    run_converter(llama_cpp, hf_dir, out, "tiny-qwen3vl-mismatched", mmproj=True)
    meta = tq.gguf_metadata(llama_cpp, out)
    if meta.get("clip.vision.projection_dim") != 32:
        raise SystemExit(
            f"{out.name}: projection_dim = {meta.get('clip.vision.projection_dim')!r}, expected 32"
        )


def draw_images(images_dir: Path) -> None:
    """Draw the test images, every side a multiple of 32 so that no resize (and no Pillow version) is involved."""
    import numpy as np
    from PIL import Image

    images_dir.mkdir(parents=True, exist_ok=True)
    ys, xs = np.mgrid[0:64, 0:128]
    stripes = np.stack([(xs // 8 * 37) % 256, (ys * 4) % 256, ((xs + ys) // 16 * 61) % 256], axis=-1)
    ys, xs = np.mgrid[0:64, 0:64]
    checker = np.where(((xs // 8 + ys // 8) % 2)[..., None] == 0, [250, 240, 20], [20, 30, 200])
    ys, xs = np.mgrid[0:64, 0:96]
    gray = (xs * 2 + ys * 3) % 256
    color = np.stack([np.full_like(xs, 220), (ys * 4) % 256, (xs * 2) % 256], axis=-1)
    alpha = np.where(xs < 32, 0, np.where(xs < 64, (xs - 32) * 8, 255))
    ys, xs = np.mgrid[0:64, 0:64]
    trns = Image.fromarray(
        np.where((xs // 8 + ys // 8) % 2 == 0, 0, 1 + (xs // 16) % 3).astype(np.uint8), "P"
    )
    trns.putpalette([0, 0, 255, 250, 200, 0, 20, 160, 60, 120, 40, 200])
    made = {
        "stripes_128x64": Image.fromarray(stripes.astype(np.uint8), "RGB"),
        "checker_64x64": Image.fromarray(checker.astype(np.uint8), "RGB"),
        "gray_96x64": Image.fromarray(gray.astype(np.uint8), "L"),
        "rgba_96x64": Image.fromarray(np.dstack([color, alpha]).astype(np.uint8), "RGBA"),
        "palette_trns_64x64": trns,
    }
    for key, img in made.items():
        extra = {"transparency": 0} if key == "palette_trns_64x64" else {}
        img.save(images_dir / f"{key}.png", format="PNG", optimize=False, compress_level=9, **extra)


# ---------------------------------------------------------------------------------------------------
# 3. Reference scores
# ---------------------------------------------------------------------------------------------------


@dataclass
class Side:
    """A query or a document: texts and image files (paths relative to the repository)."""

    texts: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)


@dataclass
class Case:
    """One (query, document) pair scored by the reference."""

    name: str
    query: Side
    document: Side
    instruction: str | None = None
    max_length: int = MAX_LENGTH
    note: str | None = None


TAX_QUERY = Side(texts=["where is my 2023 tax return"])
LONG_TEXT: str = tq.LONG_TEXT

CASES: tuple[Case, ...] = (
    Case(
        "tax_form",
        TAX_QUERY,
        Side(texts=["Form 1040 U.S. Individual Income Tax Return 2023, filed in April."]),
    ),
    Case(
        "tax_recipe",
        TAX_QUERY,
        Side(texts=["Sourdough starter: feed it flour and water every twelve hours."]),
    ),
    Case("tax_invoice", TAX_QUERY, Side(texts=["Invoice INV-2023-0042 from the plumber, paid by card."])),
    Case("tax_long", TAX_QUERY, Side(texts=[LONG_TEXT]), note="~300-token document"),
    Case(
        "instruction_custom",
        TAX_QUERY,
        Side(texts=["Form 1040 U.S. Individual Income Tax Return 2023, filed in April."]),
        instruction="Find the file the user is looking for",
        note="the reranker appends no punctuation to the instruction (unlike the embedder)",
    ),
    Case(
        "instruction_empty",
        TAX_QUERY,
        Side(texts=["Form 1040 U.S. Individual Income Tax Return 2023, filed in April."]),
        instruction="",
        note="an empty instruction means the default one",
    ),
    Case(
        "text_nfd",
        Side(texts=["cafe\u0301 re\u0301sume\u0301"]),
        Side(texts=["Caf\u00e9 menu and my r\u00e9sum\u00e9 draft"]),
        note="NFD query: the reference tokenizer normalises to NFC",
    ),
    Case(
        "multilingual",
        Side(texts=["北京的冬天"]),
        Side(texts=["北京的冬天很冷。 مرحبا بالعالم! 😀🎉👩‍💻 Crème brûlée, Ελληνικά."]),
    ),
    Case("empty_document", TAX_QUERY, Side(), note="no text and no image: the document becomes NULL"),
    Case(
        "text_to_image",
        Side(texts=["a colourful striped test pattern"]),
        Side(images=[f"{IMAGES}/stripes_128x64.png"]),
    ),
    Case("image_to_text", Side(images=[f"{IMAGES}/gray_96x64.png"]), Side(texts=["a grayscale gradient"])),
    Case(
        "image_to_image",
        Side(images=[f"{IMAGES}/palette_trns_64x64.png"]),
        Side(images=[f"{IMAGES}/rgba_96x64.png"]),
        note="palette with tRNS (kept blue) against RGBA (composited on white)",
    ),
    Case(
        "mixed",
        Side(texts=["this checkerboard thumbnail"], images=[f"{IMAGES}/checker_64x64.png"]),
        Side(texts=["a screenshot with transparent regions"], images=[f"{IMAGES}/rgba_96x64.png"]),
    ),
    Case(
        "document_two_images",
        Side(texts=["two pictures of patterns"]),
        Side(texts=["album page"], images=[f"{IMAGES}/checker_64x64.png", f"{IMAGES}/stripes_128x64.png"]),
        instruction="Retrieve images that match the user's description.",
    ),
    Case(
        "resized_image",
        Side(texts=["a colourful striped test pattern"]),
        Side(images=[RESIZED_IMAGE]),
        note="123x77 resized to 128x64 with PIL bicubic: scores move by ~2e-3 between Pillow 12.3 and 13.0",
    ),
    Case(
        "truncated_text",
        TAX_QUERY,
        Side(texts=[LONG_TEXT]),
        max_length=48,
        note="over max_length: non-special tokens past the budget dropped, specials and the last 5 kept",
    ),
    Case(
        "truncated_image",
        Side(texts=["a colourful striped test pattern"]),
        Side(texts=[LONG_TEXT], images=[f"{IMAGES}/stripes_128x64.png"]),
        max_length=56,
        note="truncation keeps every image token (they are special) and cuts the text",
    ),
)


def conversation(case: Case) -> list[dict[str, Any]]:
    """The official reranker's chat: system judgement prompt, user = instruct, query, document."""

    def side(prefix: str, s: Side) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = [{"type": "text", "text": prefix}]
        if not s.texts and not s.images:
            return content + [{"type": "text", "text": "NULL"}]
        for rel in s.images:
            image = {"type": "image", "image": "file://" + str(REPO_ROOT / rel)}
            content.append({**image, "min_pixels": tq.MIN_PIXELS, "max_pixels": tq.MAX_PIXELS})
        return content + [{"type": "text", "text": t} for t in s.texts]

    user = [{"type": "text", "text": "<Instruct>: " + (case.instruction or DEFAULT_INSTRUCTION)}]
    user += side("<Query>:", case.query) + side("\n<Document>:", case.document)
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {"role": "user", "content": user},
    ]


def truncate(ids: list[int], max_length: int, special: set[int]) -> list[int]:
    """The reference's truncation: keep special tokens and the last 5, cut other tokens past the budget."""
    head, tail = ids[:-KEPT_TAIL], ids[-KEPT_TAIL:]
    if len(head) <= max_length:
        return ids
    budget = max_length - sum(1 for t in head if t in special)
    kept: list[int] = []
    for t in head:
        if t in special:
            kept.append(t)
        elif budget > 0:
            kept.append(t)
            budget -= 1
    return kept + tail


def side_record(s: Side) -> dict[str, Any]:
    """A query or document as stored in reference.json."""
    return {"texts": s.texts, "images": list(s.images)}


def compute_references(hf_dir: Path) -> list[dict[str, Any]]:
    """Score every case with transformers following the official reranker, one pair per forward."""
    import torch
    from PIL import Image
    from transformers import Qwen3VLForConditionalGeneration

    torch.set_num_threads(1)
    vp = tq._import_qwen_vl_utils()
    processor = tq.load_processor(hf_dir)
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    vocab = tokenizer.get_vocab()
    if (vocab["yes"], vocab["no"]) != (YES_ID, NO_ID):
        raise RuntimeError(f"yes/no ids {vocab['yes']}/{vocab['no']}, expected {YES_ID}/{NO_ID}")
    model = Qwen3VLForConditionalGeneration.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    head = torch.nn.Linear(TEXT_CONFIG["hidden_size"], 1, bias=False)
    with torch.no_grad():
        head.weight[0] = model.lm_head.weight[YES_ID] - model.lm_head.weight[NO_ID]
    special = set(tokenizer.all_special_ids)
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")

    records: list[dict[str, Any]] = []
    for case in CASES:
        conv = conversation(case)
        paths = [*case.query.images, *case.document.images]
        prompts = processor.apply_chat_template([conv], tokenize=False, add_generation_prompt=True)
        images, videos, video_kwargs = vp.process_vision_info(
            [conv], image_patch_size=tq.IMAGE_PATCH_SIZE, return_video_kwargs=True, return_video_metadata=True
        )
        if videos is not None:
            raise RuntimeError("no video cases are expected")
        inputs = processor(
            text=prompts,
            images=images,
            videos=None,
            truncation=False,
            padding=False,
            do_resize=False,
            **video_kwargs,
        )
        full = list(inputs["input_ids"][0])
        ids = truncate(full, case.max_length, special)
        batch = tokenizer.pad({"input_ids": [ids]}, padding=True, return_tensors="pt")
        kwargs: dict[str, Any] = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if images:
            kwargs["pixel_values"] = torch.as_tensor(inputs["pixel_values"])
            kwargs["image_grid_thw"] = torch.as_tensor(inputs["image_grid_thw"])
        with torch.no_grad():
            last = model.model(**kwargs).last_hidden_state[:, -1]
            logit = head(last)[0, 0]
            score = torch.sigmoid(logit)
        counts = []
        if images:
            counts = [
                int(t * h * w) // (tq.SPATIAL_MERGE**2) for t, h, w in inputs["image_grid_thw"].tolist()
            ]
            if sum(counts) != ids.count(image_pad):
                raise RuntimeError(f"{case.name}: image tokens lost in truncation")
        record: dict[str, Any] = {
            "name": case.name,
            "instruction": case.instruction,
            "query": side_record(case.query),
            "document": side_record(case.document),
            "max_length": case.max_length,
            "prompt": prompts[0],
            "n_tokens_full": len(full),
            "n_tokens": len(ids),
            "input_ids": ids,
            "image_token_counts": counts,
            "resized": any(
                img.size != Image.open(REPO_ROOT / p).size for img, p in zip(images or [], paths, strict=True)
            ),
            "logit": float(f"{float(logit):.9g}"),
            "score": float(f"{float(score):.9g}"),
        }
        if case.note:
            record["note"] = case.note
        records.append(record)
        log(f"reference: {case.name}: {len(ids)} tokens (of {len(full)}), score {record['score']:.6f}")
    return records


# ---------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="fixture folder (default: %(default)s)")
    parser.add_argument(
        "--tiktoken", type=Path, default=None, help="path to qwen.tiktoken (default: from dashscope)"
    )
    parser.add_argument(
        "--llama-cpp", type=Path, default=None, help="llama.cpp source folder (see make_tiny_qwen3vl.py)"
    )
    parser.add_argument("--hf-dir", type=Path, default=None, help="keep the Hugging Face folder here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Build everything and print the sha256 of each produced file."""
    args = parse_args(argv)
    llama_cpp = tq.find_llama_cpp(args.llama_cpp)
    out_dir: Path = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tiny-reranker-") as tmp:
        hf_dir = build_hf_folder(
            (args.hf_dir.resolve() if args.hf_dir else Path(tmp)) / MODEL_NAME, tiktoken=args.tiktoken
        )
        text_gguf = out_dir / f"{MODEL_NAME}-f16.gguf"
        mmproj = out_dir / f"mmproj-{MODEL_NAME}-f16.gguf"
        run_converter(llama_cpp, hf_dir, text_gguf, MODEL_NAME)
        run_converter(llama_cpp, hf_dir, mmproj, MODEL_NAME, mmproj=True)
        check_reranker_gguf(llama_cpp, text_gguf, mmproj, hf_dir)
        build_mismatched_mmproj(llama_cpp, Path(tmp), MISMATCHED_MMPROJ)
        draw_images(REPO_ROOT / IMAGES)
        records = compute_references(hf_dir)
        tq.write_json(out_dir / "reference.json", records)
    written = [p for p in sorted(out_dir.rglob("*")) if p.is_file() and p.name != "README.md"]
    for path in written + [MISMATCHED_MMPROJ]:
        print(f"{tq.sha256_file(path)}  {path.stat().st_size:>10}  {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
