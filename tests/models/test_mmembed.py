"""MM-Embed adapter on a tiny random-weight checkpoint in the official layout (tests/tiny_mmembed.py).

No hub access: the checkpoint has every one of the 700 official tensor names at tiny widths, the real
vision geometry (336 px, patch 14 → 577 LM positions per image), fp16 shards + index, and a
Llama-style tokenizer with ``<image>``/``<pad>`` after the LM vocabulary.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[1]))   # tests/: tiny_mmembed

from tiny_mmembed import LATENT, TEXT, VISION, build_tiny_mmembed, mmembed_config  # noqa: E402

from mmbench.data.types import ImageRef, Item  # noqa: E402
from mmbench.errors import MmbenchError  # noqa: E402
from mmbench.models.mmembed import encoder as enc_mod  # noqa: E402
from mmbench.models.mmembed.config import read_config  # noqa: E402
from mmbench.models.mmembed.processor import build_prompt  # noqa: E402
from mmbench.models.mmembed.weights import official_keys  # noqa: E402

INSTR = "Find me an everyday image that matches the given caption."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmembed")
    folder, nv = build_tiny_mmembed(root)
    Image.new("RGB", (60, 30), (200, 30, 30)).save(root / "wide.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / "noise.png")
    return root, folder, nv


@pytest.fixture(scope="module")
def meta():
    from mmbench.catalog import get_model

    return get_model("mm-embed")


@pytest.fixture(scope="module")
def encoder(tiny, meta):
    _, folder, nv = tiny
    return enc_mod.load_mmembed(meta, path=str(folder), retriever=str(nv), device="cpu")


def _img(root: Path, name: str) -> ImageRef:
    return ImageRef(root / name)


# --- checkpoint layout and loading ------------------------------------------------------------------

def test_tiny_checkpoint_has_the_official_700_keys(tiny):
    _, folder, _ = tiny
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    keys = official_keys()
    assert len(keys) == len(set(keys)) == 700
    assert set(index["weight_map"]) == set(keys)
    assert sorted(set(index["weight_map"].values())) == [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
    assert not any(k.startswith(("lm_head", "language_model.model.")) for k in keys)
    for f in ("config.json", "generation_config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (folder / f).is_file()


def test_loader_assigns_every_tensor(encoder, tiny):
    from safetensors import safe_open

    from mmbench.models.mmembed.weights import to_module_key

    _, folder, _ = tiny
    state = encoder.model.state_dict()
    assert len(state) == 700
    with safe_open(str(folder / "model-00002-of-00004.safetensors"), framework="pt") as f:
        for key in list(f.keys())[:50]:
            assert torch.equal(state[to_module_key(key)], f.get_tensor(key).float()), key
    assert encoder.stored_dtypes == {"float16": 700}
    assert all(not t.is_meta for t in list(encoder.model.parameters()) + list(encoder.model.buffers()))


def test_wrong_layout_is_refused(tiny, meta, tmp_path):
    import shutil

    _, folder, nv = tiny
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    index = json.loads((bad / "model.safetensors.index.json").read_text())
    index["weight_map"]["lm_head.weight"] = index["weight_map"].pop("image_newline")
    (bad / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(MmbenchError, match="key layout"):
        enc_mod.load_mmembed(meta, path=str(bad), retriever=str(nv), device="cpu")


def test_config_reads_nvembed_and_builtin_defaults(tiny):
    _, folder, nv = tiny
    cfg = read_config(folder, str(nv))
    assert cfg.text["hidden_size"] == TEXT["hidden_size"] and cfg.latent["num_latents_value"] == LATENT["num_latents_value"]
    builtin = read_config(folder)             # "nvidia/NV-Embed-v1" is not a local folder: built-in values
    assert builtin.text["rope_theta"] == 10000.0 and builtin.text["vocab_size"] == 32000
    assert builtin.latent == {"num_latents_value": 512, "num_cross_heads": 8, "cross_dim_head": 4096,
                              "latent_dim": 4096, "hidden_dim": 4096, "output_normalize": True}


# --- encoding ---------------------------------------------------------------------------------------

def test_encodes_text_image_and_image_text(encoder, tiny):
    root = tiny[0]
    items = [
        Item("t", "text", text="A red bus.", raw_text="a red bus", instruction=INSTR),
        Item("i", "image", image=_img(root, "wide.png"), instruction=INSTR),
        Item("it", "image,text", text="A red bus.", raw_text="a red bus", image=_img(root, "wide.png"), instruction=INSTR),
    ]
    q = encoder.encode(items, role="query", batch_size=3)
    assert q.shape == (3, TEXT["hidden_size"]) and q.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    # feature fusion: one sequence, not the sum of the text and image embeddings
    fused_sum = q[0] + q[1]
    fused_sum /= np.linalg.norm(fused_sum)
    assert not np.allclose(q[2], fused_sum, atol=1e-3)
    assert not np.allclose(q[2], q[0], atol=1e-3) and not np.allclose(q[2], q[1], atol=1e-3)
    # same items as candidates: no instruction, so different embeddings
    c = encoder.encode(items[:1], role="candidate", batch_size=1)
    assert not np.allclose(c[0], q[0], atol=1e-3)


def test_batching_sorting_padding_and_oom_halving(encoder, tiny, monkeypatch):
    root = tiny[0]
    items = [Item("a", "text", text="x", raw_text="a small dog", instruction=INSTR),
             Item("b", "image,text", text="x", raw_text="what is this", image=_img(root, "noise.png"), instruction="Find a caption"),
             Item("c", "text", text="x", raw_text="the quick brown fox jumps over the lazy dog in the park", instruction=None)]
    alone = np.concatenate([encoder.encode([it], role="query", batch_size=1) for it in items])
    real = encoder.model.forward
    calls = []

    def flaky(input_ids, *a, **kw):
        calls.append(input_ids.shape[0])
        if input_ids.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(input_ids, *a, **kw)

    monkeypatch.setattr(encoder.model, "forward", flaky)
    batched = encoder.encode(items, role="query", batch_size=3)
    assert calls[0] == 3 and encoder.last_halvings >= 1
    np.testing.assert_allclose(batched, alone, atol=2e-5)


@pytest.fixture(scope="module")
def encoder_w2(tiny, meta):
    """The same checkpoint with two image-decoding DataLoader workers."""
    _, folder, nv = tiny
    return enc_mod.load_mmembed(meta, path=str(folder), retriever=str(nv), device="cpu", num_workers=2)


def _image_items(root: Path) -> list[Item]:
    """Images, images+text and a text longer than an image's 577 positions: it sorts first, so the
    length batches hold 2 images then 2 while the loader hands out 3 then 1 (rows carried over)."""
    long_text = " ".join(f"zq{i}x" for i in range(200))
    return [
        Item("i1", "image", image=_img(root, "wide.png"), instruction=INSTR),
        Item("it1", "image,text", text="x", raw_text="what is this", image=_img(root, "noise.png"), instruction="Find a caption"),
        Item("t", "text", text="x", raw_text=long_text, instruction=INSTR),
        Item("it2", "image,text", text="x", raw_text="a red bus", image=_img(root, "wide.png"), instruction=INSTR),
        Item("i2", "image", image=_img(root, "noise.png"), instruction=None),
    ]


def _in_process_reference(encoder, items: list[Item], role: str, batch_size: int) -> np.ndarray:
    """The adapter's algorithm written out with images decoded and preprocessed here, in this process
    (``batch_tensors`` → ``processor.pixel_values``), batch by batch in length order."""
    from mmbench.models.base import l2_normalize
    from mmbench.models.batching import length_order

    encoded = encoder.processor.encode([encoder._prompt(it, role) for it in items])
    order = length_order([len(e.input_ids) + 576 * e.n_images for e in encoded])
    out = np.empty((len(items), encoder.embed_dim), dtype=np.float32)
    for s in range(0, len(items), batch_size):
        rows = order[s:s + batch_size]
        b = encoder.batch_tensors([encoded[r] for r in rows], [items[r].image.load() for r in rows if items[r].image is not None])
        with torch.inference_mode():
            out[rows] = encoder.model(**b, pad_token_id=encoder.processor.pad_id).float().numpy()
    return l2_normalize(out)


def test_images_are_decoded_in_workers_with_identical_embeddings(encoder, encoder_w2, tiny, monkeypatch):
    import os

    from mmbench.models import batching

    items = _image_items(tiny[0])
    encoded = encoder.processor.encode([encoder._prompt(it, "query") for it in items])
    assert len(encoded[2].input_ids) > 577                       # the long text sorts before the images
    loads, workers = [], []
    real_load, real_batches = ImageRef.load, batching.image_batches
    parent = os.getpid()
    monkeypatch.setattr(ImageRef, "load", lambda self: loads.append(os.getpid()) or real_load(self))
    monkeypatch.setattr(batching, "image_batches",
                        lambda *a, **kw: workers.append(kw.get("num_workers")) or real_batches(*a, **kw))
    in_workers = encoder_w2.encode(items, role="query", batch_size=3)
    assert workers == [2] and parent not in loads                # no image was decoded in this process
    automatic = encoder.encode(items, role="query", batch_size=3)      # the module encoder: num_workers None
    monkeypatch.setattr(encoder, "num_workers", 0)
    zero = encoder.encode(items, role="query", batch_size=3)
    assert workers == [2, None, 0] and loads.count(parent) == 4         # 0 workers: decoded here, once each
    reference = _in_process_reference(encoder, items, "query", 3)
    assert in_workers.tobytes() == zero.tobytes() == automatic.tobytes() == reference.tobytes()
    one_by_one = encoder_w2.encode(items, role="candidate", batch_size=1)
    assert one_by_one.tobytes() == _in_process_reference(encoder, items, "candidate", 1).tobytes()


def test_settings_count_oom_halvings_and_report_workers(encoder_w2, encoder, tiny, monkeypatch):
    s = encoder_w2.settings()
    assert s["oom_halvings"] == 0 and s["image_workers"] == 2 and "DataLoader" in s["image_decoding"]
    assert encoder.settings()["image_workers"] == "auto"
    items = [it for it in _image_items(tiny[0]) if it.image is not None]
    alone = encoder_w2.encode(items, role="query", batch_size=1)
    real = encoder_w2.model.forward

    def flaky(input_ids, *a, **kw):
        if input_ids.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(input_ids, *a, **kw)

    monkeypatch.setattr(encoder_w2.model, "forward", flaky)
    halved = encoder_w2.encode(items, role="query", batch_size=4)
    assert encoder_w2.last_halvings == 2                         # 4 → 2 (fails: → 1 + 1) + 2 (split at the limit, 1)
    assert encoder_w2.settings()["oom_halvings"] == 2
    assert halved.tobytes() == alone.tobytes()                   # every half got the pixels of its own items
    encoder_w2.encode(items[:2], role="query", batch_size=2)
    assert encoder_w2.settings()["oom_halvings"] == 3            # counted over all encode() calls
    json.dumps(encoder_w2.settings())


# --- the parts that decide scores ---------------------------------------------------------------------

def test_prompts_follow_the_original_template():
    assert build_prompt("a cat", has_image=False, instruction="Find it.", is_query=True) == "Instruct: Find it.\nQuery: a cat"
    assert build_prompt("a cat", has_image=True, instruction="Find it.", is_query=True) == "Instruct: Find it.\nQuery: <image>\na cat"
    assert build_prompt(None, has_image=True, instruction=None, is_query=True) == "Query: <image>\n"
    assert build_prompt("a cat", has_image=True, instruction="Find it.", is_query=False) == "<image>\na cat"
    assert build_prompt("a cat", has_image=False, instruction=None, is_query=False) == "a cat"


def test_instruction_mask_excludes_bos_instruction_and_newline(encoder):
    proc = encoder.processor
    tok = proc.tokenizer
    prompt = build_prompt("a red bus", has_image=False, instruction=INSTR, is_query=True)
    (e,) = proc.encode([prompt])
    instr_ids = tok(f"Instruct: {INSTR}", add_special_tokens=False)["input_ids"]
    n = e.instruction_length
    assert n == len(instr_ids) + 2
    assert e.input_ids[0] == proc.bos_id and e.input_ids[-1] == proc.eos_id
    assert e.input_ids[1:n - 1] == instr_ids
    assert tok.convert_ids_to_tokens(e.input_ids[n - 1]) == "<0x0A>"
    assert tok.decode(e.input_ids[n:-1]).startswith("Query: a red bus")
    batch = encoder.batch_tensors([e], [])
    pool, attn = batch["pool_mask"][0], batch["attention_mask"][0]
    assert pool[:n].sum() == 0 and torch.equal(pool[n:], attn[n:])
    # candidates and instruction-less queries pool over everything that is not padding
    for p in ("a red bus", build_prompt("a red bus", has_image=False, instruction=None, is_query=True)):
        assert proc.encode([p])[0].instruction_length == 0


def test_pooling_uses_the_instruction_mask(encoder):
    """The embedding = latent attention on the LM states, masked mean over the pool mask (not the
    attention mask), L2 — checked against an independent formula written from mmembed.md §4.3."""
    m = encoder.model
    (e,) = encoder.processor.encode([build_prompt("a red bus", has_image=False, instruction=INSTR, is_query=True)])
    b = encoder.batch_tensors([e], [])
    with torch.no_grad():
        emb = m(**b, pad_token_id=encoder.processor.pad_id)[0]
        h = m.language_model.encode(m.language_model.embed_tokens(m.remap_ids(b["input_ids"], encoder.processor.pad_id)),
                                    b["attention_mask"])
        sd = {k: v.float() for k, v in m.latent_attention_model.state_dict().items()}
        heads, dh = LATENT["num_cross_heads"], LATENT["cross_dim_head"]
        x = F.layer_norm(h, h.shape[-1:], sd["cross_attend_blocks.0.norm.weight"], sd["cross_attend_blocks.0.norm.bias"])
        lat = F.layer_norm(sd["latents"], sd["latents"].shape[-1:], sd["cross_attend_blocks.0.norm_context.weight"],
                           sd["cross_attend_blocks.0.norm_context.bias"])
        q = (x @ sd["cross_attend_blocks.0.fn.to_q.weight"].T).view(1, -1, heads, dh).transpose(1, 2)
        kv = lat @ sd["cross_attend_blocks.0.fn.to_kv.weight"].T
        k, v = kv[:, :heads * dh].view(-1, heads, dh).transpose(0, 1), kv[:, heads * dh:].view(-1, heads, dh).transpose(0, 1)
        att = torch.softmax(q @ k.transpose(-1, -2) / dh ** 0.5, dim=-1) @ v
        h = h + att.transpose(1, 2).reshape(1, -1, heads * dh) @ sd["cross_attend_blocks.0.fn.to_out.weight"].T
        y = F.layer_norm(h, h.shape[-1:], sd["cross_attend_blocks.1.norm.weight"], sd["cross_attend_blocks.1.norm.bias"])
        y = y @ sd["cross_attend_blocks.1.fn.net.0.weight"].T + sd["cross_attend_blocks.1.fn.net.0.bias"]
        val, gate = y.chunk(2, dim=-1)
        h = h + (val * F.gelu(gate)) @ sd["cross_attend_blocks.1.fn.net.2.weight"].T + sd["cross_attend_blocks.1.fn.net.2.bias"]
        pool = b["pool_mask"][0].bool()
        expected = F.normalize(h[0, pool].mean(0), dim=-1)
        unmasked = F.normalize(h[0, b["attention_mask"][0].bool()].mean(0), dim=-1)
    torch.testing.assert_close(emb, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(emb, unmasked, atol=1e-4)


def test_language_model_is_bidirectional(encoder):
    lm = encoder.model.language_model
    ids = torch.tensor([[1, 300, 301, 302, 2], [1, 300, 301, 303, 2]])
    with torch.no_grad():
        h = lm.encode(lm.embed_tokens(ids), torch.ones_like(ids))
    assert not torch.allclose(h[0, 0], h[1, 0], atol=1e-6)   # the first token sees a later one
    # padding keys are masked: a right-padded row equals the unpadded row
    padded = torch.tensor([[1, 300, 301, 2, 2, 2]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        hp = lm.encode(lm.embed_tokens(padded), mask)
        hu = lm.encode(lm.embed_tokens(padded[:, :4]), mask[:, :4])
    torch.testing.assert_close(hp[:, :4], hu, atol=1e-5, rtol=1e-5)
    assert all(layer.self_attn.is_causal is False for layer in lm.layers)
    assert lm.config.sliding_window is None


def test_token_id_remapping(encoder):
    m, proc = encoder.model, encoder.processor
    img, pad = m.cfg.image_token_index, proc.pad_id
    vocab = m.language_model.embed_tokens.weight.shape[0]
    assert img == vocab and pad == vocab + 1                   # like 32000/32001 over a 32000-row matrix
    ids = torch.tensor([[proc.bos_id, img, 300, proc.eos_id, pad]])
    out = m.remap_ids(ids, pad)
    assert out.tolist() == [[proc.bos_id, 0, 300, proc.eos_id, proc.eos_id]]
    assert int(ids[0, 1]) == img                                # the input is not modified in place


def test_image_is_one_global_view_of_577_tokens(encoder, tiny):
    root = tiny[0]
    real = mmembed_config({**VISION, "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16})
    real_cfg_dir = root / "real-config"
    real_cfg_dir.mkdir(exist_ok=True)
    (real_cfg_dir / "config.json").write_text(json.dumps({**real, "image_token_index": 32000}))
    assert read_config(real_cfg_dir).tokens_per_image == 577
    proc, m = encoder.processor, encoder.model
    wide = Image.open(root / "wide.png").convert("RGB")
    px = proc.pixel_values([wide])
    assert px.shape == (1, 3, 336, 336)                          # squashed, not cropped or tiled
    expected = np.asarray(wide.resize((336, 336), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    expected = (expected - np.array(proc.image_config["image_mean"], dtype=np.float32)) / np.array(proc.image_config["image_std"], dtype=np.float32)
    np.testing.assert_allclose(px[0].transpose(1, 2, 0), expected, atol=1e-5)
    pixels = torch.from_numpy(px)
    with torch.no_grad():
        feats = m.image_features(pixels)
        assert feats.shape == (1, 577, TEXT["hidden_size"])
        torch.testing.assert_close(feats[0, -1], m.image_newline)
        # layer -2 of the CLIP tower, CLS dropped, through the projector (reference: transformers' hidden_states)
        hs = m.vision_tower(pixel_values=pixels, output_hidden_states=True).hidden_states
        torch.testing.assert_close(feats[:, :-1], m.multi_modal_projector(hs[-2][:, 1:]), atol=1e-5, rtol=1e-5)
    (e,) = proc.encode([build_prompt("a red bus", has_image=True, instruction=INSTR, is_query=True)])
    b = encoder.batch_tensors([e], [wide])
    with torch.no_grad():
        emb, attn, pool = m.merge(b["input_ids"], b["attention_mask"], b["pool_mask"], b["pixel_values"], proc.pad_id)
    assert emb.shape[1] == len(e.input_ids) - 1 + 577
    where = e.input_ids.index(m.cfg.image_token_index)
    torch.testing.assert_close(emb[0, where:where + 577], feats[0])
    assert pool[0, :e.instruction_length].sum() == 0 and pool[0, e.instruction_length:].all()


def test_settings_record_score_relevant_choices(encoder):
    s = encoder.settings()
    assert s["padding_side"] == "right" and s["max_length"] == 4096
    assert s["resample"] == "BICUBIC" and "336x336" in s["image_view"] and s["tokens_per_image"] == 577
    assert s["dtype"] == "float32" and s["autocast"] == "off" and s["normalize"] is True
    json.dumps(s)


# --- remote code, catalog, CLI ---------------------------------------------------------------------------

def test_the_checkpoints_own_code_is_never_run(meta):
    """mm-embed's remote code needs transformers 4.42-4.43 (mmbench needs 4.45+): it is not offered."""
    from typer.testing import CliRunner

    from mmbench.cli import app
    from mmbench.config import RunConfig
    from mmbench.config import parse_model_options
    from mmbench.models.loading import with_model_options

    assert "trust_remote_code" not in meta.options
    assert "trust_remote_code" not in enc_mod.load_mmembed.__code__.co_varnames
    assert not hasattr(RunConfig(), "trust_remote_code")
    out = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "--trust-remote-code" not in out.output
    with pytest.raises(MmbenchError, match="never runs a checkpoint's own code"):
        with_model_options(meta, parse_model_options(["trust_remote_code=true"]))


