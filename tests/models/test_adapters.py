"""SigLIP, BLIP, UniIR CLIP_SF / BLIP_FF adapters on tiny random checkpoints, and the shared batching.

Each checkpoint has the real architecture and the official key layout and file format (transformers
folders for SigLIP/BLIP; UniIR's ``torch.save({"model": state_dict})`` with UniIR's key names for
UniIR). The UniIR CLIP_SF reference is an independent re-implementation of OpenAI CLIP's module
layout (its state dict *is* the official layout), not transformers.
"""

from __future__ import annotations

import os
import sys
import types
import typing
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from mmbench.data.types import ImageRef, Item, format_string  # noqa: E402
from mmbench.errors import DataError  # noqa: E402
from mmbench.models.base import l2_normalize  # noqa: E402
from mmbench.models.batching import OomGuard, encode_in_length_order, image_batches, length_order  # noqa: E402
from mmbench.models.builtin import UNIIR_BLIP_FF_L, UNIIR_CLIP_SF_L, resolve_dynamic_model  # noqa: E402
from mmbench.registry import import_target  # noqa: E402

SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def load(meta, **options):
    return import_target(meta.loader)(meta, **{**meta.options, **options})


@pytest.fixture(scope="module")
def bert_tokenizer():
    from transformers import AutoTokenizer

    from mmbench.models.minilm import package_model_path

    return AutoTokenizer.from_pretrained(package_model_path(), local_files_only=True)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three RGB PNGs of different sizes plus one RGBA, and their PIL images as decoded by ImageRef."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    refs = []
    for k in range(4):
        mode, ch = ("RGBA", 4) if k == 3 else ("RGB", 3)
        path = folder / f"{k}.png"
        Image.fromarray(rng.integers(0, 256, (40 + 8 * k, 48, ch), dtype=np.uint8), mode).save(path)
        refs.append(ImageRef(path))
    return refs


TEXTS = ["a photo of a cat", "a red car on a long road in the rain", "word " * 300, "dog"]


def _items(refs):
    t = [Item(f"t{k}", "text", s) for k, s in enumerate(TEXTS)]
    v = [Item(f"i{k}", "image", image=r) for k, r in enumerate(refs)]
    f = [Item(f"f{k}", "image,text", s, image=r) for k, (s, r) in enumerate(zip(TEXTS, refs))]
    return t, v, f


# -- batching: OOM halving, length order, DataLoader decoding ---------------------------------------------

def test_oom_guard_halves_and_retries():
    calls = []

    def encode(batch):
        calls.append(len(batch))
        if len(batch) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return np.asarray([[float(x), 1.0] for x in batch])

    guard = OomGuard(8)
    data = list(range(19))
    out = np.concatenate([guard(encode, data[s:s + 8]) for s in range(0, len(data), 8)])
    np.testing.assert_array_equal(out[:, 0], np.arange(19))
    assert guard.halvings == 2 and guard.limit == 2      # 8 -> fail, halves of 4 -> fail, 2 fits
    assert calls[:3] == [8, 4, 2] and max(calls[3:]) <= 2

    tensor_out = OomGuard(8)(lambda b: encode(b.tolist()), torch.arange(6))
    np.testing.assert_array_equal(tensor_out[:, 0], np.arange(6))


def test_oom_guard_gives_up_at_one_item_and_passes_other_errors():
    def always_oom(batch):
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        OomGuard(4)(always_oom, [1, 2, 3, 4])

    def broken(batch):
        raise ValueError("not an OOM")

    guard = OomGuard(4)
    with pytest.raises(ValueError):
        guard(broken, [1, 2])
    assert guard.halvings == 0


def test_length_sorted_batches_restore_input_order():
    texts = ["a", "a b c d", "a b", "a b c d e f", "a b c"]
    lengths = [len(t.split()) for t in texts]
    assert list(length_order(lengths)) == [3, 1, 4, 2, 0]
    seen = []

    def fn(batch):
        seen.append([len(t.split()) for t in batch])
        return np.asarray([[len(t.split())] for t in batch], dtype=np.float32)

    out = encode_in_length_order(texts, lengths, fn, 2, OomGuard(2))
    assert seen == [[6, 4], [3, 2], [1]]
    np.testing.assert_array_equal(out[:, 0], lengths)


