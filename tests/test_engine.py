"""The embedding engine against the official embedder's outputs, on real llama.cpp."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from launcher.core.errors import InputError, InputTooLong, ModelError
from launcher.models.embed import EmbedInput, load_embedder, truncate_dims
from launcher.models.embed.prompt import build_prompt, normalize_instruction
from launcher.models.imageprep import prepare_image, smart_resize
from tests.conftest import MINILM, ROOT, TINY, TINY_F16, TINY_MMPROJ, _options


def _image_path(rel: str) -> Path:
    for base in (TINY, ROOT):
        if (base / rel).is_file():
            return base / rel
    raise FileNotFoundError(rel)


def _input(case: dict[str, Any]) -> EmbedInput:
    return EmbedInput(
        texts=list(case.get("texts") or []),
        images=[str(_image_path(p)) for p in case.get("images") or []],
        instruction=case.get("instruction"),
    )


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- the format, without a model ------------------------------------------------------------------


def test_instruction_gets_final_punctuation_like_the_reference() -> None:
    assert normalize_instruction("Find the receipt") == "Find the receipt."
    assert normalize_instruction("  Find the receipt?  ") == "Find the receipt?"
    assert normalize_instruction("Trouve-le\u3002") == "Trouve-le\u3002"  # CJK full stop is punctuation
    assert normalize_instruction(None) == "Represent the user's input."
    assert normalize_instruction("   ") == "Represent the user's input."


def test_prompt_orders_images_before_texts_and_ends_with_assistant_header() -> None:
    prompt = build_prompt(["a cat"], 2, None)
    assert prompt == (
        "<|im_start|>system\nRepresent the user's input.<|im_end|>\n<|im_start|>user\n"
        + "<|vision_start|><|image_pad|><|vision_end|>" * 2
        + "a cat<|im_end|>\n<|im_start|>assistant\n"
    )
    assert "NULL" in build_prompt([], 0, None)


def test_prompt_is_nfc() -> None:
    assert "caf\u00e9" in build_prompt(["cafe\u0301"], 0, None)


def test_templated_prompts_equal_the_reference(reference: list[dict[str, Any]]) -> None:
    for case in reference:
        ours = build_prompt(case.get("texts") or [], len(case.get("images") or []), case.get("instruction"))
        assert ours == __import__("unicodedata").normalize("NFC", case["prompt"]), case["name"]


def test_smart_resize_matches_reference_sizes(reference: list[dict[str, Any]]) -> None:
    checked = 0
    for case in reference:
        for rel, (w, h) in zip(case.get("images") or [], case.get("resized") or [], strict=True):
            prepared = prepare_image(_image_path(rel))
            assert (prepared.width, prepared.height) == (w, h), (case["name"], rel)
            checked += 1
    assert checked >= 6


def test_smart_resize_rounds_half_to_even_and_caps() -> None:
    assert smart_resize(48, 48) == (64, 64)  # 1.5 rounds half to even: 2
    assert smart_resize(80, 80) == (64, 64)  # 2.5 rounds to 2, not 3
    h, w = smart_resize(4000, 3000)
    assert h * w <= 1800 * 32 * 32 and h % 32 == 0 and w % 32 == 0
    with pytest.raises(InputError, match="aspect ratio"):
        smart_resize(10, 5000)


# -- parity with the official embedder --------------------------------------------------------------


def test_token_ids_equal_the_reference_tokenizer(tiny_vl: Any, reference: list[dict[str, Any]]) -> None:
    text_cases = [c for c in reference if not c.get("images")]
    assert len(text_cases) >= 5
    for case in text_cases:
        assert tiny_vl.tokenize(tiny_vl.prompt_for(_input(case))) == case["input_ids"], case["name"]


def test_f16_parity_with_reference(tiny_vl: Any, reference: list[dict[str, Any]]) -> None:
    worst = 1.0
    for case in reference:
        vec = tiny_vl.embed_one(_input(case))
        cos = _cos(vec, np.asarray(case["embedding"], dtype=np.float32))
        worst = min(worst, cos)
        assert cos >= 0.9999, f"{case['name']}: cosine {cos:.6f}"
    names = {c["name"] for c in reference}
    assert len(names) >= 12  # text, multilingual, NFD, instructions, NULL, images, mixed
    assert worst >= 0.9999


def test_image_token_counts_equal_the_reference(tiny_vl: Any, reference: list[dict[str, Any]]) -> None:
    for case in reference:
        for rel, expected in zip(case.get("images") or [], case.get("image_token_counts") or [], strict=True):
            assert tiny_vl.count_image_tokens(str(_image_path(rel))) == expected, (case["name"], rel)


def test_quantized_model_embeds_without_crashing_and_stays_close(
    tiny_q8: Any, reference: list[dict[str, Any]]
) -> None:
    # Q8_0 segfaults in ggml's AMX path on CPUs that advertise AMX unless the engine prevents it.
    for case in reference:
        vec = tiny_q8.embed_one(_input(case))
        cos = _cos(vec, np.asarray(case["embedding"], dtype=np.float32))
        assert cos >= 0.99, f"{case['name']}: cosine {cos:.5f}"


def test_batched_equals_one_at_a_time(tiny_vl: Any, reference: list[dict[str, Any]]) -> None:
    inputs = [_input(c) for c in reference]
    batched = tiny_vl.embed(inputs)
    single = np.stack([tiny_vl.embed_one(x) for x in inputs])
    assert batched.shape == (len(inputs), tiny_vl.dims)
    # Several sequences in one decode take other matmul tile paths over f16 weights: float noise only.
    assert float(np.min(np.sum(batched * single, axis=1))) >= 0.99999
    assert float(np.max(np.abs(batched - single))) < 2e-3


def test_matryoshka_truncation_renormalises(tiny_vl: Any) -> None:
    full = tiny_vl.embed_text("quarterly tax form")
    short = tiny_vl.embed_text("quarterly tax form", dims=16)
    assert short.shape == (16,)
    assert abs(float(np.linalg.norm(short)) - 1.0) < 1e-5
    np.testing.assert_allclose(short, truncate_dims(full[None, :], 16)[0], atol=1e-6)


def test_instruction_changes_the_vector(tiny_vl: Any) -> None:
    a = tiny_vl.embed_text("invoice", instruction="Find documents")
    b = tiny_vl.embed_text("invoice")
    assert _cos(a, b) < 0.99999


# -- real semantics with the bundled text model -----------------------------------------------------


def test_minilm_parity_with_sentence_transformers(minilm: Any) -> None:
    ref = json.loads((ROOT / "tests" / "fixtures" / "minilm_reference.json").read_text(encoding="utf-8"))
    cases = ref["cases"] if isinstance(ref, dict) else ref
    # sentence-transformers cuts inputs at 256 tokens; we never truncate, so compare the others.
    cases = [c for c in cases if not c.get("truncated")]
    assert len(cases) >= 4
    for case in cases:
        vec = minilm.embed_text(case["text"])
        assert _cos(vec, np.asarray(case["embedding"], dtype=np.float32)) >= 0.999, case["text"]


def test_minilm_query_is_nearer_its_paraphrase(minilm: Any) -> None:
    q = minilm.embed_text("how do I renew my passport")
    para = minilm.embed_text("steps to get a new passport when the old one expires")
    other = minilm.embed_text("the stock market fell sharply on tuesday")
    assert _cos(q, para) > _cos(q, other) + 0.3


def test_image_to_text_only_model_is_a_clear_error(minilm: Any, tmp_path: Path) -> None:
    img = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(img)
    with pytest.raises(InputError, match="cannot embed images"):
        minilm.embed_image(img)


# -- errors ------------------------------------------------------------------------------------------


def test_missing_model_file() -> None:
    with pytest.raises(ModelError, match="model file not found: .*nope.gguf"):
        load_embedder("/nonexistent/nope.gguf")


def test_corrupt_model_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(TINY_F16.read_bytes()[:200_000])
    with pytest.raises(ModelError, match="broken.gguf"):
        load_embedder(broken, None, _options())
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="not a gguf model file"):
        load_embedder(junk)


def test_mmproj_that_is_not_an_mmproj() -> None:
    with pytest.raises(ModelError, match="is not an mmproj file"):
        load_embedder(TINY_F16, MINILM, _options())


def test_mmproj_with_a_text_only_model() -> None:
    with pytest.raises(ModelError, match="text-only and cannot use an mmproj"):
        load_embedder(MINILM, TINY_MMPROJ, _options())


def test_model_passed_where_mmproj_belongs() -> None:
    with pytest.raises(ModelError, match="is an mmproj"):
        load_embedder(TINY_MMPROJ, None, _options())


def test_mmproj_that_does_not_match_the_model() -> None:
    mismatched = TINY / "mmproj-mismatched-f16.gguf"
    if not mismatched.is_file():
        pytest.skip("fixture mmproj-mismatched-f16.gguf not generated")
    with pytest.raises(ModelError, match="does not match model"):
        load_embedder(TINY_F16, mismatched, _options())


def test_undecodable_image(tiny_vl: Any, tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(InputError, match="cannot decode image .*broken.jpg"):
        tiny_vl.embed_image(bad)


def test_input_over_the_context_is_refused_not_truncated() -> None:
    with (
        load_embedder(TINY_F16, None, _options(n_ctx=64)) as small,
        pytest.raises(InputTooLong, match=r"input is \d+ tokens, over the limit of 64 tokens"),
    ):
        small.embed_text("word " * 200)


def test_image_without_mmproj_is_a_clear_error(tmp_path: Path) -> None:
    img = tmp_path / "a.png"
    Image.new("RGB", (40, 40)).save(img)
    with (
        load_embedder(TINY_F16, None, _options()) as e,
        pytest.raises(InputError, match="cannot embed images"),
    ):
        e.embed_image(img)


# -- the CLI -----------------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launcher.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_embed_json_mixed_input_equals_library(tiny_vl: Any, reference: list[dict[str, Any]]) -> None:
    case = next(c for c in reference if len(c.get("images") or []) >= 2)
    args = ["embed", "--model", str(TINY_F16), "--mmproj", str(TINY_MMPROJ), "--threads", "2", "--json"]
    for t in case.get("texts") or []:
        args += ["--text", t]
    for rel in case["images"]:
        args += ["--image", str(_image_path(rel))]
    if case.get("instruction"):
        args += ["--instruction", case["instruction"]]
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert list(out) == ["embedding"]
    vec = np.asarray(out["embedding"], dtype=np.float32)
    assert _cos(vec, np.asarray(case["embedding"], dtype=np.float32)) >= 0.9999


def test_cli_embed_dims(tmp_path: Path) -> None:
    proc = _cli("embed", "--model", str(MINILM), "--text", "hello world", "--dims", "32", "--json")
    assert proc.returncode == 0, proc.stderr
    vec = json.loads(proc.stdout)["embedding"]
    assert len(vec) == 32 and abs(sum(x * x for x in vec) - 1.0) < 1e-4


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    proc = _cli("embed", "--model", str(tmp_path / "missing.gguf"), "--text", "x", "--json")
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "model not found" in proc.stderr
    img = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(img)
    proc = _cli("embed", "--model", str(MINILM), "--image", str(img), "--json")
    assert proc.returncode == 2 and "cannot embed images" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_bundled_model_and_licence_ship() -> None:
    assert MINILM.is_file() and MINILM.stat().st_size < 40_000_000
    licences = list((ROOT / "models").glob("*LICENSE*"))
    assert licences and "Apache" in licences[0].read_text(encoding="utf-8", errors="replace")


RESIDENT = r"""
import json, os, sys
from launcher.models import gguf_meta
from launcher.models.embed import EmbedInput, load_embedder
from launcher.models.embed.llama import LlamaOptions

