"""OpenVLA's Prismatic backbone, read from the Hugging Face directory OpenVLA and OpenVLA-OFT
release (`OpenVLAForActionPrediction`): a fused DINOv2 + SigLIP vision backbone, an MLP
projector and a Llama-2 LM, with the key names of OpenVLA's `modeling_prismatic.py`:

    config.json                         OpenVLAConfig: model_type "openvla", timm_model_ids, image_sizes,
                                          use_fused_vision_backbone, text_config (a LlamaConfig), norm_stats
    model.safetensors (or shards + index)
      vision_backbone.featurizer.*        timm VisionTransformer keys (DINOv2 ViT-L/14 + 4 registers):
                                          cls_token, reg_token, pos_embed, patch_embed.proj.*,
                                          blocks.<i>.{norm1,attn.qkv,attn.proj,ls1.scale_factor,norm2,
                                          mlp.fc1,mlp.fc2,ls2.scale_factor}.*, norm.*
      vision_backbone.fused_featurizer.*  the same for SigLIP so400m/14 (no class token, no LayerScale)
                                          plus its attention-pool head attn_pool.{latent,q,kv,proj,norm,mlp.*}
      projector.fc1.*, fc2.*, fc3.*       fused GELU MLP: vision (Dv) -> 4 Dv -> D -> D
      language_model.model.*, language_model.lm_head.weight     LlamaForCausalLM
    preprocessor_config.json            PrismaticImageProcessor: input_sizes, means, stds per backbone,
                                          image_resize_strategy "resize-naive"

OpenVLA builds the two ViTs with `timm`; timm imports torchvision, whose wheels here are CUDA
builds that do not load beside our CPU torch, so the ViTs are built here with timm's module and
parameter names and timm 0.9's forward (pre-norm blocks, LayerNorm eps 1e-6, exact GELU, fused
attention), and the features are OpenVLA's: the output of the second-to-last block without the
prefix tokens, DINOv2's then SigLIP's concatenated per patch (`get_intermediate_layers`).
LayerScale's `gamma` is named `scale_factor`, as OpenVLA renames it. A ViT's sizes are read from
its weights; its head count from `NUM_HEADS` by timm id (or given, for narrower test checkpoints).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import types
from typing import Any

import torch
import transformers
from torch import nn

from worldenv.models import checkpoint, layout

MODEL_TYPE = "openvla"
NUM_HEADS = {"vit_large_patch14_reg4_dinov2.lvd142m": 16, "vit_so400m_patch14_siglip_224": 16,
             "vit_so400m_patch14_siglip_384": 16, "vit_large_patch14_clip_224.openai": 16,
             "vit_large_patch14_clip_336.openai": 16}
FEATURIZERS = ("featurizer", "fused_featurizer")


def is_prismatic(path: str | pathlib.Path) -> bool:
    """Whether the directory holds an OpenVLA (Prismatic) backbone rather than a LLaVA one."""
    file = pathlib.Path(path) / "config.json"
    return file.is_file() and json.loads(file.read_text()).get("model_type") in (MODEL_TYPE, "prismatic")


# ---- timm's ViT, its names ----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ViTShape:
    """A timm VisionTransformer's sizes, as far as its weights tell them (and the head count)."""

    patch: int
    width: int
    depth: int
    heads: int
    mlp: int
    patches: int
    class_token: bool
    registers: int
    layer_scale: bool
    attention_pool: bool

    @classmethod
    def of(cls, state: dict[str, torch.Tensor], heads: int) -> ViTShape:
        width, _, patch, _ = state["patch_embed.proj.weight"].shape
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        registers = state["reg_token"].shape[1] if "reg_token" in state else 0
        return cls(patch, width, depth, heads, state["blocks.0.mlp.fc1.weight"].shape[0], state["pos_embed"].shape[1],
                   "cls_token" in state, registers, "blocks.0.ls1.scale_factor" in state, "attn_pool.latent" in state)


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (B, h, N, d/h) each
        out = nn.functional.scaled_dot_product_attention(q, k, v)                                # (B, h, N, d/h)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class LayerScale(nn.Module):
    """timm's LayerScale with OpenVLA's parameter name (`gamma` -> `scale_factor`)."""

    def __init__(self, width: int):
        super().__init__()
        self.scale_factor = nn.Parameter(torch.full((width,), 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_factor


class Block(nn.Module):
    def __init__(self, shape: ViTShape):
        super().__init__()
        w = shape.width
        self.norm1, self.attn = nn.LayerNorm(w, eps=1e-6), Attention(w, shape.heads)
        self.ls1 = LayerScale(w) if shape.layer_scale else nn.Identity()
        self.norm2, self.mlp = nn.LayerNorm(w, eps=1e-6), Mlp(w, shape.mlp)
        self.ls2 = LayerScale(w) if shape.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class AttentionPool(nn.Module):
    """timm's AttentionPoolLatent (SigLIP's head): held for its weights; OpenVLA reads patches."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.latent = nn.Parameter(torch.zeros(1, 1, width))
        self.q, self.kv, self.proj = nn.Linear(width, width), nn.Linear(width, 2 * width), nn.Linear(width, width)
        self.norm, self.mlp = nn.LayerNorm(width, eps=1e-6), Mlp(width, hidden)


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, width: int):
        super().__init__()
        self.proj = nn.Conv2d(3, width, patch, patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)                           # (B, N, D)


class ViT(nn.Module):
    """A timm VisionTransformer (global pool token or map, num_classes 0) by its keys."""

    def __init__(self, shape: ViTShape):
        super().__init__()
        self.shape, w = shape, shape.width
        self.patch_embed = PatchEmbed(shape.patch, w)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, w)) if shape.class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, shape.registers, w)) if shape.registers else None
        self.pos_embed = nn.Parameter(torch.zeros(1, shape.patches, w))         # patches only (no_embed_class)
        self.blocks = nn.ModuleList(Block(shape) for _ in range(shape.depth))
        self.norm = nn.LayerNorm(w, eps=1e-6)
        self.attn_pool = AttentionPool(w, shape.mlp) if shape.attention_pool else None

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, 3, H, W) -> patch features (B, N, D) after the second-to-last block."""
        x = self.patch_embed(pixels) + self.pos_embed
        prefix = [t.expand(len(x), -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        x = torch.cat([*prefix, x], dim=1)
        for block in self.blocks[:-1]:
            x = block(x)
        return x[:, sum(p.shape[1] for p in prefix):]


class Projector(nn.Module):
    """OpenVLA's fused projector: fc1 (Dv -> 4 Dv), GELU, fc2 (-> D), GELU, fc3 (D -> D)."""

    def __init__(self, vision: int, width: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(vision, 4 * vision), nn.Linear(4 * vision, width)
        self.fc3 = nn.Linear(width, width)
        self.act_fn1, self.act_fn2 = nn.GELU(), nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act_fn2(self.fc2(self.act_fn1(self.fc1(x)))))


class VisionBackbone(nn.Module):
    def __init__(self, shapes: list[ViTShape]):
        super().__init__()
        self.featurizer = ViT(shapes[0])
        self.fused_featurizer = ViT(shapes[1]) if len(shapes) > 1 else None

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, 3 per ViT, H, W) -> patch features (B, N, sum of the ViTs' widths)."""
        if self.fused_featurizer is None:
            return self.featurizer.features(pixels)
        first, second = torch.split(pixels, [3, 3], dim=1)
        return torch.cat([self.featurizer.features(first), self.fused_featurizer.features(second)], dim=2)


class PrismaticVLA(nn.Module):
    """The backbone of `OpenVLAForActionPrediction`, its state dict keys as OpenVLA's."""

    def __init__(self, raw_config: dict[str, Any], shapes: list[ViTShape]):
        super().__init__()
        text = transformers.LlamaConfig(**raw_config["text_config"])
        self.config = types.SimpleNamespace(text_config=text, raw=raw_config)
        self.vision_backbone = VisionBackbone(shapes)
        self.projector = Projector(sum(s.width for s in shapes), text.hidden_size)
        self.language_model = transformers.LlamaForCausalLM(text)

    def image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, 6, H, W) -> projected patch tokens (B, N, D)."""
        return self.projector(self.vision_backbone(pixels))

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    @property
    def decoder(self) -> nn.Module:
        """The Llama decoder (no LM head): what OFT reads hidden states from."""
        return self.language_model.model

    @classmethod
    def from_directory(cls, path: str | pathlib.Path, device: str | torch.device = "cpu",
                       dtype: str | torch.dtype = "float32", heads: list[int] | None = None) -> PrismaticVLA:
        """Read config.json and the weights; every missing, unexpected or misshapen key is refused by name."""
        path = pathlib.Path(path)
        raw = layout.read_json(path / "config.json", "OpenVLA config")
        state = checkpoint.read_weights(path)
        shapes = [ViTShape.of(_under(state, f"vision_backbone.{name}."), h)
                  for name, h in zip(FEATURIZERS[:len(raw.get("timm_model_ids", []))], _heads(raw, heads, path))]
        with checkpoint.creating_on(device, dtype):
            model = cls(raw, shapes)
        try:
            checkpoint.check_state(model.state_dict(), state)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        model.load_state_dict(state)
        return model

    def save_pretrained(self, path: str | pathlib.Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """config.json as read and the weights as one model.safetensors (OpenVLA's key names)."""
        path = pathlib.Path(path)
        text = json.dumps(self.config.raw, indent=2) + "\n"
        checkpoint.write_atomic(path / "config.json", lambda f: f.write_text(text))
        checkpoint.save_weights(self.state_dict() if state_dict is None else state_dict, path)


def _under(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _heads(raw: dict, heads: list[int] | None, path: pathlib.Path) -> list[int]:
    ids = raw.get("timm_model_ids")
    if not isinstance(ids, list) or not 1 <= len(ids) <= 2:
        raise ValueError(f"{path / 'config.json'}: timm_model_ids: expected one or two timm model ids, got {ids!r}")
    if heads is not None:
        if len(heads) != len(ids):
            raise ValueError(f"vision_heads: {len(heads)} values for {len(ids)} vision backbones ({ids})")
        return heads
    unknown = [i for i in ids if i not in NUM_HEADS]
    if unknown:
        raise ValueError(f"{path / 'config.json'}: timm_model_ids: no head count known for {unknown}; "
                         f"give vision_heads in worldenv.json (known: {sorted(NUM_HEADS)})")
    return [NUM_HEADS[i] for i in ids]
