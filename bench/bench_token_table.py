"""How much of a model's token table a real corpus reads: the part of it that stays resident.

    python bench/bench_token_table.py --model GGUF --index INDEX_DIR

llama.cpp maps the whole model file; launcher releases the token-embedding table's pages after
loading (models/runtime.py, release_token_table), and a decode reads back only the rows of the
tokens it sees. This tokenizes every stored piece of an index (any model built it: the text is what
counts) with the given model's own tokenizer and counts the table's pages those tokens' rows touch:
the table's resident size once that corpus has been embedded. Prints a table and writes
bench/results/token-table-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from launcher.index.store import Store  # noqa: E402
from launcher.models import gguf_meta  # noqa: E402
from launcher.models.runtime import LlamaOptions, LlamaRuntime, ggml_row_size  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--index", required=True, type=Path, help="an index whose pieces are the corpus")
    args = ap.parse_args()
    header = gguf_meta.read_header(args.model)
    table = header.tensors["token_embd.weight"]
    width, rows = table.dims[0], table.dims[1]
    row_bytes = ggml_row_size(table.ggml_type, width)
    start = header.data_start + table.offset
    page = 4096

    store = Store.open(args.index)
    rt = LlamaRuntime(args.model, LlamaOptions(), 1, header)
    seen: set[int] = set()
    pieces = tokens = 0
    t0 = time.perf_counter()
    for info in store.files():
        for pid in store.pieces_of(info.file_id):
            piece = store.piece(pid)
            if piece is None or not piece.text:
                continue
            ids = rt.tokenize(piece.text.encode("utf-8", "replace"), add_special=False, parse_special=False)
            seen.update(ids)
            pieces += 1
            tokens += len(ids)
    rt.close()
    pages = {
        p
        for i in seen
        for p in range((start + i * row_bytes) // page, (start + (i + 1) * row_bytes - 1) // page + 1)
    }
    result = {
        "model": args.model.name,
        "index": str(args.index),
        "files": store.stats().files,
        "pieces": pieces,
        "tokens": tokens,
        "distinct_tokens": len(seen),
        "vocabulary": rows,
        "table_bytes": rows * row_bytes,
        "resident_bytes": len(pages) * page,
        "seconds": time.perf_counter() - t0,
    }
    mb = 1e6
    print("| corpus | pieces | tokens | distinct tokens | token table | read by the corpus |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {args.index} ({result['files']} files) | {pieces:,} | {tokens:,} | {len(seen):,} of {rows:,} | "
        f"{result['table_bytes'] / mb:.0f} MB | {result['resident_bytes'] / mb:.0f} MB |"
    )
    out = HERE / "results" / f"token-table-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
