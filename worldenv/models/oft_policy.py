"""OpenVLA-OFT as a Laplace policy: a LLaVA-family VLA, OFT's parallel-decoding action head and
proprio projector, plus our scale head so chunks are sampled with log-probabilities (LOOP/PPO).

Directory layout (a Hugging Face VLA directory plus OFT's extra files and ours):

    config.json, model.safetensors          the backbone, `LlavaForConditionalGeneration` (vision
      (or model-*.safetensors + index),       tower + projector + Llama LM), base weights, no LoRA merged
      generation_config.json
    tokenizer.json, tokenizer_config.json   its tokenizer (needs a BOS token)
    preprocessor_config.json                its image processor: size (or crop_size), image_mean,
                                              image_std, rescale_factor, applied here in torch
    action_head--<step>_checkpoint.pt       OFT's L1RegressionActionHead state dict: model.layer_norm1.*,
                                              model.fc1.*, model.mlp_resnet_blocks.<i>.ffn.{0,1}.*,
                                              model.layer_norm2.*, model.fc2.* ("module." prefixes allowed)
    proprio_projector--<step>_checkpoint.pt OFT's ProprioProjector: fc1.*, fc2.*
    scale_head--<step>_checkpoint.pt        ours: weight (1, D), bias (1), one Linear shared by the slots
    dataset_statistics.json                 {unnorm_key: {"action": {"q01", "q99", "mask"?, ...},
                                              "proprio": {"q01", "q99", "mask"?, ...}, ...}, ...}
    lora_adapter/                           optional: peft's adapter_config.json + adapter_model.safetensors,
                                              LoRA on the language model (keys "base_model.model.layers...")
    worldenv.json                           {"role": "policy", "arch": "openvla-oft", "unnorm_key", ...}:
                                              `OFTConfig`

Forward, as OFT's parallel decoding (B items, N patches, D = LM width, K*A action slots):

    [BOS] + projected image patches (N) + proprio token (1) + prompt tokens + K*A zero embeddings

(the prompt is OFT's "In: What action should the robot take to {instruction, lower-cased}?\nOut:"),
left-padded to one length with an attention mask, so padding never moves the slots (they end
every row). OFT's trailing stop token is left out: under the causal LM it cannot change the
slot states. OFT reads the LM's last hidden states one position before each slot (the state that
predicts it: the last prompt token and the first K*A - 1 slots); we read the same positions so
an OFT checkpoint's head sees what it was trained on. The action head gives loc (B, K, A) in
OFT's normalised space, the scale head b (B, K, A); both map to env units through the
BOUNDS_Q99 statistics (an affine map of a Laplace is a Laplace): where mask (default all true)

    proprio_norm = clip(2 (x - q01) / (q99 - q01) - 1, -1, 1)       (unmasked dims pass, then clip)
    loc_env = (loc + 1) (q99 - q01) / 2 + q01,   b_env = b (q99 - q01) / 2   (unmasked: unchanged)
"""
from __future__ import annotations

import json
import pathlib
import re
from typing import Any, Literal

import peft
import pydantic
import torch
import transformers
from torch import nn

from worldenv.models import checkpoint, inputs, laplace, layout, pixels, prismatic, registry, text
from worldenv.models.oft_heads import L1RegressionActionHead, ProprioProjector
from worldenv.models.oft_statistics import STATS_FILE, Statistics
from worldenv.models.roles import Spec

PROCESSOR_FILE = "preprocessor_config.json"
ADAPTER_DIR = "lora_adapter"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_PREFIX = "base_model.model."   # peft's key prefix for an adapter over the language model
ADAPTER = "default"                    # peft's adapter name inside the modules
HEADS = {"action_head": "OFT action head", "proprio_projector": "OFT proprio projector",
         "scale_head": "scale head"}
PROMPT = "In: What action should the robot take to {}?\nOut:"

