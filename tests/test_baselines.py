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
