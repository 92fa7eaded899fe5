"""The pi0-like VLA: a frozen-able backbone producing prefix tokens, and a bidirectional
per-token action head producing the whole chunk mean μ ∈ R^{H×d} in one forward pass.

Backbone
    * vision: per camera, a small strided CNN whose feature maps are FiLM-modulated by the
      instruction embedding, flattened into spatial tokens (+ learned position embeddings);
    * language: a sentence embedding of the instruction (computed outside the graph by
      :mod:`.text`, cached per instruction) projected to one token;
    * state: the normalised joint state projected to one token;
    * a bidirectional transformer encoder over [language, state, vision...] tokens.
Action head
    * H learned action-token queries; transformer decoder layers with *unmasked* self-attention
      between action tokens (bidirectional) and cross-attention to the prefix; a linear read-out
      per token. No denoising loop.

The head predicts normalised joint *deltas* from the current state; normalisation statistics
live in the model as buffers (and in the checkpoint), so the exported ONNX graph maps raw
inputs (uint8 images, joint positions in rad/m, the instruction embedding) to raw joint targets.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn


@dataclass
class PolicyConfig:
    cameras: tuple = ("front",)
    image_size: int = 96
    state_dim: int = 8
    action_dim: int = 8
    horizon: int = 8
    lang_dim: int = 384
    d_model: int = 128
    n_heads: int = 4
    prefix_layers: int = 2
    head_layers: int = 2
    ff_mult: int = 4
    dropout: float = 0.0
    cnn_channels: tuple = (32, 64, 96)
    keypoints: int = 0  # spatial-softmax keypoint tokens per camera (0: none, as in v1 checkpoints)
    aux_dim: int = 0  # auxiliary grounding read-out (training only; 0: none, as in v1/v2 checkpoints)
    joint_names: tuple = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "PolicyConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown policy config keys: {sorted(unknown)}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**d)


@dataclass
class Normalization:
    """Statistics that travel with the weights: state mean/std and action-delta mean/std."""

    state_mean: list = field(default_factory=list)
    state_std: list = field(default_factory=list)
    delta_mean: list = field(default_factory=list)
    delta_std: list = field(default_factory=list)

    def validate(self, cfg: PolicyConfig) -> None:
        for name, n in (("state_mean", cfg.state_dim), ("state_std", cfg.state_dim),
                        ("delta_mean", cfg.action_dim), ("delta_std", cfg.action_dim)):
            v = getattr(self, name)
            if len(v) != n:
                raise ValueError(f"normalisation {name} has {len(v)} values, the model expects {n}")
            if not all(math.isfinite(x) for x in v):
                raise ValueError(f"normalisation {name} contains NaN/Inf")
        if min(self.state_std) <= 0 or min(self.delta_std) <= 0:
            raise ValueError("normalisation std must be > 0")


class FiLMConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, lang_dim: int, stride: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.norm = nn.GroupNorm(8 if cout % 8 == 0 else 1, cout)
        self.film = nn.Linear(lang_dim, 2 * cout)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, lang: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        gamma, beta = self.film(lang).chunk(2, dim=-1)
        x = x * (1.0 + gamma[:, :, None, None]) + beta[:, :, None, None]
        return torch.nn.functional.gelu(x)


class VisionEncoder(nn.Module):
    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        ch = list(cfg.cnn_channels)
        # CoordConv: two constant channels holding pixel x/y in [-1, 1] make cube positions
        # directly readable by the first layer (localisation is what the head needs most)
        self.stem = nn.Sequential(nn.Conv2d(5, ch[0], 5, stride=2, padding=2), nn.GELU())
        lin = torch.linspace(-1.0, 1.0, cfg.image_size)
        yy, xx = torch.meshgrid(lin, lin, indexing="ij")
        self.register_buffer("coords", torch.stack([xx, yy])[None], persistent=False)
        blocks, cin = [], ch[0]
        for c in ch[1:] + [cfg.d_model]:
            blocks.append(FiLMConvBlock(cin, c, cfg.d_model))
            cin = c
        self.blocks = nn.ModuleList(blocks)
        side = cfg.image_size
        for _ in range(len(ch)):  # stem + len(ch)-1 blocks + final block: len(ch)+1 halvings
            side = (side + 1) // 2
        side = (side + 1) // 2
        self.n_tokens = side * side
        self.pos = nn.Parameter(torch.randn(1, self.n_tokens, cfg.d_model) * 0.02)
        # Spatial softmax (Levine et al. 2016) on the instruction-modulated 1/4-resolution map:
        # K expected image coordinates, each one token. They carry *where* things are at
        # sub-cell precision, which the coarse token grid does not.
        self.k = int(cfg.keypoints)
        if self.k > 0:
            kp_side = (cfg.image_size + 1) // 2
            kp_side = (kp_side + 1) // 2
            self.kp_conv = nn.Conv2d(ch[1] if len(ch) > 1 else cfg.d_model, self.k, 1)
            self.kp_temp = nn.Parameter(torch.zeros(1))
            lin = torch.linspace(-1.0, 1.0, kp_side)
            yy, xx = torch.meshgrid(lin, lin, indexing="ij")
            self.register_buffer("kp_grid", torch.stack([xx.flatten(), yy.flatten()], -1), persistent=False)
            self.kp_proj = nn.Linear(2, cfg.d_model)
            self.kp_emb = nn.Parameter(torch.randn(1, self.k, cfg.d_model) * 0.02)
            self.n_tokens += self.k

    def keypoints(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) feature map -> (B, K, 2) expected (x, y) in [-1, 1]."""
        logits = self.kp_conv(x).flatten(2) * torch.exp(self.kp_temp)  # (B, K, h*w)
        return torch.softmax(logits, dim=-1) @ self.kp_grid

    def forward(self, img: torch.Tensor, lang_tok: torch.Tensor) -> torch.Tensor:
        x = self.stem(torch.cat([img, self.coords.expand(img.shape[0], -1, -1, -1)], dim=1))
        kp = None
        for i, b in enumerate(self.blocks):
            x = b(x, lang_tok)
            if i == 0 and self.k > 0:
                kp = self.kp_proj(self.keypoints(x)) + self.kp_emb
        grid = x.flatten(2).transpose(1, 2) + self.pos[:, : x.shape[2] * x.shape[3]]
        return grid if kp is None else torch.cat([grid, kp], dim=1)