def _to_tensor(image):
    return torch.from_numpy(np.asarray(image, dtype=np.float32)[:32, :32]).permute(2, 0, 1)


def test_dataloader_decoding_equals_direct_decoding(images, tmp_path):
    direct = torch.stack([_to_tensor(r.load()) for r in images])
    for workers in (0, 2):
        batches = list(image_batches(images, _to_tensor, 3, num_workers=workers))
        assert [len(b) for b in batches] == [3, 1]
        assert torch.equal(torch.cat(batches), direct)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png"):
        list(image_batches([images[0], ImageRef(bad)], _to_tensor, 2, num_workers=2))


# -- SigLIP ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_siglip_dir(tmp_path_factory, bert_tokenizer):
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    folder = tmp_path_factory.mktemp("tiny-siglip")
    config = SiglipConfig(
        text_config=dict(SMALL, vocab_size=bert_tokenizer.vocab_size, max_position_embeddings=16),
        vision_config=dict(SMALL, image_size=32, patch_size=8),
    )
    torch.manual_seed(1)
    SiglipModel(config).save_pretrained(folder)
    bert_tokenizer.save_pretrained(folder)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_siglip_adapter_equals_direct_model(tiny_siglip_dir, images):
    from transformers import SiglipImageProcessor, SiglipModel

    meta = resolve_dynamic_model(f"siglip:{tiny_siglip_dir}")
    assert meta.loader.endswith("load_siglip") and meta.revision.startswith("local:")
    encoder = load(meta, device="cpu", num_workers=0)
    t_items, v_items, f_items = _items(images)
    t = encoder.encode(t_items, role="query", batch_size=3)
    v = encoder.encode(v_items, role="candidate", batch_size=3)
    f = encoder.encode(f_items, role="candidate", batch_size=3)
    settings = encoder.settings()
    assert settings["text_padding"] == "max_length" and settings["attention_mask"] is False
    assert settings["max_length"] == 16 and settings["center_crop"] is None

    model = SiglipModel.from_pretrained(tiny_siglip_dir).eval()
    proc = SiglipImageProcessor.from_pretrained(tiny_siglip_dir)
    with torch.inference_mode():
        ids = encoder.tokenizer(TEXTS, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
        assert ids["input_ids"].shape == (4, 16)
        dt = model.get_text_features(input_ids=ids["input_ids"]).pooler_output
        dv = model.get_image_features(pixel_values=proc(images=[r.load() for r in images],
                                                        return_tensors="pt")["pixel_values"]).pooler_output
    dt, dv = l2_normalize(dt.numpy()), l2_normalize(dv.numpy())
    np.testing.assert_allclose(t, dt, atol=1e-5)
    np.testing.assert_allclose(v, dv, atol=1e-5)
    np.testing.assert_allclose(f, dt + dv, atol=1e-5)


def test_siglip_with_its_real_sentencepiece_tokenizer_pads_every_text_to_full_length(tmp_path, images):
    """SigLIP's own tokenizer class (SentencePiece, ``</s>`` appended and used as padding): a
    mixed-length batch gives each text the embedding it has alone at full padding, no mask."""
    import sentencepiece as spm
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipTokenizer

    corpus = [*TEXTS[:2], "the dog sleeps on the mat", "a picture of two birds", TEXTS[3]] * 20
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_prefix=str(tmp_path / "spm"), vocab_size=60,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>",
                                   eos_piece="</s>", unk_piece="<unk>", hard_vocab_limit=False, minloglevel=2)
    folder = tmp_path / "siglip-spm"
    tokenizer = SiglipTokenizer(vocab_file=str(tmp_path / "spm.model"), model_max_length=16)
    tokenizer.save_pretrained(folder)
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    config = SiglipConfig(text_config=dict(SMALL, vocab_size=len(tokenizer), max_position_embeddings=16,
                                           pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id),
                          vision_config=dict(SMALL, image_size=32, patch_size=8))
    torch.manual_seed(2)
    model = SiglipModel(config).eval()
    model.save_pretrained(folder)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)

    encoder = load(resolve_dynamic_model(f"siglip:{folder}"), device="cpu", num_workers=0)
    assert type(encoder.tokenizer).__name__ == "SiglipTokenizer"
    texts = ["the dog", "a red car on a long road in the rain", "cat", "word " * 40]
    got = encoder.encode([Item(f"t{k}", "text", s) for k, s in enumerate(texts)], role="query", batch_size=3)
    rows = []
    for text in texts:
        ids = tokenizer(text, padding="max_length", truncation=True, max_length=16, return_tensors="pt")["input_ids"]
        assert ids.shape == (1, 16) and (ids[0] == tokenizer.eos_token_id).any()
        with torch.inference_mode():
            rows.append(model.get_text_features(input_ids=ids).pooler_output[0].numpy())
    np.testing.assert_allclose(got, l2_normalize(np.stack(rows)), atol=1e-5)