path = sys.argv[1]
st = os.stat(path)

def resident():  # resident bytes of this process's mappings of the model file
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                inside = head[4].isdigit() and int(head[4]) == st.st_ino
            elif inside and head[0] == "Rss:":
                total += int(head[1]) * 1024
    return total

header = gguf_meta.read_header(path)
table = header.tensors["token_embd.weight"].offset
after = min(t.offset for t in header.tensors.values() if t.offset > table)
with load_embedder(path, None, LlamaOptions(n_threads=2)) as e:
    loaded = resident()
    vectors = e.embed_batch([EmbedInput(texts=[t]) for t in ("a grey heron", "der Reiher", "青鹭")])
    print(json.dumps({"size": st.st_size, "table": after - table, "loaded": loaded,
                      "used": resident(), "finite": bool((vectors == vectors).all())}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_the_token_table_is_read_by_rows() -> None:
    """llama.cpp faults the whole model in; the token table's pages are released after loading,
    and a decode reads only its tokens' rows (the output layer tied to it is never computed)."""
    out = subprocess.run(
        [sys.executable, "-c", RESIDENT, str(TINY_F16)], capture_output=True, text=True, check=True, cwd=ROOT
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["table"] > 0.7 * r["size"] and r["finite"]  # the tiny model is mostly its token table
    assert r["loaded"] <= r["size"] - 0.95 * r["table"]
    assert r["used"] <= r["size"] - 0.9 * r["table"]  # three short texts: a few rows, not the table
