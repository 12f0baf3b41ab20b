"""Build a random-weight Qwen3-VL-Embedding-2B with the real model's layer sizes, as GGUFs, offline.

    python bench/make_shape_true_2b.py            # skips files that already exist
    python bench/make_shape_true_2b.py --force    # rebuild everything

The weights are random (fan-in-scaled, fixed seed), so the vectors mean nothing: these files exist
to time the engine on tensors of the real shapes. Everything lands in bench/models/ (gitignored,
about 7 GB in all):

  shape-true-qwen3vl-2b-f16.gguf          text model, converter output
  shape-true-qwen3vl-2b-Q4_K_M.gguf       llama_model_quantize of the f16 file
  shape-true-qwen3vl-2b-Q8_0.gguf         llama_model_quantize of the f16 file
  mmproj-shape-true-qwen3vl-2b-f16.gguf   vision encoder + merger, converter output
  mmproj-shape-true-qwen3vl-2b-Q8_0.gguf  converter output with --outtype q8_0
  shape-true-qwen3vl-2b.json              the config used, file sizes and the time of each step

The tokenizer (rebuilt from dashscope's qwen.tiktoken), the chat template, the weight init and the
GGUF metadata checks come from scripts/make_tiny_qwen3vl.py, so both fixtures are made the same way.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "bench" / "models"
MODEL_NAME = "shape-true-qwen3vl-2b"
SEED = 20251022

# Qwen3-VL-2B-Instruct's config.json (Qwen3-VL-Embedding-2B is built on it). transformers'
# Qwen3VLConfig defaults describe the 8B model (hidden 4096, vision depth 27 / hidden 1152), so every
# size is spelled out here.
TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 151936,
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 262144,
    "rms_norm_eps": 1e-6,
    "rope_theta": 5000000.0,
    "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True},
    "attention_bias": False,
    "attention_dropout": 0.0,
    "tie_word_embeddings": True,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "use_cache": True,
}
VISION_CONFIG: dict[str, Any] = {
    "depth": 24,
    "hidden_size": 1024,
    "hidden_act": "gelu_pytorch_tanh",
    "intermediate_size": 4096,
    "num_heads": 16,
    "in_channels": 3,
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "out_hidden_size": 2048,
    "num_position_embeddings": 2304,
    "deepstack_visual_indexes": [5, 11, 17],
    "initializer_range": 0.02,
}

# llama.h's llama_ftype values for the two quantizations.
QUANT_FTYPES = {"Q4_K_M": 15, "Q8_0": 7}


def log(msg: str) -> None:
    """Print a progress line to stderr."""
    print(f"[make_shape_true_2b] {msg}", file=sys.stderr, flush=True)


def load_tiny_script() -> ModuleType:
    """Import scripts/make_tiny_qwen3vl.py as a module (it is a script, not a package)."""
    path = ROOT / "scripts" / "make_tiny_qwen3vl.py"
    spec = importlib.util.spec_from_file_location("make_tiny_qwen3vl", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def peak_rss_gb() -> float:
    """This process's peak resident memory so far, GB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def build_hf_model(tiny: ModuleType, hf_dir: Path, seed: int) -> int:
    """Save the random-weight model as float16 safetensors shards; returns the parameter count."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

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
    # Built on the meta device and materialised uninitialised in float16: 4.3 GB instead of the
    # 8.5 GB of a float32 model, and no time spent on transformers' own init that we overwrite.
    with torch.device("meta"):
        model = Qwen3VLForConditionalGeneration._from_config(config, dtype=torch.float16)
    model = model.to_empty(device="cpu").eval()
    model.tie_weights()
    # Same fan-in-scaled init as the tiny fixture (the default std 0.02 makes all vectors alike);
    # it draws each tensor in float32 and copies it in, so only one tensor at a time is float32.
    tiny.init_parameters(model, seed)
    if model.lm_head.weight.data_ptr() != model.model.language_model.embed_tokens.weight.data_ptr():
        raise RuntimeError("lm_head is not tied to embed_tokens")
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(str(hf_dir), safe_serialization=True, max_shard_size="2GB")
    del model
    gc.collect()
    gen_cfg = hf_dir / "generation_config.json"
    if gen_cfg.exists():
        gen_cfg.unlink()
    write_pooling(tiny, hf_dir)
    return n_params


def write_pooling(tiny: ModuleType, hf_dir: Path) -> None:
    """A sentence-transformers last-token pooling module, so the converter writes pooling LAST."""
    tiny.write_json(
        hf_dir / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
    )
    tiny.write_json(
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


def run_converter(llama_cpp: Path, hf_dir: Path, out: Path, outtype: str, mmproj: bool = False) -> None:
    """Run the vendored convert_hf_to_gguf.py (its own gguf-py first on the path) in a subprocess."""
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
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"converter failed for {out.name}")


def quantize(src: Path, dst: Path, ftype: int) -> None:
    """llama.cpp's own quantizer with its default parameters (no imatrix), all cores."""
    import llama_cpp as lc

    lc.llama_backend_init()
    params = lc.llama_model_quantize_default_params()
    params.ftype = ftype
    rc = lc.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise SystemExit(f"llama_model_quantize failed for {dst.name} (code {rc})")


