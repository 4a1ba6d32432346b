"""The MM-Embed module tree, natively on current transformers (no remote code).

``MMEmbedModel`` has the checkpoint's top-level names (``vision_tower``, ``multi_modal_projector``,
``image_newline``, ``language_model``, ``latent_attention_model``) so the official shards load by
key name (:mod:`mmbench.models.mmembed.weights` maps the one difference: transformers 5's
``CLIPVisionModel`` has no ``vision_model.`` level).

* vision: transformers ``CLIPVisionModel``; features = hidden state ``vision_feature_layer`` (−2,
  the input of the last layer, which is therefore never run), CLS dropped → 576 × 1024;
* projector: LLaVA-NeXT's ``linear_1`` → GELU (erf) → ``linear_2``;
* one global view per image: 576 projected features + ``image_newline`` = 577 LM positions;
* LM: NV-Embed's bidirectional Mistral = transformers ``MistralModel`` with every attention layer's
  ``is_causal`` off and an explicit 4-D *padding-only* mask (a 4-D mask is passed through unchanged
  by ``masking_utils``; SDPA then runs with that mask and ``is_causal=False``); no sliding window;
* pooler: NV-Embed's latent attention (token states attend to the learned latents), GEGLU
  feed-forward, masked mean, L2 normalisation (mmembed.md §4.3 step 7).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmbench.models.mmembed.config import MMEmbedConfig


def mistral_config(cfg: MMEmbedConfig):
    from transformers import MistralConfig

    t = cfg.text
    head_dim = t.get("head_dim") or t["hidden_size"] // t["num_attention_heads"]
    config = MistralConfig(
        vocab_size=t["vocab_size"], hidden_size=t["hidden_size"], intermediate_size=t["intermediate_size"],
        num_hidden_layers=t["num_hidden_layers"], num_attention_heads=t["num_attention_heads"],
        num_key_value_heads=t["num_key_value_heads"], head_dim=head_dim, hidden_act=t["hidden_act"],
        max_position_embeddings=t["max_position_embeddings"], rms_norm_eps=t["rms_norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": float(t["rope_theta"])},
        sliding_window=None, bos_token_id=t["bos_token_id"], eos_token_id=t["eos_token_id"],
        pad_token_id=None, tie_word_embeddings=False, use_cache=False,
    )
    config._attn_implementation = "sdpa"
    return config


def clip_vision_config(cfg: MMEmbedConfig):
    from transformers import CLIPVisionConfig

    v = cfg.vision
    config = CLIPVisionConfig(
        hidden_size=v["hidden_size"], intermediate_size=v["intermediate_size"],
        num_hidden_layers=v["num_hidden_layers"], num_attention_heads=v["num_attention_heads"],
        image_size=v["image_size"], patch_size=v["patch_size"], num_channels=v.get("num_channels", 3),
        hidden_act=v["hidden_act"], layer_norm_eps=v["layer_norm_eps"],
        projection_dim=v.get("projection_dim", 768),
    )
    config._attn_implementation = "sdpa"
    return config


def padding_mask_4d(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, L] 1/0 → additive [B, 1, L, L]: 0 where the key is a real token, dtype-min where it is padding.
    Non-causal: every position sees every real token (NV-Embed's ``_prepare_4d_attention_mask``)."""
    b, n = attention_mask.shape
    keep = attention_mask[:, None, None, :].to(torch.bool).expand(b, 1, n, n)
    out = torch.zeros((b, 1, n, n), dtype=dtype, device=attention_mask.device)
    return out.masked_fill(~keep, torch.finfo(dtype).min)


def _bidirectional_mistral_class():
    from transformers import MistralModel

    class BidirectionalMistralModel(MistralModel):
        """NV-Embed's ``BidirectionalMistralModel``: causal masking off, padding mask only."""

        def __init__(self, config):
            config.sliding_window = None
            super().__init__(config)
            for layer in self.layers:
                layer.self_attn.is_causal = False

        def encode(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                   position_ids: torch.Tensor | None = None) -> torch.Tensor:
            mask = padding_mask_4d(attention_mask, inputs_embeds.dtype)
            out = self.forward(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=position_ids,
                               use_cache=False)
            return out.last_hidden_state

    return BidirectionalMistralModel