def test_catalog_metadata(meta, tiny):
    from mmbench.catalog import get_model

    assert meta.embed_dim == 4096 and meta.fusion == "feature" and meta.uses_instructions
    assert meta.modalities == ("text", "image") and meta.license == "CC-BY-NC-4.0"
    assert meta.options == {"path": "nvidia/MM-Embed", "dtype": "auto"}
    assert meta.can_encode("image,text") and meta.can_encode("text") and meta.can_encode("image")
    dyn = get_model(f"mm-embed:{tiny[1]}")
    assert dyn.revision.startswith("local:") and dyn.options["path"] == str(tiny[1])


def test_mteb_instructions_match_the_reference():
    from mmbench.models.mmembed.instructions import mteb_instruction

    assert mteb_instruction("SciFact") == "Given a scientific claim, retrieve documents that support or refute the claim"
    assert mteb_instruction("CQADupstackAndroidRetrieval").startswith("Given a question, retrieve detailed question")
    assert mteb_instruction("NoSuchTask") is None


def test_hub_id_at_the_pinned_revision_loads_from_the_hub_cache_offline(tiny, meta, tmp_path, monkeypatch):
    """``nvidia/MM-Embed`` at the catalog's pinned commit resolves through huggingface_hub's cache
    (filled on a connected machine); another revision is not silently substituted."""
    import shutil

    import huggingface_hub.constants as hf_constants

    root, folder, nv = tiny
    snapshot = tmp_path / "hub" / "models--nvidia--MM-Embed" / "snapshots" / enc_mod.HUB_REVISION
    shutil.copytree(folder, snapshot)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert meta.options["path"] == enc_mod.HUB_ID == "nvidia/MM-Embed"
    assert meta.revision.endswith(enc_mod.HUB_REVISION)
    assert enc_mod.resolve_folder("nvidia/MM-Embed", enc_mod.HUB_REVISION) == snapshot
    from_hub = enc_mod.load_mmembed(meta, path="nvidia/MM-Embed", retriever=str(nv), device="cpu")
    local = enc_mod.load_mmembed(meta, path=str(folder), retriever=str(nv), device="cpu")
    items = [Item("q", "text", "a red square", instruction=INSTR, raw_text="a red square")]
    np.testing.assert_array_equal(from_hub.encode(items, role="query", batch_size=2),
                                  local.encode(items, role="query", batch_size=2))
    with pytest.raises(MmbenchError, match="nvidia/MM-Embed@" + "f" * 40):
        enc_mod.resolve_folder("nvidia/MM-Embed", "f" * 40)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_weights_encode_close_to_fp32(tiny, meta, encoder, dtype):
    """The bf16 / fp16 path that CUDA takes by default (weights in half precision, pixels and
    masks cast to match, pooling and normalisation back in float32), run here on the CPU."""
    root, folder, nv = tiny
    half = enc_mod.load_mmembed(meta, path=str(folder), retriever=str(nv), device="cpu", dtype=dtype, num_workers=0)
    assert {p.dtype for p in half.model.parameters()} == {enc_mod.DTYPES[dtype]}
    items = [Item("t", "text", "a red square on white", instruction=INSTR, raw_text="a red square on white"),
             Item("i", "image", image=_img(root, "wide.png")),
             Item("f", "image,text", "noise", image=_img(root, "noise.png"))]
    got = half.encode(items, role="query", batch_size=2)
    ref = encoder.encode(items, role="query", batch_size=2)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosine = (got * ref).sum(axis=1)
    assert cosine.min() > 0.98, cosine