# -- BLIP (zero-shot ITC) -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_blip_dir(tmp_path_factory, bert_tokenizer):
    from transformers import BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor

    folder = tmp_path_factory.mktemp("tiny-blip")
    config = BlipConfig(
        text_config=dict(SMALL, vocab_size=bert_tokenizer.vocab_size + 2, encoder_hidden_size=32,
                         max_position_embeddings=64),
        vision_config=dict(SMALL, image_size=32, patch_size=8),
        projection_dim=16, image_text_hidden_size=16,
    )
    torch.manual_seed(2)
    BlipForImageTextRetrieval(config).save_pretrained(folder)
    bert_tokenizer.save_pretrained(folder)
    BlipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_blip_adapter_equals_direct_itc_embeddings(tiny_blip_dir, images):
    from transformers import BlipForImageTextRetrieval, BlipImageProcessor

    from mmbench.models.builtin import BLIP_ITM_BASE_COCO

    encoder = load(BLIP_ITM_BASE_COCO, path=str(tiny_blip_dir), device="cpu", num_workers=2)
    t_items, v_items, f_items = _items(images)
    t = encoder.encode(t_items, role="query", batch_size=2)
    v = encoder.encode(v_items, role="candidate", batch_size=2)
    f = encoder.encode(f_items, role="candidate", batch_size=2)
    assert t.shape == (4, 16) and encoder.settings()["max_length"] == 35

    model = BlipForImageTextRetrieval.from_pretrained(tiny_blip_dir).eval()
    proc = BlipImageProcessor.from_pretrained(tiny_blip_dir)
    pixels = proc(images=[r.load() for r in images], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        tok = encoder.tokenizer(TEXTS, padding=True, truncation=True, max_length=35, return_tensors="pt")
        assert tok["input_ids"].shape[1] == 35
        # BlipForImageTextRetrieval's own ITC path (use_itm_head=False) gives the cosine of these two
        out = model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], pixel_values=pixels,
                    use_itm_head=False)
        text_h = model.text_encoder(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
        dt = l2_normalize(model.text_proj(text_h[:, 0]).numpy())
        dv = l2_normalize(model.vision_proj(model.vision_model(pixel_values=pixels).last_hidden_state[:, 0]).numpy())
    sims = out.logits_per_image if hasattr(out, "logits_per_image") else out[0]
    np.testing.assert_allclose(np.asarray(sims).reshape(4, 4), dv @ dt.T, atol=1e-5)
    np.testing.assert_allclose(t, dt, atol=1e-5)
    np.testing.assert_allclose(v, dv, atol=1e-5)
    np.testing.assert_allclose(f, dt + dv, atol=1e-5)


# -- UniIR CLIP_SF: OpenAI CLIP layout in a UniIR .pth ---------------------------------------------------------

class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """OpenAI CLIP's block (clip/model.py): names attn / ln_1 / mlp.c_fc / mlp.c_proj / ln_2."""

    def __init__(self, width, heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 4 * width)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(4 * width, width))]))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x, mask=None):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x, mask=None):
        for block in self.resblocks:
            x = block(x, mask)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, resolution, patch, width, layers, heads, output_dim):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * width ** -0.5)
        self.positional_embedding = nn.Parameter(torch.randn((resolution // patch) ** 2 + 1, width) * width ** -0.5)
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, output_dim) * width ** -0.5)

    def forward(self, x):
        x = self.conv1(x).flatten(2).permute(0, 2, 1)
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x).permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x[:, 0]) @ self.proj


