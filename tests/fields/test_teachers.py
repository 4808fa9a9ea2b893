"""CLIP and SAM teachers on tiny random-weight models built in code (no downloads)."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

open_clip = pytest.importorskip("open_clip")
segment_anything = pytest.importorskip("segment_anything")

from fields import Camera  # noqa: E402
from fields.features._clip import (  # noqa: E402
    ClipTeacher,
    MissingWeightsError,
    _resize_pos_embed,
    pool_in_masks,
)
from fields.features._sam import SamDecoder, SamTeacher, image_grid  # noqa: E402
from fields.features._teacher import TEACHERS, teacher_key  # noqa: E402

TINY_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def tiny_clip(seed: int = 0, **vision: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    vision_cfg = {**TINY_CLIP_CFG["vision_cfg"], **vision}
    model = open_clip.CLIP(
        embed_dim=TINY_CLIP_CFG["embed_dim"],
        vision_cfg=vision_cfg,
        text_cfg=TINY_CLIP_CFG["text_cfg"],
    )
    # open_clip leaves biases and LayerNorms at identity/zero; randomise them so a test can
    # tell a LayerNorm or bias that was skipped or applied twice.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def clip_teacher(model: torch.nn.Module | None = None, **kwargs: object) -> ClipTeacher:
    return ClipTeacher.from_model(
        model if model is not None else tiny_clip(),
        mean=open_clip.OPENAI_DATASET_MEAN,
        std=open_clip.OPENAI_DATASET_STD,
        tokenizer=open_clip.tokenizer.SimpleTokenizer(context_length=16),
        **kwargs,
    )


def reference_dense(model: torch.nn.Module, pixels: torch.Tensor, residual: bool = False):
    """MaskCLIP's last block written out op by op, at the model's native grid."""
    v = model.visual
    x = F.conv2d(pixels, v.conv1.weight, stride=v.patch_size)
    b, c, gh, gw = x.shape
    x = x.reshape(b, c, gh * gw).permute(0, 2, 1)
    x = torch.cat([v.class_embedding.expand(b, 1, c), x], dim=1) + v.positional_embedding
    x = F.layer_norm(x, (c,), v.ln_pre.weight, v.ln_pre.bias)
    for block in v.transformer.resblocks[:-1]:
        x = block(x)
    last = v.transformer.resblocks[-1]
    y = F.layer_norm(x, (c,), last.ln_1.weight, last.ln_1.bias)
    _, _, w_v = last.attn.in_proj_weight.chunk(3, dim=0)
    _, _, b_v = last.attn.in_proj_bias.chunk(3, dim=0)
    out = (y @ w_v.T + b_v) @ last.attn.out_proj.weight.T + last.attn.out_proj.bias
    if residual:
        out = x + out
        hidden = F.layer_norm(out, (c,), last.ln_2.weight, last.ln_2.bias)
        out = out + last.mlp.c_proj(F.gelu(last.mlp.c_fc(hidden)))
    out = F.layer_norm(out[:, 1:], (c,), v.ln_post.weight, v.ln_post.bias) @ v.proj
    return F.normalize(out.reshape(b, gh, gw, -1), dim=-1)


# ---------------------------------------------------------------------------------- CLIP
def test_clip_shapes_and_unit_length():
    teacher = clip_teacher()
    image = torch.rand(24, 40, 3)
    fmap = teacher(image, "view")
    # short side to the native 32, long side 53.3 -> rounded to 7 patches of 8
    assert fmap.shape == (4, 7, 16) and fmap.dtype == torch.float32
    assert torch.allclose(fmap.norm(dim=-1), torch.ones(4, 7), atol=1e-5)
    assert clip_teacher(image_size=(48, 16))(image).shape == (6, 2, 16)
    assert clip_teacher(image_size=16)(image).shape == (2, 3, 16)
    assert teacher.dim == 16 and teacher.space == "clip"


@pytest.mark.parametrize("residual", [False, True])
def test_clip_dense_path_matches_step_by_step_reference(residual):
    model = tiny_clip()
    teacher = clip_teacher(model, residual=residual)
    image = torch.rand(32, 32, 3)
    pixels = teacher.preprocess(image)
    expected = reference_dense(model, pixels, residual=residual)[0]
    assert torch.allclose(teacher(image), expected, atol=1e-5)

    # The same model with ordinary attention in the last block is a different map: the test
    # above would catch a path that ran the block as usual.
    with torch.no_grad():
        x = model.visual._embeds(pixels)
        x = model.visual.transformer(x)
        usual = F.normalize(model.visual.ln_post(x[:, 1:]) @ model.visual.proj, dim=-1)
    assert not torch.allclose(usual.reshape(expected.shape), expected, atol=1e-3)


def test_clip_last_block_does_not_mix_patches():
    """The true locality property: a change of one token entering the last block changes only
    that patch's feature (all earlier blocks do mix, so a uniform image is *not* uniform)."""
    model = tiny_clip()
    teacher = clip_teacher(model)
    image = torch.rand(32, 32, 3)
    base = teacher(image)

    kick = torch.randn(64)  # not a constant: LayerNorm would remove that

    def poke(module, inputs, output):
        output = output.clone()
        output[:, 1 + 5] += kick  # patch 5 = row 1, col 1 of the 4x4 grid
        return output

    handle = model.visual.transformer.resblocks[-2].register_forward_hook(poke)
    try:
        poked = teacher(image)
    finally:
        handle.remove()
    changed = (poked - base).abs().amax(dim=-1) > 1e-6
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1, 1] = True
    assert torch.equal(changed, expected)

    # Positional embeddings are what tells patches apart: without them a uniform image gives
    # one feature everywhere.
    with torch.no_grad():
        model.visual.positional_embedding.zero_()
    fmap = clip_teacher(model)(torch.full((32, 32, 3), 0.3))
    assert torch.allclose(fmap, fmap[:1, :1].expand_as(fmap), atol=1e-5)


