"""World-Env's instant reflector at paper scale: a frozen LLaVA sees the video, a small reward
head on its last hidden state gives R = sigmoid(head(h)) = p(task done).

Forward: frames (B, T, H, W, 3) uint8 -> up to `max_frames` indices sampled uniformly (the last
frame always among them) -> resized, rescaled and normalised in torch as preprocessor_config.json
says (batched, on the model's device) -> vision tower + projector (LLaVA's `get_image_features`)
-> each frame's patch grid average-pooled to `tokens_per_frame` tokens -> inputs_embeds =
[BOS, "USER: ", the frame tokens of all sampled frames, "\\nIs the task '<instruction>' done?
ASSISTANT:"] (the prompt option; instructions of different lengths right-padded and masked) ->
the language model's last hidden state -> pooled: the hidden state of the last non-pad token
(the "ASSISTANT:" position, the only one that has attended to every frame and the whole
question) -> reward head -> logit (B,).

The backbone is frozen (requires_grad False, always in eval mode, run without autograd): the
reward head is the only trained part, and the only weights `publishable_state` / `load_weights`
speak of.

Directory layout (one directory):

    config.json                   LlavaForConditionalGeneration's config (vision_config, text_config)
    model.safetensors             its weights, or model-0000i-of-0000n.safetensors + model.safetensors.index.json
    generation_config.json        written by transformers beside them
    tokenizer_config.json         the tokenizer: tokenizer_config.json + tokenizer.json (or tokenizer.model)
    tokenizer.json                  (+ special_tokens_map.json, chat template, whatever the tokenizer saves)
    preprocessor_config.json      the image processor's size / crop_size / rescale_factor / image_mean / image_std
    reward_head.safetensors       ours: norm.{weight,bias} (D,), fc1.weight (hidden, D), fc1.bias,
                                  fc2.weight (1, hidden), fc2.bias (D = text_config.hidden_size)
    worldenv.json                 ours: role, arch, name, size, image_size, max_frames, tokens_per_frame,
                                  head_hidden, prompt (`LlavaReflectorConfig`)

    model = LlavaReflector.build("cpu", "float32", size="tiny")     # random weights, a few MB
    model.save_pretrained(path); models.load(path, role="reflector")
    LlavaReflector.from_backbone("llava-1.5-7b-hf/", "cuda", "bfloat16", size="full")  # a fresh head on a LLaVA

Sizes (`build(size=...)`, random weights): tiny for tests (a few MB); small for CPU smoke runs (~34M
parameters, one B=8 call of 32 frames in seconds on 2 cores); full is LLaVA-1.5-7B's shapes (7.07B,
for a GPU: build it there in bfloat16, it is created on the device directly).
"""
from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Literal

import pydantic
import torch
import transformers

from worldenv.models import checkpoint, inputs, layout, pixels, registry, text, videos
from worldenv.models.reflector import sample_indices

HEAD_STEM, HEAD_FILE = "reward_head", "reward_head.safetensors"
PROCESSOR_FILE = "preprocessor_config.json"
TOKENIZER_CONFIG, TOKENIZER_FILES = "tokenizer_config.json", ("tokenizer.json", "tokenizer.model")
VIDEO = "<video>"  # where the frame tokens go in the prompt
PROMPT = "USER: <video>\nIs the task '{instruction}' done? ASSISTANT:"
FRAMES_PER_PASS = 128  # frames through the vision tower and pooling at once (int32 kernel indexing, memory)
Size = Literal["tiny", "small", "full"]