class OpenAICLIP(nn.Module):
    """OpenAI CLIP (ViT variant) with its parameter names; ``width // 64`` heads as in ``build_model``."""

    def __init__(self, embed_dim=16, resolution=32, patch=8, v_width=128, t_width=128, layers=2,
                 context=77, vocab=30522):
        super().__init__()
        self.visual = VisionTransformer(resolution, patch, v_width, layers, v_width // 64, embed_dim)
        self.transformer = Transformer(t_width, layers, t_width // 64)
        self.token_embedding = nn.Embedding(vocab, t_width)
        self.positional_embedding = nn.Parameter(torch.randn(context, t_width) * 0.01)
        self.ln_final = nn.LayerNorm(t_width)
        self.text_projection = nn.Parameter(torch.randn(t_width, embed_dim) * t_width ** -0.5)
        self.logit_scale = nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))
        with torch.no_grad():     # non-trivial LayerNorms, so a mixed-up ln is caught
            for name, p in self.named_parameters():
                if "ln" in name:
                    p.add_(torch.randn_like(p) * 0.1)

    def encode_text(self, ids, eos_positions):
        x = self.token_embedding(ids) + self.positional_embedding
        mask = torch.full((ids.shape[1], ids.shape[1]), float("-inf")).triu(1)
        x = self.ln_final(self.transformer(x.permute(1, 0, 2), mask).permute(1, 0, 2))
        # OpenAI pools at argmax(ids) (EOT has CLIP's largest id); with a BERT vocab: the first [SEP]
        return x[torch.arange(x.shape[0]), eos_positions] @ self.text_projection

    def encode_image(self, pixels):
        return self.visual(pixels)


@pytest.fixture(scope="module")
def uniir_clip_sf(tmp_path_factory, bert_tokenizer):
    """(reference OpenAI CLIP, .pth path, processor folder) with UniIR's key names (``clip_model.``)."""
    from transformers import CLIPImageProcessor

    torch.manual_seed(3)
    ref = OpenAICLIP(vocab=bert_tokenizer.vocab_size).eval()
    folder = tmp_path_factory.mktemp("uniir")
    state = {f"clip_model.{k}": v for k, v in ref.state_dict().items()}
    assert "clip_model.transformer.resblocks.0.attn.in_proj_weight" in state
    assert "clip_model.visual.transformer.resblocks.1.mlp.c_proj.weight" in state
    path = folder / "checkpoint" / "CLIP_SF" / "clip_sf_large.pth"
    path.parent.mkdir(parents=True)
    torch.save({"model": state}, path)
    processor = folder / "processor"
    bert_tokenizer.save_pretrained(processor)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(processor)
    return ref, path, processor