def test_clip_positional_embedding_resize_matches_open_clip():
    small, big = tiny_clip(image_size=32), tiny_clip(seed=1, image_size=48)
    state = {"visual.positional_embedding": small.visual.positional_embedding.detach().clone()}
    open_clip.model.resize_pos_embed(state, big)
    ours = _resize_pos_embed(small.visual.positional_embedding.detach(), (4, 4), (6, 6))
    assert torch.allclose(ours, state["visual.positional_embedding"], atol=1e-6)
    # non-square grids keep the class token and give one row per patch
    assert _resize_pos_embed(small.visual.positional_embedding, (4, 4), (3, 5)).shape == (16, 64)


def test_clip_text_embeddings():
    teacher = clip_teacher()
    text = teacher.encode_text(["mug", "table", "chair"])
    assert text.shape == (3, 16)
    assert torch.allclose(text.norm(dim=-1), torch.ones(3), atol=1e-5)
    raw = teacher.encode_text(["a photo of a mug."], template=None)
    assert torch.allclose(raw[0], text[0], atol=1e-6)


def test_pool_in_masks():
    fmap = F.normalize(torch.randn(4, 4, 8), dim=-1)
    masks = torch.zeros(3, 32, 32, dtype=torch.bool)
    masks[0, 8:16, 16:24] = True  # exactly patch (1, 2)
    masks[1, :16, :16] = True  # patches (0..1, 0..1)
    pooled = pool_in_masks(fmap, masks)
    assert torch.allclose(pooled[0], fmap[1, 2], atol=1e-6)
    assert torch.allclose(pooled[1], F.normalize(fmap[:2, :2].sum((0, 1)), dim=0), atol=1e-6)
    assert torch.isnan(pooled[2]).all()


def test_clip_config_identifies_weights():
    a, b = clip_teacher(tiny_clip(0)), clip_teacher(tiny_clip(1))
    assert json.dumps(a.config())  # JSON-serialisable
    assert teacher_key(a) != teacher_key(b)
    assert teacher_key(a) == teacher_key(clip_teacher(tiny_clip(0)))
    assert teacher_key(a) != teacher_key(clip_teacher(tiny_clip(0), residual=True))