def _encoder_layer(cfg: PolicyConfig) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        cfg.d_model, cfg.n_heads, cfg.ff_mult * cfg.d_model, cfg.dropout,
        activation="gelu", batch_first=True, norm_first=True,
    )


class ActionHead(nn.Module):
    """Bidirectional per-token encoder over H action queries attending to the prefix."""

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(1, cfg.horizon, cfg.d_model) * 0.02)
        layer = nn.TransformerDecoderLayer(
            cfg.d_model, cfg.n_heads, cfg.ff_mult * cfg.d_model, cfg.dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.decoder = nn.TransformerDecoder(layer, cfg.head_layers)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.action_dim)
        nn.init.zeros_(self.out.bias)
        nn.init.normal_(self.out.weight, std=0.01)

    def forward(self, prefix: torch.Tensor) -> torch.Tensor:
        q = self.queries.expand(prefix.shape[0], -1, -1)
        return self.out(self.norm(self.decoder(q, prefix)))  # no tgt_mask: bidirectional


class AuxHead(nn.Module):
    """Training-only read-out of privileged scene quantities (the instructed cube's position, the
    goal, every object's position) from the prefix tokens by one attention-pooling query. Its loss
    makes the backbone localise the *instructed* object — the grounding the action head needs; it
    plays no part in :meth:`VLAPolicy.forward` (nor in the ONNX graph)."""

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, cfg.d_model) * 0.02)
        self.attn = nn.MultiheadAttention(cfg.d_model, cfg.n_heads, batch_first=True)
        self.mlp = nn.Sequential(nn.LayerNorm(cfg.d_model), nn.Linear(cfg.d_model, cfg.d_model), nn.GELU(),
                                 nn.Linear(cfg.d_model, cfg.aux_dim))

    def forward(self, prefix: torch.Tensor) -> torch.Tensor:
        pooled, _ = self.attn(self.query.expand(prefix.shape[0], -1, -1), prefix, prefix, need_weights=False)
        return self.mlp(pooled[:, 0])