# Backbone widths per `size`: a LlamaConfig (text) and a SiglipVisionConfig (vision) each.
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {"text": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=4, max_position_embeddings=512),
             "vision": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                            image_size=32, patch_size=8)},
    "small": {"text": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=6, num_attention_heads=8,
                           num_key_value_heads=8, max_position_embeddings=1024),
              "vision": dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6,
                             image_size=224, patch_size=32)},
    # OpenVLA-7B: Llama-2-7B (vocab padded to 32064) over SigLIP so400m/14 at 224 px (OpenVLA fuses
    # DINOv2 + SigLIP; a LLaVA directory holds one tower).
    "full": {"text": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                          num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5, vocab_size=32064),
             "vision": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                            image_size=224, patch_size=14)},
}
# The words of a fresh build's tokenizer (`text.word_tokenizer`): the prompt's and LIBERO's instructions'.
WORDS = ("in : what action should the robot take to ? out pick up put place it on into the of and a "
         "bowl plate basket cabinet drawer top middle bottom stove microwave mug cup box caddy tray "
         "black white red yellow alphabet soup cream cheese ketchup tomato sauce butter milk orange "
         "juice chocolate pudding bbq salad dressing book wine bottle rack turn open close left right "
         "front back next between both back sauce pot frying pan moka pots shelf table center").split()


class OFTConfig(pydantic.BaseModel):
    """worldenv.json of an OpenVLA-OFT directory (the backbone's sizes are its config.json's)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    role: Literal["policy"] = "policy"
    arch: Literal["openvla-oft"] = "openvla-oft"
    name: str = pydantic.Field("openvla-oft", description="label reported in the spec")
    size: Literal["tiny", "small", "full"] = pydantic.Field(
        "tiny", description="backbone widths of a fresh build: tests, a CPU smoke run, the paper's 7B")
    unnorm_key: str = pydantic.Field("libero_spatial_no_noops", description="entry of dataset_statistics.json")
    chunk_length: int = pydantic.Field(8, ge=1, description="K, actions per chunk")
    action_dim: int = pydantic.Field(7, ge=1, description="A, dims per action")
    proprio_dim: int = pydantic.Field(8, ge=1, description="P, proprio dims")
    image_size: int = pydantic.Field(224, ge=8, description="side of the frames the service receives; "
                                     "resized to the processor's size inside")
    center_crop: float = pydantic.Field(1.0, gt=0, le=1, description="area fraction kept by a centre crop "
                                        "before resizing (OFT evaluates LIBERO with 0.9 when trained with crops)")
    prompt_end_token_id: int | None = pydantic.Field(None, description="appended to the prompt when its ids do "
                                                     "not end in it (OpenVLA's Llama-2 tokenizer: 29871)")
    lora_rank: int = pydantic.Field(32, ge=0, description="LoRA rank on the language model (a Prismatic backbone: "
                                    "on every Linear of the VLA, as OFT trains it); 0 = none")
    vision_heads: list[int] | None = pydantic.Field(
        None, description="Prismatic backbone: attention heads of each ViT, when narrower than the timm model "
        "config.json names (tiny test checkpoints); default: the named model's")
    noise: laplace.Noise = laplace.noise_field()
    min_log_scale: float = -5.0
    max_log_scale: float = 1.0

    _scales_ordered = pydantic.model_validator(mode="after")(laplace.scales_ordered)


def _backbone_config(size: str, tokenizer) -> transformers.LlavaConfig:
    """A LLaVA config of the `size` preset: SigLIP tower (2nd-to-last layer, all patches, as
    OpenVLA) and a Llama LM over the tokenizer's vocabulary."""
    preset = SIZES[size]
    language = transformers.LlamaConfig(**{**preset["text"], "vocab_size": max(preset["text"].get("vocab_size", 0),
                                                                            len(tokenizer))})
    vision = transformers.SiglipVisionConfig(**preset["vision"], vision_use_head=False)
    return transformers.LlavaConfig(text_config=language, vision_config=vision, vision_feature_layer=-2,
                                    vision_feature_select_strategy="full",
                                    image_token_id=tokenizer.convert_tokens_to_ids(text.IMAGE_TOKEN))


