"""ditask_mm.apis: init_model with every kind of checkpoint, and inference_model on paths and arrays.

A tiny DiTASK Swin (``tests/test_tools/cli_utils.py``) starts from a local
"pretrained" file in the official Swin format; its trainable parameters and
head statistics are then perturbed in-process (a stand-in for training), and
the full, adapter-only and merged checkpoints are written from it.
"""
import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from ditask_mm.apis import inference_model, init_model
from ditask_mm.apis.checkpoint_export import adapter_only_checkpoint, merged_checkpoints
from ditask_mm.models.checkpoint_fit import CheckpointMismatchError
from ditask_mm.models.checkpoint_file import CheckpointReadError
from ditask_mm.tasks import TASKS

from ..test_models.test_backbones.swin_checkpoints import SwinArch, make_official_checkpoint
from ..test_tools.cli_utils import TINY_ARCH, tiny_config

IMAGE_HW = (50, 70)  # not the pipeline's 64 × 64: predictions must come back at this size


def scene(height: int, width: int, seed: int) -> np.ndarray:
    """A BGR uint8 image with gradients and a disc (structure the heads respond to)."""
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([xx * 3 + seed, yy * 4, 255 - xx * 3], -1).clip(0, 255).astype(np.uint8)
    cv2.circle(image, (width // 2, height // 2), min(height, width) // 4, (0, 0, 255), -1)
    return image


def predictions(sample) -> dict:
    """``{pred field: tensor}`` of every task prediction a sample holds."""
    return {spec.pred_key: sample.get(spec.pred_key).data for spec in TASKS.values() if spec.pred_key in sample}


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp('apis')
    pretrained = root / 'swin_nano_official.pth'
    torch.save(make_official_checkpoint(SwinArch(**TINY_ARCH), seed=3), pretrained)
    config = tiny_config(root / 'tiny.py', root / 'no_data', pretrained)
    model = init_model(config)  # the pretrained backbone, default heads and θ
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():  # "training": every trainable tensor and the heads' statistics move
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=g))
        for name, buf in model.named_buffers():
            if name.endswith(('running_mean', 'running_var')):
                buf.add_(0.3 * torch.rand(buf.shape, generator=g))
    full = root / 'full.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {'epoch': 1}}, full)
    adapters = root / 'adapters.pth'
    torch.save(adapter_only_checkpoint(config, str(full))[0], adapters)
    merged = root / 'merged.pth'
    torch.save(merged_checkpoints(config, str(full)).merged, merged)
    image_path = root / 'scene.png'
    cv2.imwrite(str(image_path), scene(*IMAGE_HW, seed=0))
    return dict(root=root, config=config, full=full, adapters=adapters, merged=merged, image=image_path)


@pytest.fixture(scope='module')
def full_model(checkpoints):
    return init_model(checkpoints['config'], str(checkpoints['full']))


def test_full_adapter_only_and_merged_checkpoints_predict_the_same(checkpoints, full_model):
    images = [str(checkpoints['image']), scene(40, 90, seed=9)]
    expected = [predictions(s) for s in inference_model(full_model, images)]
    adapter_model = init_model(checkpoints['config'], str(checkpoints['adapters']))
    merged_model = init_model(checkpoints['config'], str(checkpoints['merged']))
    assert type(merged_model.backbone.stages[0].blocks[0].attn.w_msa.qkv).__name__ == 'MergedTaskLinear'
    for name, model in (('adapter-only', adapter_model), ('merged', merged_model)):
        for want, got in zip(expected, (predictions(s) for s in inference_model(model, images))):
            assert want.keys() == got.keys()
            for key in want:
                if want[key].is_floating_point():
                    torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-5, msg=f'{name} {key}')
                else:
                    assert (got[key] == want[key]).float().mean() > 0.999, (name, key)
    # the checkpoint matters: the untrained model (pretrained backbone, default θ and heads) predicts otherwise
    untrained = predictions(inference_model(init_model(checkpoints['config']), images[0]))
    assert not torch.allclose(untrained['pred_normals'], expected[0]['pred_normals'], atol=1e-3)


def test_adapter_only_and_full_are_bit_identical(checkpoints, full_model):
    adapter_model = init_model(checkpoints['config'], str(checkpoints['adapters']))
    want = predictions(inference_model(full_model, str(checkpoints['image'])))
    got = predictions(inference_model(adapter_model, str(checkpoints['image'])))
    assert all(torch.equal(got[key], want[key]) for key in want)


