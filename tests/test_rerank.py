"""The reranker against the official Qwen3-VL-Reranker's scores, on real llama.cpp (and transformers).

tests/fixtures/tiny-reranker/reference.json holds scores computed by scripts/make_tiny_reranker.py
with the official logic in transformers (checked against the official class itself); the f16 GGUF
holds exactly the reference weights. The transformers tests rebuild the Hugging Face folder from
the generator (about 15 s, cached in .pytest_cache) and skip when torch/transformers are missing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from launcher.core.errors import InputError, ModelError, RerankerUnavailable
from launcher.models.embed.llama import LlamaOptions
from launcher.models.rerank import RerankInput, RerankPair, build_prompt, load_reranker
from launcher.models.rerank.base import DEFAULT_INSTRUCTION, truncate_ids
from tests.conftest import FIXTURES, ROOT, TINY, TINY_F16

RERANK = FIXTURES / "tiny-reranker"
RR_GGUF = RERANK / "tiny-qwen3vl-reranker-f16.gguf"
RR_MMPROJ = RERANK / "mmproj-tiny-qwen3vl-reranker-f16.gguf"
SCRIPTS = ROOT / "scripts"

# The f16 GGUF holds the reference weights exactly; what remains is ggml's CPU path rounding
# activations to f16 in f16 matmuls plus the f16 KV cache: measured worst |dscore| 7.3e-4 over all
# cases (8.2e-4 with llama.cpp's RANK pooling, 5.6e-4 with an f32 KV cache), so 2e-3 leaves a 2.4x
# margin. The reranked group below is separated by at least 0.03.
GGUF_TOL = 2e-3
# transformers in float32 on the CPU is the reference computation itself: only batching (left padding)
# and the 9 digits stored in the JSON differ (measured 1.8e-7 one pair per forward, 4.2e-7 batched).
HF_CPU_TOL = 1e-5
# bf16 on a GPU: about 3 significant digits per activation (not measured here: no GPU on this machine).
HF_BF16_TOL = 3e-2
# Cases whose image needs a bicubic resize depend on Pillow's resampler, which changed between
# releases: 1.9e-3 between Pillow 12.3 and 13.0 on the official pipeline itself. All other images are
# drawn at multiples of 32 and never resized.
PILLOW_DRIFT = 5e-3


def _tol(case: dict[str, Any], base: float) -> float:
    return base + (PILLOW_DRIFT if case["resized"] else 0.0)


def _options(**kw: Any) -> LlamaOptions:
    return LlamaOptions(n_threads=min(2, os.cpu_count() or 1), **kw)


@pytest.fixture(scope="module")
def reference() -> list[dict[str, Any]]:
    """Reference pairs and scores from the official logic in transformers."""
    return json.loads((RERANK / "reference.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _side(d: dict[str, Any]) -> RerankInput:
    return RerankInput(texts=list(d["texts"]), images=[str(ROOT / p) for p in d["images"]])


def _pair(case: dict[str, Any]) -> RerankPair:
    return RerankPair(_side(case["query"]), _side(case["document"]), case["instruction"])


def _score_all(reranker: Any, reference: list[dict[str, Any]]) -> dict[str, float]:
    """Score every case at its own max_length (the truncation cases use a small one)."""
    scores: dict[str, float] = {}
    default = reranker.max_length
    try:
        for case in reference:
            reranker.max_length = min(case["max_length"], default)
            scores[case["name"]] = reranker.score_batch([_pair(case)])[0]
    finally:
        reranker.max_length = default
    return scores


@pytest.fixture(scope="module")
def gguf() -> Iterator[Any]:
    """The tiny reranker GGUF with its mmproj, default (final-norm capture) head."""
    with load_reranker(RR_GGUF, RR_MMPROJ, options=_options()) as r:
        yield r


# -- the format, without a model ------------------------------------------------------------------


def test_prompts_equal_the_official_template(reference: list[dict[str, Any]]) -> None:
    import unicodedata

    for case in reference:
        assert build_prompt(_pair(case)) == unicodedata.normalize("NFC", case["prompt"]), case["name"]
    prompt = build_prompt(RerankPair(RerankInput(texts=["q"]), RerankInput()))
    assert prompt.endswith("<Query>:q\n<Document>:NULL<|im_end|>\n<|im_start|>assistant\n")
    assert f"<Instruct>: {DEFAULT_INSTRUCTION}<Query>:" in prompt
    # The reranker takes the instruction verbatim: no '.' appended, unlike the embedder.
    assert "<Instruct>: Find it<Query>:" in build_prompt(
        RerankPair(RerankInput(texts=["q"]), RerankInput(), "Find it")
    )


def test_truncation_keeps_specials_and_the_tail() -> None:
    special = {0}
    ids = [0, 1, 2, 0, 3, 4, 5, 0, 9, 9, 9, 9, 9]
    assert truncate_ids(ids, 20, special.__contains__) == ids
    # head = first 8 ids (3 specials): budget 4 - 3 = 1 other token, then the 5-token tail.
    assert truncate_ids(ids, 4, special.__contains__) == [0, 1, 0, 0, 9, 9, 9, 9, 9]
    assert truncate_ids(ids, 2, special.__contains__) == [0, 0, 0, 9, 9, 9, 9, 9]


# -- the GGUF backend ---------------------------------------------------------------------------------


def test_gguf_layout_is_the_converters_rank_head(gguf: Any) -> None:
    ident = gguf.identity()
    assert ident["backend"] == "gguf" and ident["head"] == "capture" and ident["head_type"] == "f16"
    assert gguf.supports_images


def test_gguf_token_ids_equal_the_reference_tokenizer(gguf: Any, reference: list[dict[str, Any]]) -> None:
    text_cases = [c for c in reference if not c["query"]["images"] and not c["document"]["images"]]
    assert len(text_cases) >= 8
    default = gguf.max_length
    try:
        for case in text_cases:
            gguf.max_length = min(case["max_length"], default)
            assert gguf.token_ids(_pair(case)) == case["input_ids"], case["name"]
    finally:
        gguf.max_length = default


def test_gguf_scores_equal_the_reference(gguf: Any, reference: list[dict[str, Any]]) -> None:
    scores = _score_all(gguf, reference)
    kinds = {(bool(c["query"]["images"]), bool(c["document"]["images"])) for c in reference}
    assert kinds == {(False, False), (False, True), (True, False), (True, True)}
    assert sum(c["resized"] for c in reference) == 1
    assert any(c["n_tokens"] < c["n_tokens_full"] for c in reference if c["document"]["images"])
    for case in reference:
        got, want = scores[case["name"]], case["score"]
        assert abs(got - want) < _tol(case, GGUF_TOL), f"{case['name']}: {got:.6f} vs reference {want:.6f}"


def test_gguf_rank_pooling_head_gives_the_same_scores(reference: list[dict[str, Any]]) -> None:
    # llama.cpp's own RANK pooling (softmax over the cls.output rows) against our final-norm capture.
    cases = [c for c in reference if c["name"] in {"tax_invoice", "truncated_image"}]
    with load_reranker(RR_GGUF, RR_MMPROJ, options=_options(last_token_capture=False)) as rank:
        assert rank.identity()["head"] == "rank"
        scores = _score_all(rank, cases)
    for case in cases:
        assert abs(scores[case["name"]] - case["score"]) < GGUF_TOL, case["name"]


def test_quantized_head_is_dequantized_like_ggml(
    gguf: Any, tmp_path: Path, reference: list[dict[str, Any]]
) -> None:
    del gguf  # loaded first so that llama.cpp's quantizer logs are routed, not printed
    # llama.cpp's quantizer turns cls.output.weight into q8_0 too: the capture head reads it through
    # ggml's own dequantization and must agree with llama.cpp's RANK pooling on the same file.
    import ctypes

    import llama_cpp as lc

    q8 = tmp_path / "tiny-reranker-q8_0.gguf"
    params = lc.llama_model_quantize_default_params()
    params.ftype = lc.LLAMA_FTYPE_MOSTLY_Q8_0
    assert lc.llama_model_quantize(str(RR_GGUF).encode(), str(q8).encode(), ctypes.byref(params)) == 0
    cases = [c for c in reference if c["name"] in {"tax_form", "tax_recipe", "tax_invoice", "multilingual"}]
    with load_reranker(q8, options=_options()) as capture:
        assert capture.identity()["head_type"] == "q8_0"
        got = _score_all(capture, cases)
    with load_reranker(q8, options=_options(last_token_capture=False)) as rank:
        native = _score_all(rank, cases)
    for case in cases:
        name = case["name"]
        # Rank pooling also rounds the hidden state to q8_0 for its dot product (measured <= 2.7e-3
        # apart); a wrong dequantization (wrong rows or scales) moves scores by tenths.
        assert abs(got[name] - native[name]) < 1e-2, name
        # A whole q8_0 model against the f32 reference: measured <= 0.021.
        assert abs(got[name] - case["score"]) < 0.05, name


def test_pairs_longer_than_a_decode_are_fed_in_slices(reference: list[dict[str, Any]]) -> None:
    cases = [c for c in reference if c["name"] in {"tax_long", "document_two_images"}]
    assert max(c["n_tokens"] for c in cases) > 64
    with load_reranker(RR_GGUF, RR_MMPROJ, options=_options(n_batch=64)) as r:
        scores = _score_all(r, cases)
    for case in cases:
        assert abs(scores[case["name"]] - case["score"]) < GGUF_TOL, case["name"]


def test_batched_equals_one_at_a_time(gguf: Any, reference: list[dict[str, Any]]) -> None:
    # Text pairs share decodes (several sequences per llama_decode); an image pair in the middle goes
    # through mtmd on its own and must land back in its place.
    full = [c for c in reference if c["max_length"] >= gguf.max_length]
    texts = [c for c in full if not c["query"]["images"] and not c["document"]["images"]]
    pairs = [
        _pair(c) for c in texts[:4] + [next(c for c in full if c["name"] == "text_to_image")] + texts[4:]
    ]
    batched = gguf.score(pairs)
    single = [gguf.score_batch([p])[0] for p in pairs]
    assert max(abs(a - b) for a, b in zip(batched, single, strict=True)) < 2e-4


def test_rerank_orders_candidates_by_score(gguf: Any, reference: list[dict[str, Any]]) -> None:
    group = [c for c in reference if c["name"].startswith("tax_")]
    assert len(group) == 4 and len({json.dumps(c["query"]) for c in group}) == 1
    query = _side(group[0]["query"])
    candidates = [_side(c["document"]) for c in group]
    expected = sorted(range(len(group)), key=lambda i: -group[i]["score"])
    ranked = gguf.rerank(query, candidates)
    assert [i for i, _ in ranked] == expected
    assert all(abs(s - group[i]["score"]) < GGUF_TOL for i, s in ranked)
    assert [i for i, _ in gguf.rerank(query, candidates, top_n=2)] == expected[:2]
    # Plain strings are text-only inputs.
    texts = [c["document"]["texts"][0] for c in group]
    assert [i for i, _ in gguf.rerank(group[0]["query"]["texts"][0], texts)] == expected


# -- errors ------------------------------------------------------------------------------------------


def test_no_reranker_pulled() -> None:
    with pytest.raises(
        ModelError, match=r"no reranker model: run `launcher models pull qwen3-vl-reranker-2b`"
    ):
        load_reranker()
    with pytest.raises(ModelError, match=r"not downloaded; run `launcher models pull qwen3-vl-reranker-2b`"):
        load_reranker("qwen3-vl-reranker-2b")
    with pytest.raises(ModelError, match=r"no reranker model at .*missing\.gguf: run `launcher models pull"):
        load_reranker("/nonexistent/missing.gguf")


def test_embedding_model_is_not_a_reranker() -> None:
    with pytest.raises(ModelError, match="is not a qwen3-vl reranker gguf .*pooling type is not rank"):
        load_reranker(TINY_F16, options=_options())


def test_mmproj_that_does_not_match_the_reranker() -> None:
    with pytest.raises(ModelError, match="mmproj mmproj-mismatched-f16.gguf does not match model"):
        load_reranker(RR_GGUF, TINY / "mmproj-mismatched-f16.gguf", options=_options())


def test_images_without_mmproj_are_a_clear_error(tmp_path: Path) -> None:
    img = tmp_path / "a.png"
    Image.new("RGB", (40, 40)).save(img)
    with (
        load_reranker(RR_GGUF, options=_options()) as r,
        pytest.raises(InputError, match="cannot score images"),
    ):
        r.rerank("a photo", [RerankInput(images=[img])])


def _cuda() -> bool:
    from launcher.models.rerank.hf import cuda_available

    return cuda_available()


def test_hf_folder_without_gpu_asks_for_the_gguf_reranker(tmp_path: Path) -> None:
    if _cuda():
        pytest.skip("this machine has a CUDA GPU: the transformers reranker would load")
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(
        RerankerUnavailable, match="the transformers reranker needs a CUDA GPU; use the GGUF reranker"
    ):
        load_reranker(tmp_path)
    with pytest.raises(RerankerUnavailable, match="needs a CUDA GPU|needs torch and transformers"):
        load_reranker(tmp_path, backend="transformers")


def test_missing_extra_names_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(RerankerUnavailable, match=r"pip install 'launcher\[rerank-gpu\]'"):
        load_reranker(tmp_path, backend="transformers", device="cpu")


def test_wrong_backend_for_the_file() -> None:
    with pytest.raises(ModelError, match="needs a Hugging Face model folder"):
        load_reranker(RR_GGUF, backend="transformers")
    with pytest.raises(ModelError, match="unknown reranker backend"):
        load_reranker(RR_GGUF, backend="onnx")


# -- the transformers backend -----------------------------------------------------------------------


def _generator_stamp() -> str:
    h = hashlib.sha256()
    for name in ("make_tiny_reranker.py", "make_tiny_qwen3vl.py", "qwen3vl_chat_template.jinja"):
        h.update((SCRIPTS / name).read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def hf_folder(request: pytest.FixtureRequest) -> Path:
    """The tiny reranker as a Hugging Face folder, rebuilt by the generator (cached per script version)."""
    for module in ("torch", "transformers", "tokenizers", "safetensors", "dashscope"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install 'launcher[rerank-gpu]' dashscope==2.0.2)")
    cache_plugin = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    cache = (
        Path(cache_plugin.mkdir("tiny-reranker-hf"))
        if cache_plugin is not None
        else request.getfixturevalue("tmp_path_factory").mktemp("tiny-reranker-hf")
    )
    stamp = _generator_stamp()
    folder = cache / "tiny-qwen3vl-reranker"
    if (
        (cache / "stamp").is_file()
        and (cache / "stamp").read_text() == stamp
        and (folder / "config.json").is_file()
    ):
        return folder
    sys.path.insert(0, str(SCRIPTS))
    try:
        import make_tiny_reranker
    finally:
        sys.path.remove(str(SCRIPTS))
    make_tiny_reranker.build_hf_folder(folder)
    (cache / "stamp").write_text(stamp)
    return folder


def test_transformers_on_cpu_equals_the_reference(hf_folder: Path, reference: list[dict[str, Any]]) -> None:
    with load_reranker(hf_folder, backend="transformers", device="cpu") as r:
        assert r.identity()["dtype"] == "float32"
        scores = _score_all(r, reference)
        for case in reference:
            assert abs(scores[case["name"]] - case["score"]) < _tol(case, HF_CPU_TOL), case["name"]
        # Several pairs per forward, left-padded, images and text mixed.
        full = [c for c in reference if c["max_length"] >= r.max_length]
        batched = r.score([_pair(c) for c in full])
        for got, case in zip(batched, full, strict=True):
            assert abs(got - case["score"]) < _tol(case, HF_CPU_TOL), case["name"]


@pytest.mark.gpu
def test_transformers_bf16_on_cuda(hf_folder: Path, reference: list[dict[str, Any]]) -> None:
    if not _cuda():
        pytest.skip("no CUDA GPU")
    with load_reranker(hf_folder) as r:  # auto: a Hugging Face folder on a CUDA machine
        assert r.identity()["backend"] == "transformers" and r.identity()["dtype"] == "bfloat16"
        scores = _score_all(r, reference)
        for case in reference:
            got = scores[case["name"]]
            assert math.isfinite(got) and abs(got - case["score"]) < _tol(case, HF_BF16_TOL), case["name"]
        by_name = {c["name"]: c for c in reference}
        assert scores["tax_invoice"] > scores["tax_recipe"]
        assert by_name["tax_invoice"]["score"] > by_name["tax_recipe"]["score"]