def check_ggufs(tiny: ModuleType, llama_cpp: Path, texts: Sequence[Path], mmprojs: Sequence[Path]) -> None:
    """Assert the metadata the engine and the benchmark rely on (sizes, pooling, deepstack)."""
    text_expect: dict[str, Any] = {
        "general.architecture": "qwen3vl",
        "qwen3vl.pooling_type": 3,  # LLAMA_POOLING_TYPE_LAST
        "qwen3vl.block_count": TEXT_CONFIG["num_hidden_layers"],
        "qwen3vl.embedding_length": TEXT_CONFIG["hidden_size"],
        "qwen3vl.feed_forward_length": TEXT_CONFIG["intermediate_size"],
        "qwen3vl.attention.head_count": TEXT_CONFIG["num_attention_heads"],
        "qwen3vl.attention.head_count_kv": TEXT_CONFIG["num_key_value_heads"],
        "qwen3vl.rope.dimension_sections": [*TEXT_CONFIG["rope_scaling"]["mrope_section"], 0],
        "qwen3vl.n_deepstack_layers": len(VISION_CONFIG["deepstack_visual_indexes"]),
        "tokenizer.ggml.pre": "qwen2",
    }
    deepstack = [i in VISION_CONFIG["deepstack_visual_indexes"] for i in range(VISION_CONFIG["depth"])]
    mmproj_expect: dict[str, Any] = {
        "general.architecture": "clip",
        "clip.projector_type": "qwen3vl_merger",
        "clip.vision.block_count": VISION_CONFIG["depth"],
        "clip.vision.embedding_length": VISION_CONFIG["hidden_size"],
        "clip.vision.feed_forward_length": VISION_CONFIG["intermediate_size"],
        "clip.vision.projection_dim": VISION_CONFIG["out_hidden_size"],
        "clip.vision.is_deepstack_layers": deepstack,
    }
    for path, expect in [(p, text_expect) for p in texts] + [(p, mmproj_expect) for p in mmprojs]:
        meta = tiny.gguf_metadata(llama_cpp, path)
        for key, want in expect.items():
            if meta.get(key) != want:
                raise SystemExit(f"{path.name}: {key} = {meta.get(key)!r}, expected {want!r}")
        log(f"{path.name}: metadata ok, tensor types {meta['tensor_types']}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=MODELS, help="output folder (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild files that already exist")
    parser.add_argument("--seed", type=int, default=SEED, help="random seed (default: %(default)s)")
    parser.add_argument("--keep-hf", type=Path, default=None, help="keep the Hugging Face folder here")
    parser.add_argument("--tiktoken", type=Path, default=None, help="qwen.tiktoken (default: from dashscope)")
    parser.add_argument(
        "--llama-cpp", type=Path, default=None, help="llama.cpp source folder with the converter"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Build whatever is missing, check it, and write the manifest."""
    args = parse_args(argv)
    tiny = load_tiny_script()
    llama_cpp = tiny.find_llama_cpp(args.llama_cpp)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    f16 = out / f"{MODEL_NAME}-f16.gguf"
    quants = {q: out / f"{MODEL_NAME}-{q}.gguf" for q in QUANT_FTYPES}
    mmprojs = {"f16": out / f"mmproj-{MODEL_NAME}-f16.gguf", "q8_0": out / f"mmproj-{MODEL_NAME}-Q8_0.gguf"}
    manifest_path = out / f"{MODEL_NAME}.json"
    manifest: dict[str, Any] = {}
    if manifest_path.exists() and not args.force:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    steps: dict[str, float] = manifest.get("step_seconds", {})

    def timed(step: str, fn: Any, *fn_args: Any) -> Any:
        t0 = time.perf_counter()
        result = fn(*fn_args)
        steps[step] = round(time.perf_counter() - t0, 1)
        log(f"{step}: {steps[step]:.1f} s (peak rss of this process {peak_rss_gb():.1f} GB)")
        return result

    need_convert = args.force or not f16.exists() or any(not p.exists() for p in mmprojs.values())
    if need_convert:
        with tempfile.TemporaryDirectory(prefix="shape-true-2b-", dir=out) as tmp:
            hf_dir = (args.keep_hf.resolve() if args.keep_hf else Path(tmp)) / MODEL_NAME
            if hf_dir.exists():
                shutil.rmtree(hf_dir)
            hf_dir.mkdir(parents=True)
            ranks = tiny.load_tiktoken_ranks(tiny.find_tiktoken(args.tiktoken))
            timed("tokenizer", tiny.write_tokenizer, hf_dir, ranks)
            tiny.write_processor_configs(hf_dir)
            manifest["parameters"] = timed("hf_model", build_hf_model, tiny, hf_dir, args.seed)
            # The converters run in subprocesses; this process holds no tensors any more.
            timed("convert_text_f16", run_converter, llama_cpp, hf_dir, f16, "f16")
            for outtype, path in mmprojs.items():
                timed(f"convert_mmproj_{outtype}", run_converter, llama_cpp, hf_dir, path, outtype, True)
    for name, path in quants.items():
        if args.force or need_convert or not path.exists():
            timed(f"quantize_{name}", quantize, f16, path, QUANT_FTYPES[name])
    timed("check", check_ggufs, tiny, llama_cpp, [f16, *quants.values()], list(mmprojs.values()))

    manifest.update(
        {
            "name": MODEL_NAME,
            "seed": args.seed,
            "text_config": TEXT_CONFIG,
            "vision_config": VISION_CONFIG,
            "files": {p.name: p.stat().st_size for p in [f16, *quants.values(), *mmprojs.values()]},
            "step_seconds": steps,
        }
    )
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    for name, size in manifest["files"].items():
        print(f"{size / 1e9:7.2f} GB  {out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
