"""A tiny OpenVLA-OFT checkpoint in the layout OFT releases its LIBERO weights in (OpenVLA's
Prismatic `OpenVLAForActionPrediction` directory + OFT's head files), with random weights and a
LoRA adapter over every Linear of the VLA, the vision tower included, as OFT fine-tunes it.
Key names follow OpenVLA's public `prismatic/extern/hf/modeling_prismatic.py` and OFT's
`vla-scripts/finetune.py`; `OPENVLA_KEYS` lists some, for the tests to check by name."""
from __future__ import annotations

import json
import pathlib

import peft
import torch
from torch import nn

from worldenv.models import checkpoint, layout, oft_heads, oft_policy, prismatic, text

STEP, UNNORM_KEY, SIDE, K, A, P = 150000, "libero_spatial_no_noops", 28, 8, 7, 8
TIMM_IDS = ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"]
# DINOv2-like (class token, 4 registers, LayerScale) and SigLIP-like (attention-pool head), narrow.
SHAPES = [prismatic.ViTShape(7, 16, 3, 2, 64, 16, True, 4, True, False),
          prismatic.ViTShape(7, 24, 3, 2, 48, 16, False, 0, False, True)]
OPENVLA_KEYS = [
    "vision_backbone.featurizer.cls_token", "vision_backbone.featurizer.reg_token",
    "vision_backbone.featurizer.pos_embed", "vision_backbone.featurizer.patch_embed.proj.weight",
    "vision_backbone.featurizer.blocks.0.attn.qkv.weight", "vision_backbone.featurizer.blocks.0.ls1.scale_factor",
    "vision_backbone.featurizer.blocks.2.mlp.fc2.bias", "vision_backbone.featurizer.norm.weight",
    "vision_backbone.fused_featurizer.blocks.1.attn.proj.weight", "vision_backbone.fused_featurizer.attn_pool.latent",
    "vision_backbone.fused_featurizer.attn_pool.kv.weight", "vision_backbone.fused_featurizer.attn_pool.mlp.fc1.weight",
    "projector.fc1.weight", "projector.fc2.weight", "projector.fc3.bias",
    "language_model.model.embed_tokens.weight", "language_model.model.layers.1.self_attn.q_proj.weight",
    "language_model.model.norm.weight", "language_model.lm_head.weight"]


def _config(vocab: int) -> dict:
    text_config = dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512, vocab_size=vocab)
    return {"model_type": "openvla", "architectures": ["OpenVLAForActionPrediction"],
            "auto_map": {"AutoConfig": "configuration_prismatic.OpenVLAConfig",
                         "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction"},
            "vision_backbone_id": "dinosiglip-vit-so-224px", "llm_backbone_id": "llama2-7b-pure",
            "arch_specifier": "no-align+fused-gelu-mlp", "use_fused_vision_backbone": True,
            "image_resize_strategy": "resize-naive", "timm_model_ids": TIMM_IDS,
            "timm_override_act_layers": [None, None], "image_sizes": [SIDE, SIDE],
            "hf_llm_id": "meta-llama/Llama-2-7b-hf",
            "llm_max_length": 2048, "pad_token_id": 0, "pad_to_multiple_of": 64, "output_projector_states": False,
            "n_action_bins": 256, "norm_stats": None, "text_config": text_config, "torch_dtype": "float32"}


def _preprocessor() -> dict:
    return {"image_processor_type": "PrismaticImageProcessor",
            "auto_map": {"AutoImageProcessor": "processing_prismatic.PrismaticImageProcessor"},
            "image_resize_strategy": "resize-naive", "input_sizes": [[3, SIDE, SIDE], [3, SIDE, SIDE]],
            "interpolations": ["bicubic", "bicubic"], "means": [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]],
            "stds": [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]], "tvf_do_letterbox": False,
            "use_fused_vision_backbone": True}


def _statistics() -> dict:
    action = {"q01": [-0.5] * A, "q99": [0.7] * A, "mask": [True] * (A - 1) + [False], "mean": [0.0] * A}
    proprio = {"q01": [-0.2] * P, "q99": [0.3] * P, "mean": [0.0] * P}
    return {UNNORM_KEY: {"action": action, "proprio": proprio, "num_transitions": 100, "num_trajectories": 2}}


def _randomise(module: nn.Module, std: float = 0.2) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, std)


def write(path: pathlib.Path, seed: int = 0, lora_rank: int = 4) -> pathlib.Path:
    """The directory at `path`, OFT's files only (no worldenv.json, no scale head)."""
    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = text.word_tokenizer(oft_policy.WORDS)
    tokenizer.save_pretrained(path)
    vla = prismatic.PrismaticVLA(_config(len(tokenizer)), SHAPES)
    _randomise(vla, 0.1)
    vla.config.raw["norm_stats"] = _statistics()
    (path / "config.json").write_text(json.dumps(vla.config.raw, indent=2))
    checkpoint.save_weights(vla.state_dict(), path, max_shard_bytes=200_000)        # shards + index, as released
    (path / "preprocessor_config.json").write_text(json.dumps(_preprocessor(), indent=2))
    (path / "dataset_statistics.json").write_text(json.dumps(_statistics(), indent=2))
    for stem, head in (("action_head", oft_heads.L1RegressionActionHead(32, A, K)),
                       ("proprio_projector", oft_heads.ProprioProjector(32, P))):
        _randomise(head)
        torch.save({f"module.{k}": v for k, v in head.state_dict().items()}, path / f"{stem}--{STEP}_checkpoint.pt")
    _write_lora(vla, path / "lora_adapter", lora_rank)
    return path


def _write_lora(vla: nn.Module, folder: pathlib.Path, rank: int) -> None:
    """OFT's adapter: LoRA on every Linear but the LM head ("all-linear"), saved by peft."""
    names = sorted({n.rsplit(".", 1)[-1] for n, m in vla.named_modules() if isinstance(m, nn.Linear)} - {"lm_head"})
    config = peft.LoraConfig(r=rank, lora_alpha=min(rank, 16), lora_dropout=0.0, target_modules=names,
                             init_lora_weights="gaussian")
    peft.inject_adapter_in_model(config, vla, adapter_name="default")
    with torch.no_grad():
        for n, p in vla.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)            # a trained adapter: B is not zero
    folder.mkdir()
    config.save_pretrained(str(folder))
    state = peft.get_peft_model_state_dict(vla, adapter_name="default")
    layout.save_tensors({f"base_model.model.{k}": v for k, v in state.items()}, folder / "adapter_model.safetensors")