class LlavaReflectorConfig(pydantic.BaseModel):
    """Our options (worldenv.json); the backbone's own sizes are in config.json."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    role: Literal["reflector"] = "reflector"
    arch: Literal["llava-reward"] = "llava-reward"
    name: str = pydantic.Field("llava-reward", description="label reported in the spec")
    size: Size = pydantic.Field(description="the preset the backbone was built from (tiny, small, full)")
    image_size: int = pydantic.Field(ge=8, description="side of the square frames the service receives, pixels "
                                     "(resized to the vision tower's size inside)")
    max_frames: int = pydantic.Field(ge=1, description="frames sampled uniformly from the video, last included")
    tokens_per_frame: int = pydantic.Field(ge=1, description="image tokens per frame: the patch grid average-pooled "
                                           "to a sqrt x sqrt grid (a square number; full LLaVA keeps all 576)")
    head_hidden: int = pydantic.Field(ge=1, description="hidden width of the reward head")
    prompt: str = pydantic.Field(PROMPT, description=f"the question; {VIDEO} marks the frame tokens, "
                                 "{instruction} the task (after them); BOS goes first")

    @pydantic.field_validator("tokens_per_frame")
    @classmethod
    def _square(cls, v: int) -> int:
        if math.isqrt(v) ** 2 != v:
            raise ValueError(f"must be a square number (a pooled grid), got {v}")
        return v

    @pydantic.field_validator("prompt")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        if v.count(VIDEO) != 1 or "{instruction}" not in v.split(VIDEO)[1]:
            raise ValueError(f"must hold {VIDEO} once and {{instruction}} after it, got {v!r}")
        return v


class RewardHead(torch.nn.Module):
    """LayerNorm + Linear(D, hidden) + SiLU + Linear(hidden, 1): pooled hidden (B, D) -> logits (B,)."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.norm = torch.nn.LayerNorm(width)
        self.fc1 = torch.nn.Linear(width, hidden)
        self.fc2 = torch.nn.Linear(hidden, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.nn.functional.silu(self.fc1(self.norm(h)))).squeeze(-1)


