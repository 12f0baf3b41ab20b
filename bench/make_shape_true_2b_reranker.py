"""Derive a shape-true Qwen3-VL-Reranker-2B GGUF from the shape-true embedding GGUF, offline.

    python bench/make_shape_true_2b_reranker.py            # Q4_K_M, skips an existing output
    python bench/make_shape_true_2b_reranker.py --force

A reranker of the same shape costs the same compute as the embedding model plus a 2-row head, so
instead of building a second 2B model this copies bench/models/shape-true-qwen3vl-2b-Q4_K_M.gguf
(made by bench/make_shape_true_2b.py) tensor for tensor and adds what llama.cpp's converter writes
for Qwen3-VL-Reranker: pooling type RANK, classifier labels ["yes", "no"] and `cls.output.weight`
(2 x 2048; here the "yes"/"no" rows of the random tied embedding table, stored as f16). The
weights are random: scores mean nothing; the file exists to time the reranker on real shapes.
Output: bench/models/shape-true-qwen3vl-2b-reranker-Q4_K_M.gguf (gitignored, about 1.1 GB).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "bench" / "models"
SOURCE = MODELS / "shape-true-qwen3vl-2b-Q4_K_M.gguf"
TARGET = MODELS / "shape-true-qwen3vl-2b-reranker-Q4_K_M.gguf"
LLAMA_CPP = Path("/work/cache/llama_cpp_python-0.3.36/vendor/llama.cpp")
YES_ID, NO_ID = 9693, 2152
POOLING_RANK = 4


def derive(source: Path, target: Path, llama_cpp: Path) -> None:
    """Copy every tensor and key, switch pooling to RANK and add the yes/no classifier head."""
    sys.path.insert(0, str(llama_cpp / "gguf-py"))
    import gguf

    reader = gguf.GGUFReader(str(source))
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(str(target), arch)
    pooling_key = f"{arch}.pooling_type"
    for field in reader.fields.values():
        if (
            field.name == "general.architecture"
            or field.name.startswith("GGUF.")
            or field.name == pooling_key
        ):
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub_type)
    writer.add_key_value(pooling_key, POOLING_RANK, gguf.GGUFValueType.UINT32)
    writer.add_key_value(
        f"{arch}.classifier.output_labels",
        ["yes", "no"],
        gguf.GGUFValueType.ARRAY,
        sub_type=gguf.GGUFValueType.STRING,
    )

    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    rows = gguf.quants.dequantize(np.asarray(embd.data[[YES_ID, NO_ID]]), embd.tensor_type)
    head = np.ascontiguousarray(rows.astype(np.float16))
    for tensor in reader.tensors:
        writer.add_tensor_info(
            tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type
        )
    writer.add_tensor_info(
        "cls.output.weight", head.shape, head.dtype, head.nbytes, gguf.GGMLQuantizationType.F16
    )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.write_tensor_data(head)
    writer.close()


def main() -> int:
    """Build the file unless it exists."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if the output exists")
    parser.add_argument(
        "--llama-cpp", type=Path, default=LLAMA_CPP, help="llama.cpp source folder (for gguf-py)"
    )
    args = parser.parse_args()
    if not SOURCE.is_file():
        raise SystemExit(f"{SOURCE} is missing: run `python bench/make_shape_true_2b.py` first")
    if TARGET.is_file() and not args.force:
        print(f"{TARGET} exists (use --force to rebuild)")
        return 0
    t0 = time.perf_counter()
    partial = TARGET.with_suffix(".partial")
    derive(SOURCE, partial, args.llama_cpp)
    partial.replace(TARGET)
    print(f"wrote {TARGET} ({TARGET.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
