"""`launcher models pull` against a FAKE hub (tests/fakehub.py) that speaks the hub's file protocol:
the right repository, revision and files are asked for; downloads resume after a dropped
connection; a checksum mismatch, a short file or a wrong GGUF is refused in one line and nothing is
installed; files copied in by hand are checked the same way. The files served are header-only GGUFs
made here (no model weights exist offline); llama.cpp never loads them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.core.errors import ModelError
from launcher.models import catalogue as models
from launcher.models import download
from tests.fakehub import FakeHub, gguf_bytes

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "SomeConverter/Qwen3-VL-Embedding-2B-GGUF"
MODEL = gguf_bytes({"general.architecture": "qwen3vl", "qwen3vl.embedding_length": 2048}, pad_to=3 << 20)
MMPROJ = gguf_bytes(
    {
        "general.architecture": "clip",
        "clip.projector_type": "qwen3vl_merger",
        "clip.vision.projection_dim": 2048,
    },
    pad_to=1 << 20,
    seed=1,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pinned_entry(
    model: bytes = MODEL, mmproj: bytes = MMPROJ, revision: str | None = COMMIT
) -> models.CatalogEntry:
    """The 2B entry with its files replaced by the ones the fake hub serves (pinned: size and sha256)."""
    real = models.entry("qwen3-vl-embedding-2b")
    assert real is not None
    return dataclasses.replace(
        real,
        repo=REPO,
        revision=revision,
        files=(
            models.ModelFile("model", "model.Q4_K_M.gguf", len(model), sha(model)),
            models.ModelFile("mmproj", "mmproj-f16.gguf", len(mmproj), sha(mmproj)),
        ),
    )


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    fake = FakeHub()
    fake.add(REPO, COMMIT, {"model.Q4_K_M.gguf": MODEL, "mmproj-f16.gguf": MMPROJ})
    url = fake.start()
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", "")
    yield fake
    fake.stop()


def use(monkeypatch: pytest.MonkeyPatch, e: models.CatalogEntry) -> None:
    monkeypatch.setattr(models, "CATALOG", tuple(e if x.name == e.name else x for x in models.CATALOG))


def test_pull_asks_for_the_pinned_files_verifies_and_installs(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    e = pinned_entry()
    use(monkeypatch, e)
    assert models.install_state(e) == "absent"
    assert models.resolve_model(None).name == "all-minilm-l6-v2"
    model, mmproj = models.pull(e.name, progress=False)
    assert model.read_bytes() == MODEL and mmproj is not None and mmproj.read_bytes() == MMPROJ
    for name in ("model.Q4_K_M.gguf", "mmproj-f16.gguf"):
        assert f"/{REPO}/resolve/{COMMIT}/{name}" in hub.asked("HEAD")
        assert f"/{REPO}/resolve/{COMMIT}/{name}" in hub.asked("GET")
    assert models.install_state(e) == "installed" and not list(model.parent.glob("*.part"))
    record = json.loads((model.parent / models.RECORD).read_text())
    assert record["revision"] == COMMIT and [f["sha256"] for f in record["files"]] == [
        sha(MODEL),
        sha(MMPROJ),
    ]
    chosen = models.resolve_model(None)  # an installed Qwen3-VL becomes the default
    assert chosen.name == e.name and chosen.mmproj == mmproj and chosen.multimodal
    # A second pull has nothing to do; a file changed on disk afterwards is no longer trusted.
    hub.requests.clear()
    models.pull(e.name, progress=False)
    assert hub.requests == []
    with model.open("r+b") as f:
        f.seek(100)
        f.write(b"\xff")
    assert models.install_state(e) == "unverified"
    with pytest.raises(ModelError, match="not verified: run `launcher models pull"):
        models.resolve_model(e.name)


def test_a_dropped_connection_resumes_where_it_stopped(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    e = pinned_entry()
    use(monkeypatch, e)
    hub.drops["model.Q4_K_M.gguf"] = [1 << 20, 700_000]  # two cuts, then a clean stream
    model, _ = models.pull(e.name, progress=False)
    assert model.read_bytes() == MODEL and models.is_pulled(e)
    ranges = [r.range for r in hub.requests if r.method == "GET" and r.path.startswith("/cdn/")]
    assert ranges[:3] == [None, f"bytes={1 << 20}-", f"bytes={(1 << 20) + 700_000}-"]


def test_an_interrupted_pull_is_not_installed_and_the_next_one_resumes(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    e = pinned_entry()
    use(monkeypatch, e)
    hub.drops["model.Q4_K_M.gguf"] = [1 << 20]
    with pytest.raises(download.DownloadError) as info:
        models.pull(e.name, progress=False, retries=0)
    message = str(info.value)
    assert "\n" not in message and "stopped at 1,048,576 of 3,145,728 bytes" in message
    assert "run `launcher models pull qwen3-vl-embedding-2b` again to resume" in message
    assert models.install_state(e) == "partial" and models.resolve_model(None).name == "all-minilm-l6-v2"
    hub.requests.clear()
    model, _ = models.pull(e.name, progress=False)
    assert model.read_bytes() == MODEL and models.is_pulled(e)
    assert [r.range for r in hub.requests if r.path.startswith("/cdn/")][0] == f"bytes={1 << 20}-"


def test_a_checksum_mismatch_is_refused_and_discarded(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    e = pinned_entry()
    use(monkeypatch, e)
    corrupt = bytearray(MODEL)
    corrupt[2_000_000] ^= 1
    hub.instead["model.Q4_K_M.gguf"] = bytes(corrupt)  # the hub advertises the right sum, sends other bytes
    with pytest.raises(ModelError) as info:
        models.pull(e.name, progress=False)
    message = str(info.value)
    assert "\n" not in message and message.startswith("checksum failed for model.Q4_K_M.gguf")
    assert f"expected {sha(MODEL)}" in message and "discarded" in message and "is not installed" in message
    folder = models.folder(e)
    assert not list(folder.glob("*.gguf*")) and models.install_state(e) == "absent"
    assert models.resolve_model(None).name == "all-minilm-l6-v2"  # never the default, never half used


def test_the_hub_disagreeing_with_the_pin_is_refused_before_downloading(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = gguf_bytes(
        {"general.architecture": "qwen3vl", "qwen3vl.embedding_length": 2048}, pad_to=3 << 20, seed=9
    )
    e = dataclasses.replace(
        pinned_entry(),
        files=(models.ModelFile("model", "model.Q4_K_M.gguf", len(other), sha(other)),)
        + pinned_entry().files[1:],
    )
    use(monkeypatch, e)
    with pytest.raises(
        ModelError, match=f"the hub's model.Q4_K_M.gguf has sha256 {sha(MODEL)}, not the pinned"
    ):
        models.pull(e.name, progress=False)
    assert hub.asked("GET") == [] and models.install_state(e) == "absent"


@pytest.mark.parametrize(
    ("meta", "kind", "why"),
    [
        (
            {"general.architecture": "bert", "bert.embedding_length": 384},
            "model",
            "is a 'bert' model, not Qwen3-VL",
        ),
        ({"general.architecture": "qwen3vl", "qwen3vl.embedding_length": 4096}, "model", "is 4096 wide"),
        ({"general.architecture": "clip", "clip.projector_type": "gemma3"}, "mmproj", "'gemma3' projector"),
    ],
)
def test_a_file_that_is_not_the_promised_model_is_refused(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, meta: dict[str, str | int], kind: str, why: str
) -> None:
    wrong = gguf_bytes(meta, pad_to=1 << 20, seed=3)
    model, mmproj = (wrong, MMPROJ) if kind == "model" else (MODEL, wrong)
    hub.add(REPO, COMMIT, {"model.Q4_K_M.gguf": model, "mmproj-f16.gguf": mmproj})
    e = pinned_entry(model, mmproj)
    use(monkeypatch, e)
    with pytest.raises(ModelError) as info:
        models.pull(e.name, progress=False)
    assert why in str(info.value) and "refused after download" in str(info.value)
    assert models.install_state(e) != "installed" and not list(models.folder(e).glob("*.part"))


def test_a_reranker_without_its_rank_head_is_refused(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = gguf_bytes({"general.architecture": "qwen3vl", "qwen3vl.embedding_length": 2048}, pad_to=1 << 20)
    headed = gguf_bytes(
        {"general.architecture": "qwen3vl", "qwen3vl.embedding_length": 2048}, ("cls.output.weight",), 1 << 20
    )
    real = models.entry("qwen3-vl-reranker-2b")
    assert real is not None and real.revision is None and all(f.sha256 is None for f in real.files)
    for data, ok in ((plain, False), (headed, True)):
        hub.add(real.repo, COMMIT, {real.files[0].name: data, real.files[1].name: MMPROJ})
        if ok:
            model, _ = models.pull(real.name, progress=False)
            assert model.read_bytes() == headed and models.is_pulled(real)
        else:
            with pytest.raises(ModelError, match="has no cls.output.weight"):
                models.pull(real.name, progress=False)


def test_an_unpinned_entry_is_checked_against_the_hubs_metadata_at_one_commit(hub: FakeHub) -> None:
    real = models.entry("qwen3-vl-reranker-2b")
    assert real is not None
    headed = gguf_bytes(
        {"general.architecture": "qwen3vl", "qwen3vl.embedding_length": 2048}, ("cls.output.weight",), 1 << 20
    )
    hub.add(real.repo, COMMIT, {real.files[0].name: headed, real.files[1].name: MMPROJ})
    models.pull(real.name, progress=False)
    # main was asked once, to learn its commit; every file then came from that commit.
    heads = hub.asked("HEAD")
    assert heads[0] == f"/{real.repo}/resolve/main/{real.files[0].name}"
    assert all(
        p.startswith(f"/{real.repo}/resolve/{COMMIT}/")
        for p in heads[1:] + [p for p in hub.asked("GET") if not p.startswith("/cdn/")]
    )
    assert json.loads((models.folder(real) / models.RECORD).read_text())["revision"] == COMMIT
    # A hub that gives no sha256 (a file not stored with LFS) cannot be checked: refused.
    other = dataclasses.replace(real, name="qwen3-vl-reranker-2b")
    (models.folder(other) / models.RECORD).unlink()
    for f in other.files:
        (models.folder(other) / f.name).unlink()
    hub.lfs = False
    with pytest.raises(ModelError, match="neither the catalogue nor the hub gives a sha256"):
        models.pull(real.name, progress=False)


def test_files_copied_by_hand_are_checked_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    e = pinned_entry()
    use(monkeypatch, e)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # pinned sums: checking needs no network
    folder = models.folder(e)
    folder.mkdir(parents=True)
    (folder / "model.Q4_K_M.gguf").write_bytes(MODEL)
    (folder / "mmproj-f16.gguf").write_bytes(MMPROJ[:-1] + b"\x00")
    assert models.install_state(e) == "unverified"
    assert models.resolve_model(None).name == "all-minilm-l6-v2"
    with pytest.raises(ModelError, match="not verified"):
        models.resolve_model(e.name)
    with pytest.raises(ModelError, match="checksum failed for .*mmproj-f16.gguf.*delete it"):
        models.pull(e.name, progress=False)
    assert (folder / "mmproj-f16.gguf").exists()  # a user's file is never deleted
    (folder / "mmproj-f16.gguf").write_bytes(MMPROJ)
    models.pull(e.name, progress=False)
    assert models.is_pulled(e) and models.resolve_model(None).name == e.name


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launcher.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_the_real_catalogue_entry_asks_for_the_published_files(hub: FakeHub) -> None:
    """Through the CLI, the shipped 2B entry asks the hub for DevQuasar's files at the pinned commit;
    the fake serves other bytes under those names, so the pull is refused in one line before any
    download, and nothing is installed."""
    e = models.entry("qwen3-vl-embedding-2b")
    assert e is not None and e.revision is not None
    hub.add(e.repo, e.revision, {f.name: MODEL for f in e.files})
    proc = cli("models", "pull", e.name, env={"HF_ENDPOINT": os.environ["HF_ENDPOINT"]})
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(
        f"error: the hub's {e.file} has sha256 {sha(MODEL)}, not the pinned {e.files[0].sha256}"
    )
    assert hub.asked("HEAD") == [
        "/DevQuasar/Qwen.Qwen3-VL-Embedding-2B-GGUF/resolve/6a1b927414664e0e17dd379913e3416a1ae1b48d/"
        "Qwen.Qwen3-VL-Embedding-2B.Q4_K_M.gguf"
    ]
    listed = {r["name"]: r for r in json.loads(cli("models", "list", "--json", env={}).stdout)}
    assert listed[e.name]["on_disk"] is False


def test_the_fake_hub_speaks_the_protocol_huggingface_hub_downloads_with(
    hub: FakeHub, tmp_path: Path
) -> None:
    """hf_hub_download itself (HF_ENDPOINT set before it is imported) gets the same bytes from the
    fake: the protocol the pull is tested against is the one the real client speaks."""
    script = (
        "import sys; from huggingface_hub import hf_hub_download; "
        f"print(hf_hub_download(repo_id={REPO!r}, filename='model.Q4_K_M.gguf', revision={COMMIT!r}, "
        f"local_dir={str(tmp_path)!r}))"
    )
    env = {**os.environ, "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).read_bytes() == MODEL


def test_pull_offline_is_one_clear_line() -> None:
    proc = cli("models", "pull", "qwen3-vl-embedding-2b", env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "you seem to be offline" in proc.stderr
    proc = cli("models", "pull", "no-such-model", env={})
    assert proc.returncode == 1 and "unknown model 'no-such-model'" in proc.stderr


@pytest.mark.parametrize(
    ("model_file", "arch", "dims", "floor"),
    [
        ("Qwen.Qwen3-VL-Embedding-2B.Q4_K_M.gguf", "qwen3vl", 2048, models.QWEN3_VL_MIN_SCORE),
        ("Qwen3-VL-Embedding-8B.Q8_0.gguf", "qwen3vl", 4096, models.QWEN3_VL_MIN_SCORE),
        ("Qwen3-VL-Embedding-2B.Q5_K_M.gguf", "qwen3vl", 2048, models.QWEN3_VL_MIN_SCORE),
        ("all-MiniLM-L6-v2-Q8_0.gguf", "bert", 384, models.BUNDLED_MIN_SCORE),
        ("tiny-qwen3vl-f16.gguf", "qwen3vl", 64, 0.25),
        ("nomic-embed.gguf", "nomic-bert", 768, 0.25),
    ],
)
def test_the_score_floor_follows_the_model(model_file: str, arch: str, dims: int, floor: float) -> None:
    assert models.min_score_for(model_file, arch, dims) == floor