class LlavaReflector(torch.nn.Module, checkpoint.Pretrained, videos.VideoJudge):
    """Frames (B, T, H, W, 3) uint8 + B instructions -> logit of p(done) (B,)."""

    config_class = LlavaReflectorConfig

    def __init__(self, config: LlavaReflectorConfig, backbone: transformers.LlavaForConditionalGeneration,
                 tokenizer, processor: dict[str, Any]):
        """Wraps a LLaVA (frozen here) and builds a fresh reward head on the current default device/dtype."""
        super().__init__()
        self.config, self.backbone, self.tokenizer, self.processor = config, backbone, tokenizer, dict(processor)
        self.backbone.requires_grad_(False).eval()
        self.pixels = _check_processor(processor, backbone.config)
        _check_tokens(config, backbone.config)
        self.reward_head = RewardHead(backbone.config.text_config.hidden_size, config.head_hidden)
        self.grid_side = _grid(backbone.config)[1]

    def train(self, mode: bool = True) -> "LlavaReflector":
        """Only the head switches mode; the frozen backbone stays in eval (no dropout)."""
        super().train(mode)
        self.backbone.eval()
        return self

    # --- building, saving, loading -----------------------------------------------------------

    @classmethod
    def build(cls, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32", size: Size = "tiny",
              **overrides) -> "LlavaReflector":
        """A random-weights LLaVA of the `size` preset with a fresh head, created on device in dtype.
        tiny: tests (a few MB); small: CPU smoke runs (~34M parameters); full: LLaVA-1.5-7B's sizes."""
        if size not in PRESETS:
            raise ValueError(f"size: expected one of {list(PRESETS)}, got {size!r}")
        preset = PRESETS[size]
        config = LlavaReflectorConfig(size=size, **{**preset["options"], **overrides})
        tokenizer = text.word_tokenizer(WORDS)
        llava = llava_config(size, tokenizer)
        processor = processor_dict(llava.vision_config.image_size)
        with checkpoint.creating_on(device, dtype):
            return cls(config, transformers.LlavaForConditionalGeneration(llava), tokenizer, processor).eval()

    @classmethod
    def from_pretrained(cls, path: str | pathlib.Path, device: str | torch.device = "cpu",
                        dtype: str | torch.dtype = "float32") -> "LlavaReflector":
        """The checkpoint directory `path` (the layout above); files are checked before the backbone loads."""
        path = pathlib.Path(path)
        config = read_options(path)
        head = layout.find_one(path, HEAD_STEM, "reward head")
        model = cls._load(path, config, device, dtype)
        layout.load_into(model.reward_head, head)
        return model

    @classmethod
    def from_backbone(cls, path: str | pathlib.Path, device: str | torch.device = "cpu",
                      dtype: str | torch.dtype = "float32", size: Size = "full", **overrides) -> "LlavaReflector":
        """A fresh reward head on a LLaVA directory without one (e.g. llava-hf/llava-1.5-7b-hf, downloaded);
        worldenv.json's options are the `size` preset's, overridden by keyword."""
        config = LlavaReflectorConfig(size=size, **{**PRESETS[size]["options"], **overrides})
        return cls._load(pathlib.Path(path), config, device, dtype)

    @classmethod
    def _load(cls, path: pathlib.Path, config: LlavaReflectorConfig, device, dtype) -> "LlavaReflector":
        processor = layout.read_json(path / PROCESSOR_FILE, "image processor config")
        layout.read_json(path / TOKENIZER_CONFIG, "tokenizer config")
        if not any((path / name).is_file() for name in TOKENIZER_FILES):
            raise FileNotFoundError(f"checkpoint {path}: the tokenizer is missing: no {' or '.join(TOKENIZER_FILES)}")
        layout.read_json(path / registry.CONFIG_FILE, "LLaVA config")
        dtype = checkpoint.torch_dtype(dtype)
        backbone = transformers.LlavaForConditionalGeneration.from_pretrained(
            path, local_files_only=True, dtype=dtype, device_map=str(torch.device(device)))
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        with checkpoint.creating_on(device, dtype):
            model = cls(config, backbone, tokenizer, processor).eval()
        model.source = path
        return model

    source: pathlib.Path | None = None  # the directory the backbone was loaded from (None: a fresh build)

    def save_pretrained(self, path: str | pathlib.Path) -> None:
        """Write the layout above into `path` (created); worldenv.json last. The backbone is frozen:
        once loaded, its files are hard-linked from `source` (nothing when saving in place), not
        written again (`train reflector` saves every best model)."""
        path = pathlib.Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if not layout.reuse_backbone(self.source, path):
            layout.clear_backbone(path)
            self.backbone.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        text = json.dumps(self.processor, indent=2) + "\n"
        checkpoint.write_atomic(path / PROCESSOR_FILE, lambda f: f.write_text(text))
        layout.save_tensors(self.reward_head.state_dict(), path / HEAD_FILE)
        layout.write_marker(path, self.config.model_dump(mode="json"))

    def publishable_state(self) -> dict[str, torch.Tensor]:
        """The reward head's state dict (what training changes; the keys of reward_head.safetensors)."""
        return self.reward_head.state_dict()

    # --- the forward pass --------------------------------------------------------------------

    def forward(self, frames: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        """frames (B, T, H, W, 3) uint8, B instructions -> logits (B,)."""
        s = self.config.image_size
        inputs.expect("frames", frames, ("B", "T", s, s, 3), "uint8")
        inputs.expect_texts("instructions", instructions, {"B": len(frames)})
        idx = sample_indices(frames.shape[1], self.config.max_frames).to(frames.device)
        clip = frames.to(self.device).index_select(1, idx)                          # (B, T', H, W, 3)
        backbone_grad = any(p.requires_grad for p in self.backbone.parameters())  # frozen: never
        with torch.set_grad_enabled(torch.is_grad_enabled() and backbone_grad):
            hidden = self.pooled_hidden(clip, list(instructions))                   # (B, D)
        return self.reward_head(hidden.to(self.reward_head.fc1.weight.dtype))

    def pooled_hidden(self, clip: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        """clip (B, T', H, W, 3) uint8 -> the last non-pad token's last-layer hidden state (B, D)."""
        b = len(clip)
        tokens = self.frame_tokens(self.pixels(clip.flatten(0, 1), self.dtype))      # (B*T', n, D)
        embeds, mask, last = self.sequence(tokens.reshape(b, -1, tokens.shape[-1]), instructions)
        out = self.backbone.model.language_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
        return out.last_hidden_state[torch.arange(b, device=last.device), last]

    def frame_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixel values (N, 3, S, S) -> projected image tokens pooled to (N, tokens_per_frame, D),
        FRAMES_PER_PASS frames at a time: at full size a B = 32 request of 32-frame videos made one
        pooling input of 4.8e9 elements, past the int32 indexing of CUDA's pooling kernel."""
        return torch.cat([self._frame_tokens(part) for part in pixels.split(FRAMES_PER_PASS)])

    def _frame_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        feats = torch.stack(list(self.backbone.model.get_image_features(pixel_values=pixels).pooler_output))
        n, _, d = feats.shape                                                        # (N, g*g, D)
        grid = feats.transpose(1, 2).reshape(n, d, self.grid_side, self.grid_side)
        side = math.isqrt(self.config.tokens_per_frame)
        return torch.nn.functional.adaptive_avg_pool2d(grid, side).flatten(2).transpose(1, 2)

    def sequence(self, frames: torch.Tensor, instructions: list[str]) -> tuple[torch.Tensor, ...]:
        """frame tokens (B, N, D) -> inputs_embeds (B, L, D), attention mask (B, L) int64 (right padding)
        and the index of each row's last real token (B,)."""
        tok, device = self.tokenizer, frames.device
        head, tail = self.config.prompt.split(VIDEO)
        bos = [] if tok.bos_token_id is None else [tok.bos_token_id]
        prefix = bos + tok(head, add_special_tokens=False)["input_ids"]
        suffixes = tok([tail.replace("{instruction}", t) for t in instructions], add_special_tokens=False)["input_ids"]
        width, pad = max(map(len, suffixes)), tok.pad_token_id or 0
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in suffixes], dtype=torch.long, device=device)
        embed = self.backbone.get_input_embeddings()
        start = embed(torch.tensor(prefix, dtype=torch.long, device=device)).expand(len(frames), -1, -1)
        embeds = torch.cat([start, frames.to(start.dtype), embed(ids)], dim=1)
        ends = len(prefix) + frames.shape[1] + torch.tensor([len(s) for s in suffixes], device=device)
        mask = (torch.arange(embeds.shape[1], device=device) < ends[:, None]).long()
        return embeds, mask, ends - 1



