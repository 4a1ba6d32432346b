"""A tiny CLIP checkpoint with the real architecture and random weights (seed 0): 2 layers of width 32,
32 px images, MiniLM's BERT tokenizer (offline), for the tests that need a CLIP (models, distributed)."""

from __future__ import annotations

from pathlib import Path


def build_tiny_clip(folder: Path) -> Path:
    """A CLIP with 2 layers of width 32 and 32 px images, random weights from seed 0, saved with
    MiniLM's BERT tokenizer (offline)."""
    import torch
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    from mmbench.models.minilm import package_model_path

    if (folder / "config.json").exists():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(package_model_path(), local_files_only=True)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(small, vocab_size=tokenizer.vocab_size, max_position_embeddings=77,
                         bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(small, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder
