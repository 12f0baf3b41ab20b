"""The full-precision transformers reranker: the only rerank module that imports torch or transformers.

Installed with `pip install 'launcher[rerank-gpu]'` and chosen by the product only on a CUDA GPU
(bf16, several pairs per forward, left padding as the official code pads). It also runs on the CPU in
float32 when asked explicitly, which is how the tests check it against the reference.

Prompt, image preprocessing and truncation are the shared ones (`launcher.models.rerank.base`,
`launcher.models.imageprep`); the tokenizer and the PIL/NumPy image processor come from the model
folder, so torchvision is not needed (transformers 5.23+, the `rerank-gpu` extra).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launcher.core.errors import ModelError, RerankerUnavailable
from launcher.models.imageprep import prepare_image
from launcher.models.rerank.base import (
    IMAGE_TOKENS,
    MAX_LENGTH,
    NO,
    YES,
    Reranker,
    RerankPair,
    build_prompt,
    truncate_ids,
)

EXTRA_HINT = "pip install 'launcher[rerank-gpu]'"
NO_GPU = (
    "the transformers reranker needs a CUDA GPU; use the GGUF reranker on this machine "
    "(`launcher models pull qwen3-vl-reranker-2b`)"
)


def import_torch() -> tuple[Any, Any]:
    """torch and transformers, or a one-line error naming the extra to install."""
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise RerankerUnavailable(
            f"the transformers reranker needs torch and transformers ({exc.name} is missing): {EXTRA_HINT}"
        ) from None
    return torch, transformers


def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA device (imports torch only if it is installed)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _pil_image_processor() -> Any:
    """Qwen2-VL's NumPy/PIL image processor (no torchvision): `Qwen2VLImageProcessorPil` in
    transformers 5, where `Qwen2VLImageProcessor` became the torchvision one."""
    try:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    except ImportError as exc:
        raise RerankerUnavailable(
            f"this transformers has no Qwen2VLImageProcessorPil ({exc}): {EXTRA_HINT}"
        ) from None
    return Qwen2VLImageProcessorPil


def is_hf_folder(path: Path) -> bool:
    """A Hugging Face model folder: a directory with a config.json."""
    return path.is_dir() and (path / "config.json").is_file()


class TransformersReranker(Reranker):
    """Qwen3-VL-Reranker through transformers: bf16 on CUDA by default, float32 on the CPU on request."""

    backend = "transformers"
    supports_images = True

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str | None = None,
        dtype: str | None = None,
        max_length: int = MAX_LENGTH,
        batch_size: int = 8,
    ):
        torch, _ = import_torch()
        from transformers import AutoTokenizer, Qwen3VLForConditionalGeneration

        image_processor_class = _pil_image_processor()

        self.model_dir = Path(model_dir).expanduser()
        if not is_hf_folder(self.model_dir):
            raise ModelError(
                f"no reranker model at {self.model_dir}: expected a Hugging Face folder with config.json"
            )
        # None means the product path: a GPU or nothing (the CPU would take minutes per query).
        self.device = device or "cuda"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise RerankerUnavailable(NO_GPU)
        self.dtype = (
            getattr(torch, dtype)
            if dtype
            else (torch.bfloat16 if self.device.startswith("cuda") else torch.float32)
        )
        self.max_length = max_length
        self.batch_size = batch_size
        self.name = self.model_dir.name
        self._torch = torch
        self._lock = threading.Lock()

        # fix_mistral_regex=False: transformers warns about a Mistral regex for any folder saved by
        # 4.57.3+; Qwen's tokenizer is not affected.
        self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), fix_mistral_regex=False)
        vocab = self._tokenizer.get_vocab()
        if YES not in vocab or NO not in vocab:
            raise ModelError(f"{self.model_dir.name} has no 'yes'/'no' tokens: it is not a Qwen3-VL-Reranker")
        self._special = set(self._tokenizer.all_special_ids)
        self._pad_id = int(self._tokenizer.pad_token_id)
        self._image_pad = int(vocab["<|image_pad|>"])
        self._image_processor = image_processor_class.from_pretrained(str(self.model_dir))
        self._merge = int(self._image_processor.merge_size)
        try:
            lm = Qwen3VLForConditionalGeneration.from_pretrained(str(self.model_dir), dtype=self.dtype)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load reranker {self.model_dir}: {exc}".splitlines()[0]) from None
        lm = lm.to(self.device).eval()  # type: ignore[arg-type]  # transformers types .to() oddly
        weight = lm.lm_head.weight
        # The official head: one linear row, lm_head[yes] - lm_head[no], in the model's dtype.
        self._head = (weight[vocab[YES]] - weight[vocab[NO]]).detach()
        self._model = lm.model  # the backbone; an untied lm_head is freed with `lm`
        del lm

    def identity(self) -> dict[str, Any]:
        """Model folder, dtype, device: what the scores depend on."""
        return {
            "name": self.name,
            "backend": self.backend,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": self.device,
            "max_length": self.max_length,
        }

    def close(self) -> None:
        """Drop the model (and the GPU memory it holds)."""
        if getattr(self, "_model", None) is not None:
            self._model = None
            if self.device.startswith("cuda"):
                self._torch.cuda.empty_cache()

    def _encode(self, pair: RerankPair) -> tuple[list[int], Any, Any]:
        """Token ids (image tokens expanded, truncated) and the pair's pixel values and grid."""
        prompt = build_prompt(pair)
        images = [prepare_image(img) for img in (*pair.query.images, *pair.document.images)]
        pixels = grid = None
        if images:
            from PIL import Image

            processed = self._image_processor(
                images=[Image.fromarray(p.pixels) for p in images], do_resize=False, return_tensors="pt"
            )
            pixels, grid = processed["pixel_values"], processed["image_grid_thw"]
            # As the processor does: one <|image_pad|> per visual token after the 2 x 2 merge.
            pieces = prompt.split(IMAGE_TOKENS)
            prompt = pieces[0]
            for piece, (t, h, w) in zip(pieces[1:], grid.tolist(), strict=True):
                n = int(t * h * w) // (self._merge**2)
                prompt += "<|vision_start|>" + "<|image_pad|>" * n + "<|vision_end|>" + piece
        ids = self._tokenizer(prompt)["input_ids"]
        return truncate_ids(ids, self.max_length, self._special.__contains__), pixels, grid

    def score_batch(self, pairs: Sequence[RerankPair]) -> list[float]:
        """One forward for the whole batch, left-padded; scores in float32 from the last hidden state."""
        if self._model is None:
            raise ModelError("the reranker is closed")
        torch = self._torch
        encoded = [self._encode(p) for p in pairs]
        width = max(len(ids) for ids, _, _ in encoded)
        input_ids = torch.full((len(encoded), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, (ids, _, _) in enumerate(encoded):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[row, width - len(ids) :] = 1
        kwargs: dict[str, Any] = {
            "input_ids": input_ids.to(self.device),
            "attention_mask": mask.to(self.device),
        }
        pixels = [p for _, p, _ in encoded if p is not None]
        if pixels:
            # Per-token modality, as the processor returns it (1: an image token, 0: text and
            # padding): transformers 5 computes M-RoPE positions from it.
            kwargs["mm_token_type_ids"] = (input_ids == self._image_pad).long().to(self.device)
            kwargs["pixel_values"] = torch.cat(pixels).to(self.device, dtype=self.dtype)
            kwargs["image_grid_thw"] = torch.cat([g for _, _, g in encoded if g is not None]).to(self.device)
        with self._lock, torch.inference_mode():
            last = self._model(**kwargs).last_hidden_state[:, -1]
            # The official code rounds logit and score to the model dtype (bf16 steps of ~0.004 near 1);
            # float32 here keeps near-ties apart. On the CPU in float32 the two are the same.
            logits = last.float() @ self._head.float()
            return [float(x) for x in torch.sigmoid(logits).cpu()]