def _openai_tokens(tokenizer, texts: list[str]):
    """(input ids, EOS positions) padded to 77, as the reference model takes them."""
    tok = tokenizer(texts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    return tok["input_ids"], (tok["input_ids"] == tokenizer.sep_token_id).int().argmax(1)


def test_uniir_clip_sf_equals_openai_layout_reference(uniir_clip_sf, images):
    from transformers import CLIPImageProcessor

    ref, path, processor = uniir_clip_sf
    # a folder is searched for the file, as a downloaded TIGER-Lab/UniIR snapshot would be
    encoder = load(UNIIR_CLIP_SF_L, path=str(path.parent.parent.parent), processor=str(processor), device="cpu")
    assert encoder.checkpoint == path and encoder.max_length == 77
    t_items, v_items, f_items = _items(images)
    t = encoder.encode(t_items, role="candidate", batch_size=3)
    v = encoder.encode(v_items, role="candidate", batch_size=3)
    f = encoder.encode(f_items, role="candidate", batch_size=3)

    tok = encoder.tokenizer(TEXTS, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    eos = (tok["input_ids"] == encoder.tokenizer.sep_token_id).int().argmax(1)
    pixels = CLIPImageProcessor.from_pretrained(processor)(images=[r.load() for r in images],
                                                          return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        rt = ref.encode_text(tok["input_ids"], eos).numpy()
        rv = ref.encode_image(pixels).numpy()
    dt, dv = l2_normalize(rt), l2_normalize(rv)
    np.testing.assert_allclose(t, dt, atol=1e-5)
    np.testing.assert_allclose(v, dv, atol=1e-5)
    # UniIR's CLIPScoreFusion: raw text + raw image embedding, normalised at index time, which is
    # not the sum of unit embeddings (the tiny model's two norms differ, so the two tell apart)
    np.testing.assert_allclose(f, l2_normalize(rt + rv), atol=1e-5)
    assert np.abs(l2_normalize(dt + dv) - l2_normalize(rt + rv)).max() > 1e-3

    # queries carry UniIR's instruction: format_string(f"{instruction} {query}"); an image query becomes image+text
    assert UNIIR_CLIP_SF_L.uses_instructions
    q = Item("q", "image", image=images[0], instruction="Find a caption for the image", raw_text=None)
    qt = encoder.encode([q], role="query", batch_size=2)
    prompt = format_string("Find a caption for the image ")
    alone = encoder.encode([Item("p", "text", prompt)], role="candidate", batch_size=2)
    with torch.inference_mode():
        raw_prompt = ref.encode_text(*_openai_tokens(encoder.tokenizer, [prompt])).numpy()
    np.testing.assert_allclose(qt, l2_normalize(raw_prompt + rv[:1]), atol=1e-5)
    np.testing.assert_allclose(alone, l2_normalize(raw_prompt), atol=1e-5)


def test_uniir_checkpoint_errors(tmp_path, uniir_clip_sf):
    _, _, processor = uniir_clip_sf
    with pytest.raises(DataError, match="no clip_sf_large.pth"):
        load(UNIIR_CLIP_SF_L, path=str(tmp_path), processor=str(processor), device="cpu")
    wrong = tmp_path / "clip_sf_large.pth"
    torch.save({"model": {"visual_encoder.cls_token": torch.zeros(1)}}, wrong)
    with pytest.raises(DataError, match="not a UniIR CLIP_SF checkpoint"):
        load(UNIIR_CLIP_SF_L, path=str(wrong), processor=str(processor), device="cpu")


class _TrainingConfig:
    """Pickled like OmegaConf's DictConfig (a custom state), from a module that is gone at load time."""

    def __init__(self) -> None:
        self._content = {"model": {"name": "CLIPScoreFusion"}, "lr": 1e-5}
        self._metadata = {"key_type": typing.Any}

    def __getstate__(self) -> dict:
        return dict(self.__dict__)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ["MMBENCH_TEST_MARK"],))


def _save_with_foreign_objects(path: Path, obj: dict) -> None:
    """torch.save ``obj`` with ``_TrainingConfig`` pickled as ``omegaconf_stub.dictconfig.DictConfig``
    (a module that does not exist when the file is read back)."""
    parent, module = types.ModuleType("omegaconf_stub"), types.ModuleType("omegaconf_stub.dictconfig")
    parent.dictconfig, module.DictConfig = module, _TrainingConfig
    saved = (_TrainingConfig.__module__, _TrainingConfig.__qualname__)
    _TrainingConfig.__module__, _TrainingConfig.__qualname__ = module.__name__, "DictConfig"
    sys.modules.update({parent.__name__: parent, module.__name__: module})
    try:
        torch.save(obj, path)
    finally:
        del sys.modules[module.__name__], sys.modules[parent.__name__]
        _TrainingConfig.__module__, _TrainingConfig.__qualname__ = saved


def test_uniir_checkpoint_as_uniir_saves_it_loads_without_running_its_code(tmp_path, uniir_clip_sf, images,
                                                                            monkeypatch):
    _, path, processor = uniir_clip_sf
    state = torch.load(path, weights_only=True)["model"]
    full = tmp_path / "full" / "clip_sf_large.pth"   # UniIR's save_checkpoint: model, optimizer, scheduler, config, epoch, scaler
    full.parent.mkdir()
    _save_with_foreign_objects(full, {
        "epoch": 19, "model": state, "config": _TrainingConfig(),
        "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-5, "params": [0]}]},
        "scheduler": {"last_epoch": 19}, "scaler": {"scale": 65536.0, "_growth_tracker": 0}})
    assert "omegaconf_stub.dictconfig.DictConfig" in torch.serialization.get_unsafe_globals_in_checkpoint(full)
    t_items, _, f_items = _items(images)
    plain = load(UNIIR_CLIP_SF_L, path=str(path), processor=str(processor), device="cpu")
    loaded = load(UNIIR_CLIP_SF_L, path=str(full), processor=str(processor), device="cpu")
    for items in (t_items, f_items):
        np.testing.assert_array_equal(loaded.encode(items, role="candidate", batch_size=3),
                                      plain.encode(items, role="candidate", batch_size=3))

    mark = tmp_path / "code-ran"
    monkeypatch.setenv("MMBENCH_TEST_MARK", str(mark))
    evil = tmp_path / "evil" / "clip_sf_large.pth"
    evil.parent.mkdir()
    torch.save({"model": state, "hook": _RunsCode()}, evil)
    with pytest.raises(DataError, match="weights-only unpickler.*(posix|os)"):
        load(UNIIR_CLIP_SF_L, path=str(evil), processor=str(processor), device="cpu")
    assert not mark.exists()


def test_uniir_hub_id_resolves_through_the_hub_cache_offline(tmp_path, uniir_clip_sf, images, monkeypatch):
    """``path="TIGER-Lab/UniIR"`` (the default) goes through huggingface_hub's snapshot cache: a cache
    filled on a connected machine (the repo's layout: checkpoint/CLIP_SF/clip_sf_large.pth) is used
    offline, and an empty cache gives an error that names the repo."""
    import huggingface_hub.constants as hf_constants

    _, path, processor = uniir_clip_sf
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--TIGER-Lab--UniIR"
    snapshot = repo / "snapshots" / commit / "checkpoint" / "CLIP_SF"
    snapshot.mkdir(parents=True)
    (snapshot / "clip_sf_large.pth").write_bytes(path.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert UNIIR_CLIP_SF_L.options["path"] == "TIGER-Lab/UniIR"
    encoder = load(UNIIR_CLIP_SF_L, path="TIGER-Lab/UniIR", processor=str(processor), device="cpu")
    assert encoder.checkpoint == snapshot / "clip_sf_large.pth"
    assert encoder.settings()["checkpoint_commit"] == commit
    local = load(UNIIR_CLIP_SF_L, path=str(path), processor=str(processor), device="cpu")
    t_items, _, _ = _items(images)
    np.testing.assert_array_equal(encoder.encode(t_items, role="candidate", batch_size=4),
                                  local.encode(t_items, role="candidate", batch_size=4))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(DataError, match="TIGER-Lab/UniIR: clip_sf_large.pth is not in the local Hugging Face cache"):
        load(UNIIR_CLIP_SF_L, path="TIGER-Lab/UniIR", processor=str(processor), device="cpu")


# -- UniIR BLIP_FF: BLIP ViT (timm names) + med.py BERT in a UniIR .pth ----------------------------------------

def _blip_vit_state(vision) -> dict:
    """transformers BlipVisionModel weights under BLIP's ``visual_encoder.`` (timm ViT) names, written out by hand."""
    s = vision.state_dict()
    out = {"cls_token": s["embeddings.class_embedding"], "pos_embed": s["embeddings.position_embedding"],
           "patch_embed.proj.weight": s["embeddings.patch_embedding.weight"],
           "patch_embed.proj.bias": s["embeddings.patch_embedding.bias"],
           "norm.weight": s["post_layernorm.weight"], "norm.bias": s["post_layernorm.bias"]}
    for n in range(vision.config.num_hidden_layers):
        hf, timm = f"encoder.layers.{n}.", f"blocks.{n}."
        for a, b in [("layer_norm1", "norm1"), ("layer_norm2", "norm2"), ("self_attn.qkv", "attn.qkv"),
                     ("self_attn.projection", "attn.proj"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")]:
            for p in ("weight", "bias"):
                out[f"{timm}{b}.{p}"] = s[f"{hf}{a}.{p}"]
    return out


def test_uniir_blip_ff_feature_fusion(tmp_path, bert_tokenizer, images):
    from transformers import BlipImageProcessor, BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

    torch.manual_seed(4)
    vision = BlipVisionModel(BlipVisionConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                              num_attention_heads=2, image_size=32, patch_size=16,
                                              layer_norm_eps=1e-6)).eval()
    text = BlipTextModel(BlipTextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=1, encoder_hidden_size=128,
                                        vocab_size=bert_tokenizer.vocab_size + 2, max_position_embeddings=128),
                         add_pooling_layer=True).eval()
    state = {f"visual_encoder.{k}": v for k, v in _blip_vit_state(vision).items()}
    state.update({f"text_encoder.{k}": v for k, v in text.state_dict().items()})
    # med.py's BertEmbeddings saves its position_ids buffer with the weights (transformers does not)
    state["text_encoder.embeddings.position_ids"] = torch.arange(128).expand((1, -1))
    assert "text_encoder.encoder.layer.0.crossattention.self.query.weight" in state
    assert "visual_encoder.blocks.1.attn.qkv.weight" in state
    state["visual_encoder_m.cls_token"] = torch.zeros(1)          # momentum encoder and queues are dropped
    state["query_queue"], state["temp"] = torch.zeros(64, 8), torch.tensor(0.07)
    path = tmp_path / "blip_ff_large.pth"
    torch.save({"model": state}, path)
    tok_dir = tmp_path / "tok"
    bert_tokenizer.save_pretrained(tok_dir)

    encoder = load(UNIIR_BLIP_FF_L, path=str(path), tokenizer=str(tok_dir), device="cpu", num_workers=0)
    assert UNIIR_BLIP_FF_L.fusion == "feature" and UNIIR_BLIP_FF_L.can_encode("image,text")
    t_items, v_items, f_items = _items(images)
    t = encoder.encode(t_items, role="candidate", batch_size=3)
    v = encoder.encode(v_items, role="candidate", batch_size=3)
    f = encoder.encode(f_items, role="candidate", batch_size=3)
    assert t.shape == (4, 64) and encoder.settings()["max_length"] == 100

    proc = BlipImageProcessor(size={"height": 32, "width": 32})
    pixels = proc(images=[r.load() for r in images], return_tensors="pt")["pixel_values"]
    blank = torch.zeros(4, 3, 32, 32)

    def fused(texts, px):
        tok = encoder.tokenizer(texts, padding=True, truncation=True, max_length=100, return_tensors="pt")
        with torch.inference_mode():
            img = vision(pixel_values=px).last_hidden_state
            out = text(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], encoder_hidden_states=img,
                       encoder_attention_mask=torch.ones(img.shape[:-1], dtype=torch.long), is_decoder=False)
        return l2_normalize(out.pooler_output.numpy())

    np.testing.assert_allclose(t, fused(TEXTS, blank), atol=1e-5)          # text only: zero image
    np.testing.assert_allclose(v, fused([""] * 4, pixels), atol=1e-5)      # image only: empty text
    np.testing.assert_allclose(f, fused(TEXTS, pixels), atol=1e-5)
    assert not np.allclose(f, l2_normalize(t + v), atol=1e-3)              # feature fusion, not a sum

    # texts go to the model longest first, each image with its own text; rows return in item order
    seen: list[list[int]] = []
    forward = encoder._forward

    def recording(texts, pixels):
        seen.append([len(encoder.tokenizer(x)["input_ids"]) for x in texts])
        return forward(texts, pixels)

    encoder._forward = recording
    order = [2, 0, 3, 1]
    again = encoder.encode([f_items[i] for i in order], role="candidate", batch_size=3)
    lengths = [n for batch in seen for n in batch]
    assert lengths == sorted(lengths, reverse=True) and len(set(lengths)) > 1
    np.testing.assert_allclose(again, f[order], atol=1e-5)