def test_every_task_is_predicted_at_the_original_size(checkpoints, full_model):
    sample = inference_model(full_model, str(checkpoints['image']))
    assert tuple(sample.ori_shape) == IMAGE_HW and tuple(sample.img_shape) == (64, 64)  # the pipeline's size
    fields = predictions(sample)
    assert set(fields) == {TASKS[t].pred_key for t in full_model.tasks} and len(fields) == 4
    for key, value in fields.items():
        assert tuple(value.shape[-2:]) == IMAGE_HW, key
    assert fields['pred_normals'].shape[0] == 3
    assert int(fields['pred_sem_seg'].max()) < 21 and int(fields['pred_human_parts'].max()) < 7
    resized = inference_model(full_model, str(checkpoints['image']), size=(32, 48))
    assert tuple(resized.img_shape) == (32, 48) and tuple(resized.pred_sem_seg.data.shape[-2:]) == IMAGE_HW


def test_a_path_and_the_same_array_agree_and_lists_give_lists(checkpoints, full_model):
    path = str(checkpoints['image'])
    from_path = inference_model(full_model, path)
    from_array = inference_model(full_model, cv2.imread(path, cv2.IMREAD_COLOR))
    assert from_path.img_path == path
    for key, value in predictions(from_path).items():
        assert torch.equal(predictions(from_array)[key], value), key
    batch = inference_model(full_model, [path, path])
    assert isinstance(batch, list) and len(batch) == 2
    assert torch.equal(batch[1].pred_normals.data, from_path.pred_normals.data)


def test_init_model_applies_cfg_options_and_leaves_a_config_object_alone(checkpoints):
    cfg = Config.fromfile(str(checkpoints['config']))
    model = init_model(cfg, init_weights=False, cfg_options={'model.backbone.drop_path_rate': 0.25})
    assert model.cfg.model.backbone.drop_path_rate == 0.25 and cfg.model.backbone.drop_path_rate != 0.25
    assert not model.training and model.cfg is not cfg
    with pytest.raises(CheckpointMismatchError, match='theta_shared'):  # options apply before the model is built
        init_model(cfg, str(checkpoints['full']), cfg_options={'model.backbone.adapter.tessellation_size': 16})


def test_init_weights_loads_the_pretrained_backbone_only_when_asked(checkpoints):
    pretrained = torch.load(checkpoints['root'] / 'swin_nano_official.pth', weights_only=False)['model']
    key = 'layers.0.blocks.0.attn.qkv.weight'
    loaded = init_model(checkpoints['config']).backbone.stages[0].blocks[0].attn.w_msa.qkv.weight
    default = init_model(checkpoints['config'], init_weights=False).backbone.stages[0].blocks[0].attn.w_msa.qkv.weight
    assert torch.equal(loaded, pretrained[key]) and not torch.equal(default, pretrained[key])


def test_clear_errors(checkpoints, full_model, tmp_path):
    missing_config = tmp_path / 'nope.py'
    with pytest.raises(FileNotFoundError, match=f'config file {missing_config} does not exist'):
        init_model(missing_config)
    with pytest.raises(CheckpointReadError, match=f'checkpoint {tmp_path / "gone.pth"} does not exist'):
        init_model(checkpoints['config'], str(tmp_path / 'gone.pth'))
    with pytest.raises(FileNotFoundError, match=f'image {tmp_path / "missing.png"} does not exist'):
        inference_model(full_model, [str(checkpoints['image']), str(tmp_path / 'missing.png')])
    not_an_image = tmp_path / 'notes.png'
    not_an_image.write_text('not an image')
    with pytest.raises(ValueError, match=f'cannot read image {not_an_image}'):
        inference_model(full_model, str(not_an_image))
    with pytest.raises(ValueError, match=r'H×W×3 BGR uint8.*\(50, 70\).*float32'):
        inference_model(full_model, np.zeros((50, 70), np.float32))
    bare = init_model(checkpoints['config'], init_weights=False)
    del bare.cfg
    with pytest.raises(ValueError, match='needs model.cfg'):
        inference_model(bare, str(checkpoints['image']))
