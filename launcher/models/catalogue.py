"""The model catalogue: known GGUF files, where they are pulled from, and which one to use.

A model is named either by a catalogue name (`qwen3-vl-embedding-2b`) or by a path to a GGUF
file. The default is the best model found locally: a pulled Qwen3-VL-Embedding (8B before 2B),
else the small text model bundled in `models/`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from launcher.core import config
from launcher.core.errors import LauncherError, ModelError
from launcher.core.files import atomic_write_json
from launcher.models import download, gguf_meta
from launcher.models.download import HubFile

log = logging.getLogger("launcher.models")

QWEN3_VL_ARCH = "qwen3vl"
QWEN3_VL_PROJECTOR = "qwen3vl_merger"
RANK_HEAD = "cls.output.weight"
PART = ".part"  # a download in progress, beside the final name
BUNDLED_NAME = "all-minilm-l6-v2"
# The bundled model's floor: see the guide's "Score floors" (measured on real documents).
BUNDLED_MIN_SCORE = 0.25


@dataclass(frozen=True)
class ModelFile:
    """One file of an entry: its role in the pair, name in the repository, and pinned size and sha256
    (None where the public record has none: the hub's own metadata is checked instead)."""

    kind: str  # "model" or "mmproj"
    name: str
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class CatalogEntry:
    """A model known by name: where its files come from, what they must be, and how to use it."""

    name: str
    role: str  # "embedding" or "reranker"
    repo: str
    revision: str | None  # a commit id; None: the repository's main branch, resolved at pull time
    files: tuple[ModelFile, ...]
    dims: int  # the model's hidden width, checked in the GGUF header (qwen3vl.embedding_length)
    size_gb: float
    description: str
    origin: str  # who made the files: "third-party conversion by X of Qwen/..."
    min_score: float | None = None  # the score floor for this model (embedding models)
    multimodal: bool = True

    def _named(self, kind: str) -> ModelFile | None:
        return next((f for f in self.files if f.kind == kind), None)

    @property
    def file(self) -> str:
        """The model GGUF's file name."""
        f = self._named("model")
        assert f is not None
        return f.name

    @property
    def mmproj(self) -> str | None:
        """The vision projector's file name, if the entry has one."""
        f = self._named("mmproj")
        return f.name if f else None


# Score floors (search's min_score) per model, from the only real data there is. Qwen3-VL-Embedding
# 2B (Q4_K_M + f16 mmproj, 2048 dims, llama.cpp server, 256 visual tokens): text queries scored
# 0.475-0.717 against the chart they describe and 0.25-0.40 against an unrelated one, so 0.42 sits
# above every unrelated pair seen and below every matching one. The 8B has no measurement: the
# 2B's floor is used (the Qwen3-Embedding family puts unrelated pairs lower as the model grows, so
# it errs towards showing more). MiniLM: see BUNDLED_MIN_SCORE.
QWEN3_VL_MIN_SCORE = 0.42

# The 8B's f16 projector, shared by its Q8_0 and Q4_K_M entries (one file in one repository).
MMPROJ_8B = ModelFile(
    "mmproj",
    "Qwen3-VL-Embedding-8B.mmproj-f16.gguf",
    1_159_030_304,
    "c507828405f645670c829be93fa57fb890af5b7abbe2583435f4a8042d1f8ba8",
)

CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        "qwen3-vl-embedding-2b",
        "embedding",
        "DevQuasar/Qwen.Qwen3-VL-Embedding-2B-GGUF",
        "6a1b927414664e0e17dd379913e3416a1ae1b48d",
        (
            ModelFile(
                "model",
                "Qwen.Qwen3-VL-Embedding-2B.Q4_K_M.gguf",
                1_107_410_528,
                "42a4ebc629ecc6514649e12b1529b857f54900273bb854f853c970fb90edd09d",
            ),
            ModelFile(
                "mmproj",
                "mmproj-Qwen.Qwen3-VL-Embedding-2B.f16.gguf",
                819_395_136,
                "3f89a7768ffa6606935319f71bf56bb71871249ba549bf1080a0caea7a088613",
            ),
        ),
        2048,
        1.9,
        "Qwen3-VL-Embedding 2B, Q4_K_M + f16 mmproj, 2048 dims: text, images, PDF pages, video frames",
        "third-party conversion by DevQuasar of Qwen/Qwen3-VL-Embedding-2B",
        QWEN3_VL_MIN_SCORE,
    ),
    CatalogEntry(
        "qwen3-vl-embedding-8b",
        "embedding",
        "mradermacher/Qwen3-VL-Embedding-8B-GGUF",
        "ffa49879fdb91ed1a436fbc84f37b123f714bb13",
        (
            ModelFile(
                "model",
                "Qwen3-VL-Embedding-8B.Q8_0.gguf",
                8_048_295_168,
                "c77299abab613f121ff918f17d085704952b21e986c73a71ec6cdc8a6e43e34b",
            ),
            MMPROJ_8B,
        ),
        4096,
        9.2,
        "Qwen3-VL-Embedding 8B, Q8_0 + f16 mmproj, 4096 dims: best quality, about 4x slower than 2B",
        "third-party conversion by mradermacher of Qwen/Qwen3-VL-Embedding-8B",
        QWEN3_VL_MIN_SCORE,
    ),
    # The same repository's Q4_K_M has no public record of its size or sum: they come from the hub's
    # LFS metadata at pull time, and the main branch's commit is resolved then and recorded.
    CatalogEntry(
        "qwen3-vl-embedding-8b-q4",
        "embedding",
        "mradermacher/Qwen3-VL-Embedding-8B-GGUF",
        None,
        (
            ModelFile("model", "Qwen3-VL-Embedding-8B.Q4_K_M.gguf"),
            MMPROJ_8B,
        ),
        4096,
        6.2,
        "Qwen3-VL-Embedding 8B, Q4_K_M + f16 mmproj, 4096 dims (about 6 GB; size checked against the hub)",
        "third-party conversion by mradermacher of Qwen/Qwen3-VL-Embedding-8B",
        QWEN3_VL_MIN_SCORE,
    ),
    # Qwen publishes the rerankers as safetensors (Qwen/Qwen3-VL-Reranker-2B, -8B). This conversion
    # has the layout launcher.models.rerank.llama reads: pooling type rank and the yes/no head
    # `cls.output.weight`. No revision or sum is on record: both come from the hub at pull time. The
    # 8B has no entry (the public 8B GGUFs lack the head): give its Hugging Face folder (CUDA GPU) or
    # a GGUF you converted with llama.cpp's convert_hf_to_gguf.py.
    CatalogEntry(
        "qwen3-vl-reranker-2b",
        "reranker",
        "bealore/Qwen3-VL-Reranker-2B-GGUF",
        None,
        (
            ModelFile("model", "Qwen3-VL-Reranker-2B.f16.gguf"),
            ModelFile("mmproj", "Qwen3-VL-Reranker-2B.mmproj-f16.gguf"),
        ),
        2048,
        4.2,
        "Qwen3-VL-Reranker 2B, f16: reorders the top hits (optional)",
        "third-party conversion by bealore of Qwen/Qwen3-VL-Reranker-2B",
    ),
)
# The default embedding model is the best one installed, in this order.
DEFAULT_ORDER = ("qwen3-vl-embedding-8b", "qwen3-vl-embedding-8b-q4", "qwen3-vl-embedding-2b")