def test_clip_loads_a_local_checkpoint_through_open_clip(tmp_path):
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "scenelab-tiny-clip.json").write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(config_dir)
    model = tiny_clip()
    weights = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), weights)

    teacher = ClipTeacher("scenelab-tiny-clip", weights)
    image = torch.rand(32, 32, 3)
    assert torch.allclose(teacher(image), clip_teacher(model)(image), atol=1e-5)
    assert teacher.config()["weights"]["pretrained"] == weights.name
    assert "stamp" in teacher.config()["weights"]

    foreign = tmp_path / "other_model.bin"
    torch.save({"visual.proj": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match=r"other_model\.bin"):
        ClipTeacher("scenelab-tiny-clip", foreign)


def test_clip_missing_weights_errors_are_actionable(tmp_path, monkeypatch):
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # read at import time
    with pytest.raises(MissingWeightsError) as e:
        ClipTeacher("ViT-B-16", "laion2b_s34b_b88k", cache_dir=tmp_path)
    message = str(e.value)
    assert "--clip-pretrained" in message and "HF_HUB_OFFLINE" in message
    assert "https://huggingface.co/laion/CLIP-ViT-B-16-laion2B-s34B-b88K" in message

    with pytest.raises(ValueError, match="laion2b_s34b_b88k"):  # lists the real tags
        ClipTeacher("ViT-B-16", "no_such_tag", cache_dir=tmp_path)
    with pytest.raises(MissingWeightsError, match="--clip-pretrained"):
        ClipTeacher("ViT-B-16", tmp_path / "absent.bin")


# ---------------------------------------------------------------------------------- SAM
def tiny_sam(seed: int = 0):
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    torch.manual_seed(seed)
    img_size, patch, dim = 64, 16, 256
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=img_size,
            patch_size=patch,
            embed_dim=32,
            depth=1,
            num_heads=2,
            mlp_ratio=2,
            out_chans=dim,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=0,
            global_attn_indexes=(0,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(img_size // patch, img_size // patch),
            input_image_size=(img_size, img_size),
            mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=32, num_heads=2),
            transformer_dim=dim,
            iou_head_depth=1,
            iou_head_hidden_dim=16,
        ),
    )
    with torch.no_grad():  # zero-initialised parameters (rel-pos) would hide mistakes
        for p in sam.parameters():
            if not p.any():
                p.normal_(0, 0.1)
    return sam.eval()


@pytest.fixture
def sam_checkpoint(tmp_path, monkeypatch):
    sam = tiny_sam()
    path = tmp_path / "sam_tiny.pth"
    torch.save(sam.state_dict(), path)
    monkeypatch.setitem(
        segment_anything.sam_model_registry, "tiny", lambda checkpoint=None: tiny_sam(seed=1)
    )
    return sam, path