def attach_reward_head(path: str | pathlib.Path, size: Size = "full", seed: int = 0, **overrides) -> pathlib.Path:
    """Write a fresh reward head and worldenv.json into a LLaVA directory that has neither (e.g. a
    downloaded llava-hf/llava-1.5-7b-hf), without loading the backbone; returns the head file.
    worldenv.json's options are the `size` preset's, overridden by keyword."""
    path = pathlib.Path(path)
    width = layout.text_width(path)
    config = LlavaReflectorConfig(size=size, **{**PRESETS[size]["options"], **overrides})
    torch.manual_seed(seed)
    layout.save_tensors(RewardHead(width, config.head_hidden).state_dict(), path / HEAD_FILE)
    layout.write_marker(path, config.model_dump(mode="json"))
    return path / HEAD_FILE

# --- checks of a directory's files ---------------------------------------------------------------

def read_options(path: pathlib.Path) -> LlavaReflectorConfig:
    """worldenv.json -> the config; a missing or mistyped option names the file and the key."""
    raw = layout.marker(path)
    if raw["arch"] != "llava-reward":
        raise ValueError(f"checkpoint {path} holds arch {raw['arch']!r}, not 'llava-reward'")
    try:
        return LlavaReflectorConfig.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ValueError(f"{path / registry.MARKER_FILE}: {_first_error(exc)}") from None


def _check_processor(raw: dict[str, Any], llava: transformers.LlavaConfig) -> pixels.ImageProcessor:
    """The image processor, checked to give the vision tower's image size."""
    processor = pixels.read(raw, PROCESSOR_FILE)
    side = llava.vision_config.image_size
    size = processor.output_size(side)
    if size is not None and tuple(size) != (side, side):
        raise ValueError(f"{PROCESSOR_FILE}: images come out {size[0]}x{size[1]}, the vision tower "
                         f"({registry.CONFIG_FILE} vision_config.image_size) takes {side}x{side}")
    return processor