BUNDLED_TEXT_MODEL = "all-MiniLM-L6-v2-Q8_0.gguf"


def entry(name: str) -> CatalogEntry | None:
    """The catalogue entry with this name, if any."""
    for e in CATALOG:
        if e.name == name.lower():
            return e
    return None


@dataclass(frozen=True)
class ResolvedModel:
    """A model file (and its mmproj) found on disk."""

    name: str
    path: Path
    mmproj: Path | None
    multimodal: bool


RECORD = "verified.json"  # written in an entry's folder once every file has passed its checks


def folder(e: CatalogEntry) -> Path:
    """Where `models pull` puts an entry's files."""
    return config.models_dir() / e.name


def pulled_path(e: CatalogEntry) -> tuple[Path, Path | None]:
    """Where `models pull` puts an entry's model (and mmproj)."""
    return folder(e) / e.file, (folder(e) / e.mmproj if e.mmproj else None)


def _record(e: CatalogEntry) -> dict[str, Any] | None:
    try:
        data = json.loads((folder(e) / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def install_state(e: CatalogEntry) -> str:
    """ "installed" (every file passed its checks and is unchanged since), "unverified" (the files
    are there, put by hand or by an older version: `models pull` checks them), "partial" (some are
    there, or a download was interrupted), or "absent"."""
    there = [(folder(e) / f.name).is_file() for f in e.files]
    if all(there):
        record = _record(e)
        if record is not None and _record_matches(e, record):
            return "installed"
        return "unverified"
    if any(there) or any((folder(e) / (f.name + PART)).exists() for f in e.files):
        return "partial"
    return "absent"


def _record_matches(e: CatalogEntry, record: dict[str, Any]) -> bool:
    """The record names this entry's files with the pinned sums, and each file is unchanged since
    (same size and modification time)."""
    if e.revision is not None and record.get("revision") != e.revision:
        return False
    files = {f.get("name"): f for f in record.get("files", []) if isinstance(f, dict)}
    for f in e.files:
        r = files.get(f.name)
        if r is None or (f.sha256 is not None and r.get("sha256") != f.sha256):
            return False
        try:
            st = (folder(e) / f.name).stat()
        except OSError:
            return False
        if st.st_size != r.get("size") or st.st_mtime_ns != r.get("mtime_ns"):
            return False
    return True


def is_pulled(e: CatalogEntry) -> bool:
    """True when the entry's files are installed: downloaded (or copied) and verified."""
    return install_state(e) == "installed"


def catalogue_rows() -> list[dict[str, Any]]:
    """`launcher models list --json`: every entry, then the bundled model."""
    rows: list[dict[str, Any]] = []
    for e in CATALOG:
        state = install_state(e)
        rows.append(
            {
                "name": e.name,
                "role": e.role,
                "repo": e.repo,
                "revision": e.revision,
                "files": [
                    {"kind": f.kind, "name": f.name, "size": f.size, "sha256": f.sha256} for f in e.files
                ],
                "on_disk": state == "installed",
                "state": state,
                "size_gb": e.size_gb,
                "description": e.description,
                "origin": e.origin,
                "path": str(folder(e)),
                "min_score": e.min_score,
            }
        )
    bundled = bundled_text_model()
    size = bundled.stat().st_size if bundled.is_file() else None
    rows.append(
        {
            "name": "minilm",
            "role": "embedding",
            "repo": None,
            "revision": None,
            "files": [{"kind": "model", "name": bundled.name, "size": size, "sha256": None}],
            "on_disk": size is not None,
            "state": "bundled" if size is not None else "absent",
            "size_gb": round((size or 0) / 1e9, 3),
            "description": "all-MiniLM-L6-v2 Q8_0, 384 dims, text only (bundled, offline default)",
            "origin": "bundled: sentence-transformers/all-MiniLM-L6-v2, converted here (scripts/make_minilm_gguf.py)",
            "path": str(bundled),
            "min_score": BUNDLED_MIN_SCORE,
        }
    )
    return rows


def bundled_text_model() -> Path:
    """The small text model shipped in models/ (all-MiniLM-L6-v2, Q8_0)."""
    return config.bundled_models_dir() / BUNDLED_TEXT_MODEL


def unverified_note(e: CatalogEntry) -> str:
    return (
        f"{e.name}'s files are in {folder(e)} but not verified: run `launcher models pull {e.name}` "
        "to check them (nothing is downloaded when they are complete)"
    )


def resolve_model(name_or_path: str | None, mmproj: str | None = None) -> ResolvedModel:
    """Turn --model (a catalogue name, a path, or nothing) into files on disk."""
    if name_or_path:
        e = entry(name_or_path)
        if e is not None:
            if e.role != "embedding":
                raise ModelError(f"{e.name} is a {e.role} model, not an embedding model")
            state = install_state(e)
            if state == "unverified":
                raise ModelError(unverified_note(e))
            if state != "installed":
                raise ModelError(f"model {e.name} is not downloaded: run `launcher models pull {e.name}`")
            model, mm = pulled_path(e)
            return ResolvedModel(e.name, model, Path(mmproj) if mmproj else mm, True)
        if name_or_path == "minilm" or name_or_path == "bundled":
            return ResolvedModel(BUNDLED_NAME, bundled_text_model(), None, False)
        path = Path(name_or_path).expanduser()
        if path.is_file() and path.resolve() == bundled_text_model().resolve():
            return ResolvedModel(BUNDLED_NAME, path, None, False)
        if not path.exists():
            known = ", ".join(e.name for e in CATALOG if e.role == "embedding")
            raise ModelError(
                f"model not found: {name_or_path} (give a .gguf path or one of: {known}, minilm)"
            )
        return ResolvedModel(
            path.stem, path, Path(mmproj).expanduser() if mmproj else None, mmproj is not None
        )
    for name in DEFAULT_ORDER:
        e = entry(name)
        if e is None:
            continue
        state = install_state(e)
        if state == "installed":
            model, mm = pulled_path(e)
            return ResolvedModel(e.name, model, Path(mmproj) if mmproj else mm, True)
        if state == "unverified":
            log.warning("note: %s; using the next model", unverified_note(e))
    bundled = bundled_text_model()
    if not bundled.is_file():
        raise ModelError(
            f"no model found: the bundled text model {bundled} is missing; run `launcher models pull qwen3-vl-embedding-2b`"
        )
    return ResolvedModel(BUNDLED_NAME, bundled, None, False)


# The cut for the fused score (launcher/query/retrieve.py) of a model not named above.
# Qwen3-Embedding-0.6B's model card prints cosine 0.7646 and 0.6000 for matching query/document
# pairs and 0.1414 and 0.1355 for crossed, unrelated ones; the 4B and 8B models put unrelated pairs
# lower still (0.03-0.11). 0.25 sits ~0.1 above that unrelated level and well below true matches,
# leaving room for text->image matches, which score lower than text->text. Not yet measured on
# Qwen3-VL-Embedding itself: calibrate per model (the 99th percentile of cosines between unrelated
# query/document pairs) and pass it as min_score.
DEFAULT_MIN_SCORE = 0.25


def min_score_for(model_file: str, architecture: str, dims: int | None) -> float:
    """The score floor for the model that built an index (its identity's `model_file`,
    `architecture` and `dims`): the catalogue entry's for a pulled file, the bundled model's,
    Qwen3-VL's for another conversion of the real models (a qwen3vl GGUF 2048 or 4096 wide), else
    DEFAULT_MIN_SCORE."""
    for e in CATALOG:
        if e.file == model_file and e.min_score is not None:
            return e.min_score
    if model_file == BUNDLED_TEXT_MODEL:
        return BUNDLED_MIN_SCORE
    if architecture == QWEN3_VL_ARCH and dims in {e.dims for e in CATALOG if e.role == "embedding"}:
        return QWEN3_VL_MIN_SCORE
    return DEFAULT_MIN_SCORE


# --- pull: download, verify, install -----------------------------------------------------------


def check_header(e: CatalogEntry, kind: str, path: Path) -> None:
    """The GGUF header is what the entry promises: a Qwen3-VL model of the entry's width (with the
    rank head for a reranker), or a Qwen3-VL vision projector. One-line ModelError otherwise."""
    header = gguf_meta.read_header(path, tensors=e.role == "reranker" and kind == "model")
    meta = header.meta
    arch = gguf_meta.architecture(meta)
    if kind == "mmproj":
        projector = meta.get("clip.projector_type")
        if arch != "clip":
            raise ModelError(f"{path.name} is not a vision projector (its architecture is {arch!r})")
        if projector != QWEN3_VL_PROJECTOR:
            raise ModelError(
                f"{path.name} is a {projector!r} projector, not Qwen3-VL's ({QWEN3_VL_PROJECTOR})"
            )
        width = meta.get("clip.vision.projection_dim")
        if isinstance(width, int) and width != e.dims:
            raise ModelError(f"{path.name} projects to {width} dimensions; {e.name} needs {e.dims}")
        return
    if arch != QWEN3_VL_ARCH:
        raise ModelError(f"{path.name} is a {arch or 'unknown'!r} model, not Qwen3-VL ({QWEN3_VL_ARCH})")
    width = meta.get(f"{QWEN3_VL_ARCH}.embedding_length")
    if width != e.dims:
        raise ModelError(f"{path.name} is {width} wide; {e.name} is {e.dims}: not the model it should be")
    if e.role == "reranker" and RANK_HEAD not in header.tensors:
        raise ModelError(
            f"{path.name} has no {RANK_HEAD} (the yes/no rank head): a plain generative conversion, not a reranker"
        )


def _expected(f: ModelFile, hub: HubFile | None) -> tuple[str | None, int | None]:
    """The sha256 and size a file must have: the catalogue's where pinned, else the hub's."""
    sha = f.sha256 or (hub.sha256 if hub else None)
    size = f.size if f.size is not None else (hub.size if hub else None)
    return sha, size


def _refuse(e: CatalogEntry, why: str) -> ModelError:
    return ModelError(f"{why}; {e.name} is not installed")


def pull(name: str, *, progress: bool = True, retries: int = download.RETRIES) -> tuple[Path, Path | None]:
    """Download (resuming), verify and install an entry's files; check files copied in by hand.

    Each file is hashed as it arrives and must match the pinned sha256 (or, where none is on
    record, the hub's LFS sha256 for the file at the pinned or just-resolved commit), then its
    GGUF header must be the model the entry names. Only then is it moved to its final name; once
    every file has passed, the record `verified.json` makes the entry installed."""
    e = entry(name)
    if e is None:
        known = ", ".join(x.name for x in CATALOG)
        raise LauncherError(f"unknown model {name!r}: known models are {known}")
    where = folder(e)
    where.mkdir(parents=True, exist_ok=True)
    if install_state(e) == "installed":
        return pulled_path(e)
    need_hub = (
        any(not (where / f.name).is_file() or f.sha256 is None or f.size is None for f in e.files)
        or e.revision is None
    )
    revision = e.revision
    hubs: dict[str, HubFile] = {}
    checked: list[dict[str, Any]] = []
    with download.client() as c:
        if need_hub:
            if download.is_offline():
                raise download.Offline(
                    f"cannot reach {urlparse(download.endpoint()).hostname} to download {e.repo}: you seem "
                    f"to be offline; retry when online, or copy "
                    + " and ".join(f.name for f in e.files)
                    + f" into {where} by hand and run `launcher models pull {e.name}` to check them"
                )
            for f in e.files:
                hub = download.file_metadata(c, e.repo, revision or "main", f.name)
                if revision is None:  # the first file fixes the commit every other file comes from
                    if hub.commit is None:
                        raise _refuse(e, f"the hub gave no commit for {e.repo}")
                    revision = hub.commit
                elif hub.commit is not None and hub.commit != revision:
                    raise _refuse(e, f"the hub served {f.name} from commit {hub.commit}, not {revision}")
                if f.sha256 and hub.sha256 and hub.sha256 != f.sha256:
                    raise _refuse(e, f"the hub's {f.name} has sha256 {hub.sha256}, not the pinned {f.sha256}")
                if f.size is not None and hub.size is not None and hub.size != f.size:
                    raise _refuse(e, f"the hub's {f.name} is {hub.size:,} bytes, not the pinned {f.size:,}")
                if _expected(f, hub)[0] is None:
                    raise _refuse(e, f"neither the catalogue nor the hub gives a sha256 for {f.name}")
                hubs[f.name] = hub
        for f in e.files:
            final = where / f.name
            sha, size = _expected(f, hubs.get(f.name))
            if final.is_file():  # copied in by hand, or left by an interrupted install: check it
                got, got_size = download.sha256_of(final), final.stat().st_size
                if got != sha or (size is not None and got_size != size):
                    raise _refuse(
                        e,
                        f"checksum failed for {final} (sha256 {got}, expected {sha}): it is not the file the "
                        f"catalogue names; delete it and run `launcher models pull {e.name}` to download it",
                    )
                check_header(e, f.kind, final)
            else:
                part = where / (f.name + PART)
                try:
                    got, got_size = download.download(
                        c, hubs[f.name], part, progress=progress, retries=retries
                    )
                except download.Interrupted as exc:
                    raise download.Interrupted(
                        f"{exc}; {e.name} is not installed: run `launcher models pull {e.name}` again to resume"
                    ) from None
                except download.DownloadError as exc:
                    raise type(exc)(f"{exc}; {e.name} is not installed") from None
                if size is not None and got_size < size:
                    raise _refuse(
                        e,
                        f"download of {f.name} stopped at {got_size:,} of {size:,} bytes; run "
                        f"`launcher models pull {e.name}` again to resume",
                    )
                if got != sha or (size is not None and got_size != size):
                    part.unlink(missing_ok=True)
                    raise _refuse(
                        e,
                        f"checksum failed for {f.name} (sha256 {got}, expected {sha}): the download was "
                        f"discarded; run `launcher models pull {e.name}` again, and report it if it fails twice",
                    )
                try:
                    check_header(e, f.kind, part)
                except ModelError as exc:
                    part.unlink(missing_ok=True)
                    raise _refuse(e, f"{exc} (refused after download)") from None
                os.replace(part, final)
            st = final.stat()
            checked.append(
                {
                    "kind": f.kind,
                    "name": f.name,
                    "size": st.st_size,
                    "sha256": got,
                    "mtime_ns": st.st_mtime_ns,
                }
            )
    record = {"name": e.name, "repo": e.repo, "revision": revision, "files": checked}
    atomic_write_json(where / RECORD, record)
    return pulled_path(e)


MODEL_HINT = "model.json"  # beside the manifest: which files built this index (informational)


def write_model_hint(index_dir: Path, model: ResolvedModel) -> None:
    """Remember which model files built the index, so search can load the same ones."""
    hint = {
        "name": model.name,
        "model": str(model.path),
        "mmproj": str(model.mmproj) if model.mmproj else None,
    }
    atomic_write_json(index_dir / MODEL_HINT, hint)


def read_model_hint(index_dir: Path) -> dict[str, Any] | None:
    """The model files recorded by the last `launcher index`, if any."""
    try:
        return json.loads((index_dir / MODEL_HINT).read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def resolve_index_model(index_dir: Path, model: str | None, mmproj: str | None) -> ResolvedModel:
    """The model to use with an index: the one named, else the one that built it, else the default."""
    if model:
        return resolve_model(model, mmproj)
    hint = read_model_hint(index_dir)
    if hint and Path(hint["model"]).is_file():
        mm = Path(hint["mmproj"]) if hint.get("mmproj") else None
        return ResolvedModel(hint["name"], Path(hint["model"]), mm, mm is not None)
    return resolve_model(None, mmproj)