def image_u8(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_sam_teacher_loads_checkpoint_and_matches_sam_predictor(sam_checkpoint):
    sam, path = sam_checkpoint
    teacher = SamTeacher("tiny", path)
    assert teacher.dim == 256 and teacher.space == "sam" and teacher.grid == (4, 4)
    assert teacher.config()["weights"]["checkpoint"] == "sam_tiny.pth"

    pixels = image_u8(37, 64)  # not a multiple of the 16-pixel cells: exercises the resize
    predictor = segment_anything.SamPredictor(sam)
    predictor.set_image(pixels)
    image = torch.from_numpy(pixels).float() / 255
    embedding = teacher.embed(image)
    assert torch.allclose(embedding, predictor.features[0], atol=1e-5)

    # The map is the part of the 4x4 grid over the image: 37 of 64 rows -> 2.3 -> 2 cells.
    fmap = teacher(image, "view")
    assert fmap.shape == (2, 4, 256) and torch.isfinite(fmap).all()
    assert torch.allclose(fmap, predictor.features[0].permute(1, 2, 0)[:2], atol=1e-5)


@pytest.mark.parametrize("grid", [(4, 4), (64, 64)])
def test_teacher_maps_are_uniform_rescales_of_the_view(grid):
    """Distillation renders the view at `Camera.scaled(w / W)`: round(H * w / W) rows."""
    rng = np.random.default_rng(0)
    sizes = [(240, 320), (480, 640), (1080, 1920), (1000, 333), (333, 1000), (37, 64), (64, 37)]
    random_sizes = [tuple(int(v) for v in rng.integers(8, 2000, 2)) for _ in range(400)]
    sizes += [(h, w) for h, w in random_sizes if max(h, w) <= 3 * min(h, w)]
    clip = clip_teacher()
    for height, width in sizes:
        camera = Camera(torch.eye(3), torch.eye(4), width, height, "view")
        rows, cols = image_grid(height, width, grid)
        assert 1 <= rows <= grid[0] and 1 <= cols <= grid[1]
        scaled = camera.scaled(cols / width)
        assert (scaled.height, scaled.width) == (rows, cols), (height, width)
        assert max(rows, cols) >= max(grid) - 2  # at most a sliver of the image is dropped
        ch, cw = clip.input_size(height, width)
        gh, gw = ch // 8, cw // 8
        assert (ch % 8, cw % 8) == (0, 0)
        scaled = camera.scaled(gw / width)
        assert (scaled.height, scaled.width) == (gh, gw), (height, width)
        assert min(gh, gw) in (3, 4, 5)  # about the native 32 px = 4 patches on the short side


def test_sam_decoder_matches_sam_predictor_at_original_size(sam_checkpoint):
    sam, _ = sam_checkpoint
    pixels = image_u8(40, 64, seed=2)
    predictor = segment_anything.SamPredictor(sam)
    predictor.set_image(pixels)
    decoder = SamDecoder(sam)
    embedding = predictor.features[0]

    point = np.array([[50.0, 10.0]])
    masks, scores, _ = predictor.predict(point_coords=point, point_labels=np.array([1]))
    pred = decoder(embedding, (40, 64), points=point, labels=[1])
    assert pred.masks.shape == (3, 40, 64) and pred.masks.dtype == torch.bool
    assert torch.all(pred.scores[:-1] >= pred.scores[1:])  # best first
    order = np.argsort(-scores)
    assert np.array_equal(pred.masks.numpy(), masks[order])
    assert np.allclose(pred.scores.numpy(), scores[order], atol=1e-5)

    box = np.array([4.0, 2.0, 30.0, 35.0])
    points = np.array([[10.0, 10.0], [60.0, 30.0]])
    labels = np.array([1, 0])
    masks, scores, logits = predictor.predict(
        point_coords=points, point_labels=labels, box=box, multimask_output=False
    )
    pred = decoder(embedding, (40, 64), points=points, labels=labels, box=box)
    assert pred.masks.shape == (1, 40, 64)
    assert np.array_equal(pred.masks.numpy(), masks)
    assert np.allclose(pred.logits.numpy(), logits, atol=1e-4)


def test_sam_decoder_prompts_and_embeddings(sam_checkpoint):
    sam, _ = sam_checkpoint
    teacher = SamTeacher.from_model(sam)
    decoder = teacher.decoder()
    image = torch.rand(48, 64, 3)
    fmap = teacher(image)  # [3, 4, 256]: the image covers 3 of the 4 rows of cells
    assert fmap.shape == (3, 4, 256)

    # A rendered-and-decoded map arrives channel-first over the image's cells; it decodes as
    # the full grid with zeros (or NaN) in the padding row.
    valid = fmap.permute(2, 0, 1)
    full = torch.cat([valid, torch.full((256, 1, 4), torch.nan)], dim=1)
    corner = decoder(full, (48, 64), points=[[1, 1]], labels=[1])
    assert torch.equal(decoder(valid, (48, 64), points=[[1, 1]], labels=[1]).logits, corner.logits)
    centre = decoder(full, (48, 64), points=[[32, 20]], labels=[1])
    assert not torch.allclose(corner.logits, centre.logits)
    boxed = decoder(full, (48, 64), box=[0, 0, 20, 20])
    assert boxed.masks.shape == (1, 48, 64)
    single = decoder(full, (48, 64), points=[[1, 1]], labels=[1], multimask=False)
    assert single.masks.shape == (1, 48, 64)
    with pytest.raises(ValueError, match="prompt"):
        decoder(full, (48, 64))
    with pytest.raises(ValueError, match="grid"):
        decoder(full[:, :2], (48, 64), points=[[1, 1]], labels=[1])


def test_sam_missing_checkpoint_is_actionable(tmp_path):
    with pytest.raises(MissingWeightsError) as e:
        SamTeacher("vit_b", tmp_path / "sam_vit_b_01ec64.pth")
    message = str(e.value)
    assert "sam_vit_b_01ec64.pth" in message and "--sam-checkpoint" in message
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" in message
    with pytest.raises(MissingWeightsError, match="--sam-checkpoint"):
        SamTeacher("vit_b", None)
    with pytest.raises(ValueError, match="vit_h"):
        SamTeacher("vit_x", tmp_path / "x.pth")


def test_sam_checkpoint_must_fit_the_model_type(sam_checkpoint, tmp_path):
    wrong = tmp_path / "wrong.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match=r"wrong\.pth"):
        SamTeacher("tiny", wrong)


def test_teachers_are_registered():
    assert {"clip", "sam"} <= set(TEACHERS)


# ---------------------------------------------------------------------------------- offline
def _empty_hf_cache(tmp_path, monkeypatch, *, offline: bool):
    """An empty Hugging Face cache under `tmp_path`, with HF_HUB_OFFLINE set or cleared.
    huggingface_hub reads its environment at import time, so its constants are patched too."""
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    hub = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", offline)
    return hub


def _no_model_building(monkeypatch):
    """Missing weights must be found out before open_clip builds (seconds) or downloads."""

    def refuse(*args, **kwargs):
        raise AssertionError("open_clip was asked to build the model")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", refuse)


def test_clip_offline_without_cached_weights_fails_at_once(tmp_path, monkeypatch):
    import time

    from fields.features import _clip

    _empty_hf_cache(tmp_path, monkeypatch, offline=True)
    _no_model_building(monkeypatch)
    probes = []
    monkeypatch.setattr(_clip, "_host_reachable", lambda *a, **k: probes.append(a) or True)
    start = time.perf_counter()
    with pytest.raises(MissingWeightsError) as e:
        ClipTeacher("ViT-B-16", "laion2b_s34b_b88k")
    elapsed = time.perf_counter() - start
    assert elapsed < 10  # a hang guard only: ~0.01 s measured, ~40 s before the cache check
    message = str(e.value)
    assert "https://huggingface.co/laion/CLIP-ViT-B-16-laion2B-s34B-b88K" in message
    assert "--clip-pretrained" in message and "HF_HUB_OFFLINE is set" in message
    assert "open_clip_pytorch_model.bin" in message
    assert not probes  # offline means no network at all, not even the probe


def test_clip_unreachable_hub_fails_at_once(tmp_path, monkeypatch):
    import time

    from fields.features import _clip

    _empty_hf_cache(tmp_path, monkeypatch, offline=False)
    _no_model_building(monkeypatch)
    probes = []
    monkeypatch.setattr(_clip, "_host_reachable", lambda url, *a: probes.append(url) or False)
    start = time.perf_counter()
    with pytest.raises(MissingWeightsError) as e:
        ClipTeacher("ViT-B-16", "laion2b_s34b_b88k")
    assert time.perf_counter() - start < 10  # hang guard
    message = str(e.value)
    assert "huggingface.co did not answer" in message and "--clip-pretrained" in message
    assert probes == ["https://huggingface.co"]  # one probe, no retries
    # An hf-hub: model id takes the same path.
    with pytest.raises(MissingWeightsError, match="did not answer"):
        ClipTeacher("hf-hub:scenelab/no-such-clip")


def test_host_probe_is_bounded():
    """The probe answers within its timeout even where nothing listens (a closed local port)."""
    import socket
    import time

    from fields.features._clip import _host_reachable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    assert _host_reachable(f"http://127.0.0.1:{port}", timeout=1.0) is False
    assert time.perf_counter() - start < 5  # hang guard
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        assert _host_reachable(f"http://127.0.0.1:{server.getsockname()[1]}", timeout=1.0)


def test_clip_cached_hub_model_loads_without_network(tmp_path, monkeypatch):
    """A model in the cache loads with no request at all: the probe must not run and
    huggingface_hub runs in offline mode for the load (then back to what it was)."""
    from fields.features import _clip

    hub = _empty_hf_cache(tmp_path, monkeypatch, offline=False)
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = hub / "models--scenelab--tiny-clip"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    (snapshot / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG}))
    model = tiny_clip(seed=3)
    torch.save(model.state_dict(), snapshot / "open_clip_pytorch_model.bin")

    def no_probe(*args, **kwargs):
        raise AssertionError("a cached model must not probe the network")

    monkeypatch.setattr(_clip, "_host_reachable", no_probe)
    teacher = ClipTeacher("hf-hub:scenelab/tiny-clip")
    assert hub_constants.HF_HUB_OFFLINE is False  # restored
    ref = model.state_dict()
    for key, value in teacher.model.state_dict().items():
        assert torch.equal(value, ref[key]), key
    assert teacher.encode_text(["mug"]).shape == (1, TINY_CLIP_CFG["embed_dim"])