def _grid(llava: transformers.LlavaConfig) -> tuple[int, int]:
    """(patch tokens per image, side of their square grid); CLS must be dropped ("default")."""
    if llava.vision_feature_select_strategy != "default" or not isinstance(llava.vision_feature_layer, int):
        raise ValueError(f"{registry.CONFIG_FILE}: vision_feature_select_strategy 'default' with one "
                         f"vision_feature_layer expected (a square patch grid)")
    side = llava.vision_config.image_size // llava.vision_config.patch_size
    return side * side, side


def _check_tokens(config: LlavaReflectorConfig, llava: transformers.LlavaConfig) -> None:
    patches, _ = _grid(llava)
    if config.tokens_per_frame > patches:
        raise ValueError(f"{registry.MARKER_FILE}: tokens_per_frame {config.tokens_per_frame} exceeds the "
                         f"{patches} patches of a frame")
    frames = config.max_frames * config.tokens_per_frame
    if frames >= llava.text_config.max_position_embeddings:
        raise ValueError(f"{registry.MARKER_FILE}: max_frames x tokens_per_frame = {frames} image tokens do not fit "
                         f"the language model's {llava.text_config.max_position_embeddings} positions")


def _first_error(exc: pydantic.ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(map(str, err['loc'])) or 'options'}: {err['msg']}"


# --- the random-weights presets ----------------------------------------------------------------------

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {"options": {"image_size": 64, "max_frames": 32, "tokens_per_frame": 4, "head_hidden": 32},
             "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "image_size": 28, "patch_size": 7},
             "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "num_key_value_heads": 2, "max_position_embeddings": 512, "vocab_size": 0}},
    "small": {"options": {"image_size": 128, "max_frames": 32, "tokens_per_frame": 9, "head_hidden": 256},
              "vision": {"hidden_size": 192, "intermediate_size": 768, "num_hidden_layers": 4,
                         "num_attention_heads": 3, "image_size": 84, "patch_size": 14},
              "text": {"hidden_size": 384, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 6,
                       "num_key_value_heads": 6, "max_position_embeddings": 2048, "vocab_size": 32064}},
    # LLaVA-1.5-7B: CLIP ViT-L/14 at 336 px + Llama-2-7B (llava-hf/llava-1.5-7b-hf's config.json)
    "full": {"options": {"image_size": 256, "max_frames": 32, "tokens_per_frame": 64, "head_hidden": 1024},
             "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                        "num_attention_heads": 16, "image_size": 336, "patch_size": 14, "projection_dim": 768},
             "text": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                      "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096,
                      "vocab_size": 32064, "rms_norm_eps": 1e-5}},
}
WORDS = ("user assistant : ? ' . , \" is the task done a an and in on of to into from with at it its up down "
         "put pick place open close turn push move stack lift grab the bowl plate cup mug drawer cabinet door stove "
         "basket tray rack shelf table top bottom middle left right front back black white red green blue yellow "
         "gripper square box book wine bottle cream cheese butter ketchup sauce soup microwave both then").split()


def llava_config(size: Size, tokenizer) -> transformers.LlavaConfig:
    """The LlavaConfig of a preset (text vocabulary at least the tokenizer's)."""
    preset = PRESETS[size]
    ids = {f"{k.removesuffix('_token')}_token_id": tokenizer.convert_tokens_to_ids(v) for k, v in text.SPECIAL.items()
           if k != "unk_token"}
    vocab = max(preset["text"]["vocab_size"], len(tokenizer))
    language = transformers.LlamaConfig(**{**preset["text"], "vocab_size": vocab}, **ids)
    vision = transformers.CLIPVisionConfig(**preset["vision"])
    grid = vision.image_size // vision.patch_size
    return transformers.LlavaConfig(vision_config=vision, text_config=language, image_seq_length=grid * grid,
                                    image_token_index=tokenizer.convert_tokens_to_ids(text.IMAGE_TOKEN))


def processor_dict(side: int) -> dict[str, Any]:
    """preprocessor_config.json of LLaVA-1.5's CLIP image processor at `side` pixels."""
    return {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": side},
            "resample": 3, "do_center_crop": True, "crop_size": {"height": side, "width": side}, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD),
            "do_convert_rgb": True}
