"""The parameter counts that `mmbench list models` shows, recounted from transformers' architectures.

No weights exist offline, so each count is checked by building the real architecture at the
checkpoint's published config on the meta device (no memory, no weights) and, where the installed
mteb package describes the same checkpoint, against mteb's own ModelMeta.n_parameters.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mmbench.catalog import get_model  # noqa: E402

VIT_L14 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14)
SO400M = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16)

CHECKPOINTS = {   # our name: (transformers class, config kwargs of the checkpoint's config.json, mteb name)
    "clip-vit-b-32": ("CLIPModel", {}, "openai/clip-vit-base-patch32"),
    "clip-vit-l-14": ("CLIPModel", dict(projection_dim=768, vision_config=VIT_L14,
                                        text_config=dict(hidden_size=768, intermediate_size=3072,
                                                         num_attention_heads=12)), "openai/clip-vit-large-patch14"),
    "siglip-base-patch16-224": ("SiglipModel", {}, "google/siglip-base-patch16-224"),
    "siglip-so400m-patch14-384": ("SiglipModel", dict(
        text_config=dict(SO400M, max_position_embeddings=64, vocab_size=32000),
        vision_config=dict(SO400M, patch_size=14, image_size=384)), "google/siglip-so400m-patch14-384"),
    "blip-itm-base-coco": ("BlipForImageTextRetrieval", {}, "Salesforce/blip-itm-base-coco"),
    "blip-itm-large-coco": ("BlipForImageTextRetrieval", dict(vision_config=dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=384, patch_size=16)), "Salesforce/blip-itm-large-coco"),
}


def meta_device_count(cls_name: str, config_kwargs: dict) -> int:
    cls = getattr(transformers, cls_name)
    config = cls.config_class(**config_kwargs)
    with torch.device("meta"):
        model = cls(config)
    return sum(p.numel() for p in model.parameters())


def mteb_count(name: str) -> int | None:
    try:
        import mteb

        return mteb.get_model_meta(name).n_parameters
    except Exception:   # not installed, or mteb does not know the checkpoint
        return None


@pytest.mark.parametrize("ours", sorted(CHECKPOINTS))
def test_catalog_parameter_count_equals_the_architecture(ours: str) -> None:
    cls_name, kwargs, mteb_name = CHECKPOINTS[ours]
    listed = get_model(ours).n_parameters
    assert listed == meta_device_count(cls_name, kwargs)
    from_mteb = mteb_count(mteb_name)
    if from_mteb is not None:
        assert listed == from_mteb
