"""MM-Embed (nvidia/MM-Embed), natively on current transformers.

* :mod:`.config` — ``config.json`` + NV-Embed-v1's LM/pooler settings;
* :mod:`.modules` — CLIP vision tower, LLaVA-NeXT projector, bidirectional Mistral, latent attention;
* :mod:`.weights` — the official 700-key layout and the safetensors loader;
* :mod:`.processor` — prompts, instruction lengths, tokenizer, 336-px global view;
* :mod:`.instructions` — MTEB instructions;
* :mod:`.encoder` — the adapter (``load_mmembed``, the registry loader).

Importing this package imports neither torch nor transformers.
"""