def _backbone(path: pathlib.Path, device, dtype: torch.dtype, config: OFTConfig) -> nn.Module:
    """The directory's backbone: OpenVLA's Prismatic layout (config.json model_type "openvla",
    as OFT's released checkpoints) or a LLaVA directory."""
    if prismatic.is_prismatic(path):
        return prismatic.PrismaticVLA.from_directory(path, device, dtype, config.vision_heads)
    return transformers.LlavaForConditionalGeneration.from_pretrained(
        path, dtype=dtype, device_map=str(torch.device(device)), local_files_only=True)


def _step_of(file: pathlib.Path) -> int:
    match = re.search(r"--(\d+)_checkpoint", file.name)
    return int(match.group(1)) if match else 0


class OFTPolicy(nn.Module, checkpoint.Pretrained, laplace.LaplacePolicyRole):
    """A LLaVA-family VLA with OFT's heads -> Laplace over an action chunk (B, K, A), env units."""

    config_class = OFTConfig

    def __init__(self, config: OFTConfig, backbone: transformers.LlavaForConditionalGeneration, tokenizer,
                 processor: pixels.ImageProcessor, statistics: Statistics, step: int = 0):
        """Heads are made on the current default device/dtype (see `checkpoint.creating_on`); the
        backbone is frozen."""
        super().__init__()
        if tokenizer.bos_token_id is None:
            raise ValueError("tokenizer: no BOS token; OFT's sequence starts with one")
        self.config, self.tokenizer, self.pixels, self.statistics, self.step = (
            config, tokenizer, processor, statistics, step)
        self.backbone = backbone.requires_grad_(False)
        d = backbone.config.text_config.hidden_size
        self.action_head = L1RegressionActionHead(d, config.action_dim, config.chunk_length)
        self.proprio_projector = ProprioProjector(d, config.proprio_dim)
        self.scale_head = nn.Linear(d, 1)

    # ---- construction ----

    @classmethod
    def build(cls, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
              **overrides) -> OFTPolicy:
        """A fresh model of `size` (tiny | small | full), random weights, neutral statistics."""
        config, dtype = OFTConfig(**overrides), checkpoint.torch_dtype(dtype)
        tokenizer = text.word_tokenizer(WORDS)
        backbone_config = _backbone_config(config.size, tokenizer)
        side = backbone_config.vision_config.image_size
        prep = json.loads(transformers.SiglipImageProcessorPil(
            size={"height": side, "width": side}, image_mean=[0.5] * 3, image_std=[0.5] * 3).to_json_string())
        with checkpoint.creating_on(device, dtype):
            backbone = transformers.LlavaForConditionalGeneration(backbone_config)
            model = cls(config, backbone, tokenizer, pixels.read(prep, PROCESSOR_FILE),
                        Statistics.neutral(config.action_dim, config.proprio_dim))
            if config.lora_rank:
                model._attach_lora(model._fresh_lora_config(config.lora_rank))
        return model.eval()

    @classmethod
    def from_pretrained(cls, path: str | pathlib.Path, device: str | torch.device = "cpu",
                        dtype: str | torch.dtype = "float32") -> OFTPolicy:
        """Read the layout above; every missing or mismatched file is refused by name."""
        path, dtype = pathlib.Path(path), checkpoint.torch_dtype(dtype)
        config = OFTConfig.model_validate(layout.marker(path))
        stats = Statistics.parse(layout.read_json(path / STATS_FILE, "dataset statistics"), config.unnorm_key,
                                 path / STATS_FILE, config.action_dim, config.proprio_dim)
        prep = pixels.read(layout.read_json(path / PROCESSOR_FILE, "image processor config"), path / PROCESSOR_FILE)
        heads = {stem: layout.find_one(path, stem, what) for stem, what in HEADS.items()}
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        backbone = _backbone(path, device, dtype, config)
        with checkpoint.creating_on(device, dtype):
            model = cls(config, backbone, tokenizer, prep, stats, _step_of(heads["action_head"]))
            for stem, file in heads.items():
                layout.load_into(getattr(model, stem), file)
            model._load_lora(path / ADAPTER_DIR)
        model.source = path
        return model.eval()

    # ---- LoRA on the language model (a Prismatic backbone: on the whole VLA, as OFT) ----

    @property
    def language_model(self) -> nn.Module:
        """The decoder the slots' hidden states come from (no LM head)."""
        if isinstance(self.backbone, prismatic.PrismaticVLA):
            return self.backbone.decoder
        return self.backbone.model.language_model

    @property
    def lora_root(self) -> nn.Module:
        """Where LoRA adapters attach, so their keys are the ones OFT saves: LLaVA's language
        model, or the whole Prismatic VLA (`base_model.model.vision_backbone...`)."""
        return self.backbone if isinstance(self.backbone, prismatic.PrismaticVLA) else self.language_model

    def image_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixel values -> projected image tokens (B, N, D)."""
        if isinstance(self.backbone, prismatic.PrismaticVLA):
            return self.backbone.image_tokens(pixel_values)
        features = self.backbone.model.get_image_features(pixel_values=pixel_values, return_dict=True).pooler_output
        return torch.stack(list(features)) if isinstance(features, (list, tuple)) else features

    def _fresh_lora_config(self, rank: int) -> peft.LoraConfig:
        """OFT's LoRA: every Linear of the LM, alpha = min(rank, 16), no dropout, B = 0 (identity)."""
        names = sorted({n.rsplit(".", 1)[-1] for n, m in self.lora_root.named_modules()
                        if isinstance(m, nn.Linear) and not n.endswith("lm_head")})
        return peft.LoraConfig(r=rank, lora_alpha=min(rank, 16), lora_dropout=0.0, target_modules=names,
                               init_lora_weights="gaussian")

    def _attach_lora(self, lora: peft.LoraConfig) -> None:
        peft.inject_adapter_in_model(lora, self.lora_root, adapter_name=ADAPTER)
        for name, p in self.lora_root.named_parameters():
            p.requires_grad_("lora_" in name)

    def _load_lora(self, folder: pathlib.Path) -> None:
        """Attach lora_adapter/ strictly when present, else a fresh LoRA of `lora_rank` (if any)."""
        if not folder.is_dir():
            if self.config.lora_rank:
                self._attach_lora(self._fresh_lora_config(self.config.lora_rank))
            return
        raw = layout.read_json(folder / ADAPTER_CONFIG, "LoRA adapter config")
        if raw.get("peft_type") != "LORA" or raw.get("r") != self.config.lora_rank:
            raise ValueError(f"{folder / ADAPTER_CONFIG}: expected a LORA adapter of r={self.config.lora_rank} "
                             f"(lora_rank in {registry.MARKER_FILE}), got {raw.get('peft_type')} r={raw.get('r')}")
        self._attach_lora(peft.LoraConfig.from_pretrained(str(folder)))
        file = folder / ADAPTER_WEIGHTS
        if not file.is_file():
            raise FileNotFoundError(f"checkpoint {folder}: the LoRA adapter weights are missing: no {ADAPTER_WEIGHTS}")
        state = {k.removeprefix(ADAPTER_PREFIX): v for k, v in layout.load_tensors(file).items()}
        try:
            checkpoint.check_state(peft.get_peft_model_state_dict(self.lora_root, adapter_name=ADAPTER), state)
        except ValueError as exc:
            raise ValueError(f"{file}: {exc}") from None
        peft.set_peft_model_state_dict(self.lora_root, state, adapter_name=ADAPTER)

    # ---- saving ----

    source: pathlib.Path | None = None  # the directory the backbone was loaded from (None: a fresh build)

    def save_pretrained(self, path: str | pathlib.Path, step: int | None = None) -> None:
        """Write the whole layout into `path` (created); heads are named with `step` (default: the
        step of the loaded head files, 0 for a fresh build). A loaded backbone is frozen, so its
        files are hard-linked from `source` (nothing when saving in place), not written again."""
        path = pathlib.Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if not layout.reuse_backbone(self.source, path):  # frozen: a loaded backbone is linked, not rewritten
            layout.clear_backbone(path)
            base = {k.replace(".base_layer.", "."): v for k, v in self.backbone.state_dict().items() if "lora_" not in k}
            self.backbone.save_pretrained(path, state_dict=base)
        self.tokenizer.save_pretrained(path)
        self._write_json(path / PROCESSOR_FILE, self.pixels.raw)
        self._write_json(path / STATS_FILE, {self.config.unnorm_key: self.statistics.entry})
        for stem in HEADS:
            self._save_head(path, stem, self.step if step is None else step)
        if any("lora_" in n for n, _ in self.lora_root.named_parameters()):
            self._save_lora(path / ADAPTER_DIR)
        layout.write_marker(path, self.config.model_dump(mode="json"))

    @staticmethod
    def _write_json(file: pathlib.Path, value: Any) -> None:
        text = json.dumps(value, indent=2) + "\n"
        checkpoint.write_atomic(file, lambda f: f.write_text(text))

    def _save_head(self, path: pathlib.Path, stem: str, step: int) -> None:
        """`<stem>--<step>_checkpoint.pt` (a torch state dict, as OFT writes); older steps removed."""
        file = path / f"{stem}--{step}_checkpoint.pt"
        state = {k: v.detach().cpu().clone() for k, v in getattr(self, stem).state_dict().items()}
        checkpoint.write_atomic(file, lambda f: torch.save(state, f))
        for old in path.glob(f"{stem}--*_checkpoint.pt"):
            if old != file:
                old.unlink()

    def _save_lora(self, folder: pathlib.Path) -> None:
        folder.mkdir(exist_ok=True)
        self.lora_root.peft_config[ADAPTER].save_pretrained(str(folder))               # adapter_config.json
        state = peft.get_peft_model_state_dict(self.lora_root, adapter_name=ADAPTER)
        layout.save_tensors({ADAPTER_PREFIX + k: v for k, v in state.items()}, folder / ADAPTER_WEIGHTS)

    # ---- weights RL changes ----

    def _trainable(self) -> dict[str, nn.Parameter]:
        """LoRA A/B of the LM ("lora.<peft key>") and the heads ("<head>.<key>"), by stable name."""
        found = {f"lora.{n.replace(f'.{ADAPTER}.', '.')}": p
                 for n, p in self.lora_root.named_parameters() if "lora_" in n}
        for stem in HEADS:
            found.update({f"{stem}.{n}": p for n, p in getattr(self, stem).named_parameters()})
        return found

    def trainable_groups(self) -> dict[str, list[nn.Parameter]]:
        """The trainable parameters by optimiser group: "adapter" (LoRA) and "heads"."""
        groups: dict[str, list[nn.Parameter]] = {"adapter": [], "heads": []}
        for key, p in self._trainable().items():
            groups["adapter" if key.startswith("lora.") else "heads"].append(p)
        return groups

    def publishable_state(self) -> dict[str, torch.Tensor]:
        """The LoRA adapters and heads, as `load_weights` takes them (not the frozen backbone)."""
        return {k: p.detach() for k, p in self._trainable().items()}

    def reset_scale(self, scale: float) -> None:
        """Set b to `scale` everywhere in the normalised action space (served b is b (q99 - q01) / 2
        on masked dims), mid-sigmoid where it can still learn (`laplace.reset_scale_head`)."""
        c = self.config
        laplace.reset_scale_head(self.scale_head, scale, c.min_log_scale, c.max_log_scale)

    # ---- forward ----

    @property
    def spec(self) -> Spec:
        c = self.config
        return Spec("policy", c.arch, c.name, c.image_size, c.chunk_length, c.action_dim, c.proprio_dim)

    def _prompt_ids(self, instructions: list[str]) -> list[list[int]]:
        prompts = [PROMPT.format(text.lower()) for text in instructions]
        ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        end = self.config.prompt_end_token_id
        return [row + [end] if end is not None and (not row or row[-1] != end) else row for row in ids]

    def _sequence(self, prefix: torch.Tensor, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """prefix (B, S, D) = BOS + patches + proprio; prompts: B token lists -> embeddings (B, L, D)
        [pads, prefix, prompt, K*A zero slots] and mask (B, L) bool, left-padded: slots end every row."""
        b, s, d = prefix.shape
        t, slots = max(map(len, prompts)), self.config.chunk_length * self.config.action_dim
        ids = torch.tensor([row + [0] * (t - len(row)) for row in prompts], device=prefix.device)
        text = self.backbone.get_input_embeddings()(ids)                           # (B, T, D), right pads
        pad = torch.tensor([t - len(row) for row in prompts], device=prefix.device)[:, None]   # (B, 1)
        joined = torch.cat([prefix, text, prefix.new_zeros(b, slots, d)], dim=1)   # (B, L, D), pads after prompt
        j = torch.arange(joined.shape[1], device=prefix.device)[None]              # (1, L)
        mask = j >= pad                                                            # (B, L)
        # Output j takes joined[j - pad] up to the prompt's end (the pads move to the front).
        src = torch.where(j < s + t, j - pad, j).clamp(min=0)
        seq = torch.gather(joined, 1, src[..., None].expand(-1, -1, d)) * mask[..., None]
        return seq, mask

    def forward(self, frames: torch.Tensor, proprio: torch.Tensor,
                instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (B, H, W, 3) uint8, proprio (B, P) env units, B instructions -> loc, b (B, K, A),
        OFT's normalised action space, in the model's dtype."""
        c, dtype = self.config, self.dtype
        dims: dict[str, int] = {}
        inputs.expect("frames", frames, ("B", c.image_size, c.image_size, 3), "uint8", dims)
        inputs.expect("proprio", proprio, ("B", c.proprio_dim), "float", dims)
        inputs.expect_texts("instructions", instructions, dims)
        patches = self.image_tokens(self.pixels(frames, dtype, keep_area=c.center_crop))        # (B, N, D)
        token = self.proprio_projector(self.statistics.proprio.normalize(proprio.float()).to(dtype))  # (B, D)
        bos = self.backbone.get_input_embeddings()(
            torch.full((len(frames), 1), self.tokenizer.bos_token_id, device=frames.device))         # (B, 1, D)
        seq, mask = self._sequence(torch.cat([bos, patches, token[:, None]], dim=1), self._prompt_ids(instructions))
        hidden = self.language_model(inputs_embeds=seq, attention_mask=mask.long(), use_cache=False,
                                     position_ids=(mask.cumsum(1) - 1).clamp(min=0)).last_hidden_state
        ka = c.chunk_length * c.action_dim
        slots = hidden[:, -ka - 1:-1]                                                  # (B, K*A, D), OFT's shift
        loc = self.action_head(slots)                                                  # (B, K, A)
        span = c.max_log_scale - c.min_log_scale
        log_b = c.min_log_scale + span * torch.sigmoid(self.scale_head(slots)).view(loc.shape)
        return loc, log_b.exp()

    def distribution(self, frames: torch.Tensor, proprio: torch.Tensor,
                     instructions: list[str]) -> torch.distributions.Laplace:
        """Laplace with batch shape (B, K, A) in env units, float32 whatever the model dtype."""
        loc, b = self(frames, proprio, list(instructions))
        bounds = self.statistics.action
        return torch.distributions.Laplace(bounds.unnormalize(loc.float()), b.float() * bounds.half_range(loc.device))


def attach_scale_head(path: str | pathlib.Path, scale: float = 0.05, **options) -> pathlib.Path:
    """Write our scale head (b = `scale` everywhere, learnable) and worldenv.json (`OFTConfig`
    from `options`) beside an OpenVLA-OFT directory's own files, without loading the backbone;
    the head is named with the action head's step. Returns the head file."""
    path = pathlib.Path(path)
    config = OFTConfig(**options)
    width = layout.text_width(path)
    step = _step_of(layout.find_one(path, "action_head", HEADS["action_head"]))
    head = nn.Linear(width, 1)
    laplace.reset_scale_head(head, scale, config.min_log_scale, config.max_log_scale)
    file = path / f"scale_head--{step}_checkpoint.pt"
    state = {k: v.detach().clone() for k, v in head.state_dict().items()}
    checkpoint.write_atomic(file, lambda f: torch.save(state, f))
    layout.write_marker(path, config.model_dump(mode="json"))
    return file