class VLAPolicy(nn.Module):
    def __init__(self, cfg: PolicyConfig, norm: Normalization | None = None):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.lang_proj = nn.Sequential(nn.Linear(cfg.lang_dim, d), nn.GELU(), nn.Linear(d, d))
        self.state_proj = nn.Linear(cfg.state_dim, d)
        self.vision = nn.ModuleList(VisionEncoder(cfg) for _ in cfg.cameras)
        self.type_emb = nn.Parameter(torch.zeros(1, 2 + len(cfg.cameras), d))
        self.prefix_encoder = nn.TransformerEncoder(
            _encoder_layer(cfg), cfg.prefix_layers, enable_nested_tensor=False
        )
        self.prefix_norm = nn.LayerNorm(d)
        self.head = ActionHead(cfg)
        self.aux = AuxHead(cfg) if cfg.aux_dim > 0 else None
        n = norm or Normalization(
            [0.0] * cfg.state_dim, [1.0] * cfg.state_dim, [0.0] * cfg.action_dim, [1.0] * cfg.action_dim
        )
        n.validate(cfg)
        self.norm = n
        self.register_buffer("state_mean", torch.tensor(n.state_mean, dtype=torch.float32))
        self.register_buffer("state_std", torch.tensor(n.state_std, dtype=torch.float32))
        self.register_buffer("delta_mean", torch.tensor(n.delta_mean, dtype=torch.float32))
        self.register_buffer("delta_std", torch.tensor(n.delta_std, dtype=torch.float32))
        self.register_buffer("img_mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("img_std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    # ----------------------------------------------------------------- parts
    def backbone_modules(self) -> list[nn.Module]:
        return [self.lang_proj, self.state_proj, self.vision, self.prefix_encoder, self.prefix_norm]

    def backbone_parameters(self):
        yield self.type_emb
        for m in self.backbone_modules():
            yield from m.parameters()

    def head_parameters(self):
        return self.head.parameters()

    def set_normalization(self, n: Normalization) -> None:
        n.validate(self.cfg)
        self.norm = n
        for name in ("state_mean", "state_std", "delta_mean", "delta_std"):
            getattr(self, name).copy_(torch.tensor(getattr(n, name), dtype=torch.float32))

    # ----------------------------------------------------------------- forward
    def prefix(self, images: torch.Tensor, state: torch.Tensor, lang: torch.Tensor) -> torch.Tensor:
        """images uint8 (B, C, H, W, 3); state (B, S) raw; lang (B, L) -> prefix tokens (B, T, d)."""
        lang_tok = self.lang_proj(lang)
        s = (state - self.state_mean) / self.state_std
        tokens = [lang_tok[:, None] + self.type_emb[:, 0:1], self.state_proj(s)[:, None] + self.type_emb[:, 1:2]]
        imgs = images.to(torch.float32) / 255.0
        for i, enc in enumerate(self.vision):
            x = imgs[:, i].permute(0, 3, 1, 2)
            x = (x - self.img_mean) / self.img_std
            tokens.append(enc(x, lang_tok) + self.type_emb[:, 2 + i : 3 + i])
        return self.prefix_norm(self.prefix_encoder(torch.cat(tokens, dim=1)))

    def features(self, images, state, lang) -> torch.Tensor:
        """Pooled backbone features (B, 2d) for value functions and world models."""
        p = self.prefix(images, state, lang)
        return torch.cat([p[:, 0], p[:, 2:].mean(dim=1)], dim=-1)

    def normalized_delta(self, images, state, lang) -> torch.Tensor:
        return self.head(self.prefix(images, state, lang))

    def forward(self, images: torch.Tensor, state: torch.Tensor, lang: torch.Tensor) -> torch.Tensor:
        """Raw inputs -> μ, raw joint targets (B, H, action_dim)."""
        delta = self.normalized_delta(images, state, lang) * self.delta_std + self.delta_mean
        return state[:, None, : self.cfg.action_dim] + delta