def bidirectional_mistral(config):
    return _bidirectional_mistral_class()(config)


class MultiModalProjector(nn.Module):
    """LLaVA-NeXT's projector: ``linear_1`` → GELU → ``linear_2`` (both with bias)."""

    def __init__(self, vision_dim: int, text_dim: int, act: str = "gelu"):
        super().__init__()
        from transformers.activations import ACT2FN

        self.linear_1 = nn.Linear(vision_dim, text_dim, bias=True)
        self.act = ACT2FN[act]
        self.linear_2 = nn.Linear(text_dim, text_dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module, context_dim: int | None = None):
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(context_dim) if context_dim is not None else None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(x)
        if self.norm_context is not None:
            return self.fn(x, context=self.norm_context(context))
        return self.fn(x)


class GEGLU(nn.Module):
    """``value, gate = x.chunk(2)``; ``value * gelu(gate)`` (first half is the value)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gates = x.chunk(2, dim=-1)
        return x * F.gelu(gates)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim * mult * 2), GEGLU(), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossAttention(nn.Module):
    """Token states (queries) attend to the latents (keys/values); ``heads`` × ``dim_head``, no mask,
    SDPA's default scale 1/√dim_head."""

    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, query_dim, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h = self.heads
        q = self.to_q(x)
        k, v = self.to_kv(context).chunk(2, dim=-1)
        b, n, _ = q.shape
        q, k, v = (t.reshape(t.shape[0], t.shape[1], h, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class LatentAttentionModel(nn.Module):
    """NV-Embed's latent-attention pooler (512 latents, 8 heads × 4096 in the real checkpoint)."""

    def __init__(self, latent: dict):
        super().__init__()
        dim, latent_dim = latent["hidden_dim"], latent["latent_dim"]
        self.cross_attend_blocks = nn.ModuleList([
            PreNorm(latent_dim, CrossAttention(latent_dim, dim, latent["num_cross_heads"], latent["cross_dim_head"]),
                    context_dim=dim),
            PreNorm(latent_dim, FeedForward(latent_dim)),
        ])
        self.output_normalize = bool(latent["output_normalize"])
        self.latents = nn.Parameter(torch.randn(latent["num_latents_value"], latent_dim))

    def forward(self, hiddens: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
        cross_attn, cross_ff = self.cross_attend_blocks
        latents = self.latents.unsqueeze(0).expand(hiddens.shape[0], -1, -1)
        hiddens = cross_attn(hiddens, context=latents) + hiddens
        hiddens = cross_ff(hiddens) + hiddens
        return masked_mean(hiddens, pool_mask, normalize=self.output_normalize)


def masked_mean(hiddens: torch.Tensor, mask: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    """sum(h · mask) / sum(mask) over the sequence, in float32; then L2-normalised."""
    m = mask.unsqueeze(-1).float()
    pooled = (hiddens.float() * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=-1) if normalize else pooled


class MMEmbedModel(nn.Module):
    def __init__(self, cfg: MMEmbedConfig):
        super().__init__()
        from transformers import CLIPVisionModel

        self.cfg = cfg
        self.vision_tower = CLIPVisionModel(clip_vision_config(cfg))
        text_dim = cfg.text["hidden_size"]
        self.multi_modal_projector = MultiModalProjector(cfg.vision["hidden_size"], text_dim, cfg.projector_hidden_act)
        self.image_newline = nn.Parameter(torch.zeros(text_dim))
        self.language_model = bidirectional_mistral(mistral_config(cfg))
        self.latent_attention_model = LatentAttentionModel(cfg.latent)

    @property
    def dtype(self) -> torch.dtype:
        return self.image_newline.dtype

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[n, 3, H, W] → [n, tokens_per_image, D]: layer ``vision_feature_layer`` (hidden_states[-2] =
        after all but the last layer), CLS dropped, projected, ``image_newline`` appended."""
        tower = self.vision_tower
        layers = tower.encoder.layers
        n_run = len(layers) + 1 + self.cfg.vision_feature_layer if self.cfg.vision_feature_layer < 0 \
            else self.cfg.vision_feature_layer
        h = tower.embeddings(pixel_values.to(self.dtype))
        h = tower.pre_layrnorm(h)
        for layer in layers[:n_run]:
            h = layer(h, attention_mask=None)
        if self.cfg.vision_feature_select_strategy == "default":
            h = h[:, 1:]
        feats = self.multi_modal_projector(h)
        newline = self.image_newline.to(feats.dtype)[None, None].expand(feats.shape[0], 1, -1)
        return torch.cat([feats, newline], dim=1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor,
                pixel_values: torch.Tensor | None = None, pad_token_id: int | None = None) -> torch.Tensor:
        """Unit embeddings [B, D] of right-padded token rows (each ``<image>`` id is one image, in order)."""
        embeds, attn, pool = self.merge(input_ids, attention_mask, pool_mask, pixel_values, pad_token_id)
        position_ids = (attn.long().cumsum(-1) - 1).clamp(min=0)
        hidden = self.language_model.encode(embeds, attn, position_ids)
        return self.latent_attention_model(hidden, pool)

    def remap_ids(self, input_ids: torch.Tensor, pad_token_id: int | None) -> torch.Tensor:
        """``<image>`` (32000) → 0 and ``<pad>`` (32001) → EOS (2): the LM has only 32000 rows."""
        ids = input_ids.clone()
        ids[ids == self.cfg.image_token_index] = 0
        if pad_token_id is not None:
            ids[ids == pad_token_id] = self.cfg.text["eos_token_id"]
        return ids

    def merge(self, input_ids, attention_mask, pool_mask, pixel_values=None, pad_token_id=None):
        """Token embeddings with each ``<image>`` replaced in place by its image's vectors; masks expanded
        alongside (an image position takes the mask values of its ``<image>`` token); right padding."""
        embeds = self.language_model.embed_tokens(self.remap_ids(input_ids, pad_token_id))
        is_image = input_ids == self.cfg.image_token_index
        n_images = int(is_image.sum())
        if n_images == 0:
            return embeds, attention_mask, pool_mask
        if pixel_values is None or pixel_values.shape[0] != n_images:
            raise ValueError(f"{n_images} <image> tokens but {0 if pixel_values is None else pixel_values.shape[0]} images")
        feats = self.image_features(pixel_values).to(embeds.dtype)
        per_image = feats.shape[1]
        rows_e, rows_a, rows_p = [], [], []
        k = 0
        for b in range(input_ids.shape[0]):
            pos = torch.nonzero(is_image[b]).flatten().tolist()
            pe, pa, pp, start = [], [], [], 0
            for p in pos:
                pe += [embeds[b, start:p], feats[k]]
                pa += [attention_mask[b, start:p], attention_mask[b, p:p + 1].expand(per_image)]
                pp += [pool_mask[b, start:p], pool_mask[b, p:p + 1].expand(per_image)]
                start, k = p + 1, k + 1
            pe.append(embeds[b, start:])
            pa.append(attention_mask[b, start:])
            pp.append(pool_mask[b, start:])
            rows_e.append(torch.cat(pe))
            rows_a.append(torch.cat(pa))
            rows_p.append(torch.cat(pp))
        # drop each row's own right padding, then re-pad every row to the longest merged length
        lengths = [int(a.sum()) for a in rows_a]
        longest = max(lengths)
        out_e = embeds.new_zeros((len(rows_e), longest, embeds.shape[-1]))
        out_a = attention_mask.new_zeros((len(rows_e), longest))
        out_p = pool_mask.new_zeros((len(rows_e), longest))
        for b, n in enumerate(lengths):
            out_e[b, :n] = rows_e[b][:n]
            out_a[b, :n] = rows_a[b][:n]
            out_p[b, :n] = rows_p[b][:n]
        return out_e, out_a, out_p
