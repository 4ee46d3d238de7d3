"""The adapter: any timm/torchvision residual network as an ElasticNet, decided by structure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stimulative.core.sampling import SamplingSpace, enumerate_subnets, parse_spec, sample_subnet
from stimulative.evaluation.walk import naive_subnet_logits, subnet_logits
from stimulative.models import create_model
from stimulative.models.adapter import AdapterError, adapt, has_identity_shortcut, parse_model_args
from stimulative.training.steps import training_step

timm = pytest.importorskip("timm")


# --- the structural rule, on hand-made blocks (no names involved) -----------------------


class Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn(self.conv(x)))


class PlainSameShape(nn.Module):  # keeps the shape, but has no shortcut at all
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class ProjectionShortcut(Residual):  # same shape, but the shortcut is a 1x1 convolution
    def __init__(self, c: int) -> None:
        super().__init__(c)
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return torch.relu(self.proj(x) + self.bn(self.conv(x)))


class Gated(Residual):  # x * gate(x): the input comes back halved when the branch is cut
    def forward(self, x):
        return x * torch.sigmoid(self.bn(self.conv(x)))


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.body = nn.Sequential(
            ProjectionShortcut(8), Residual(8), Gated(8), PlainSameShape(8), Residual(8), Residual(8)
        )
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.body(self.stem(x)).mean((2, 3)))


def test_identity_shortcut_is_decided_by_structure_not_shape():
    x = torch.rand(2, 8, 6, 6) + 0.1
    assert has_identity_shortcut(Residual(8).eval(), x)
    for block in (PlainSameShape(8), ProjectionShortcut(8), Gated(8)):
        assert not has_identity_shortcut(block.eval(), x), type(block).__name__


def test_toy_model_stages_open_at_shape_changing_or_shortcut_less_blocks():
    torch.manual_seed(0)
    model = Toy()
    net = adapt(model, torch.randn(2, 1, 8, 8))
    # stage boundaries at the non-skippable blocks; consecutive ones run as one
    assert net.architecture.skippable == ((False, True), (False, True, True))
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(net.eval()(x), model.eval()(x), atol=1e-5)


class InnerResidual(nn.Module):  # x + g(x) nested inside a block (as ConvNeXt-V2's GRN)
    def __init__(self, c: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(c, 1, 1))

    def forward(self, x):
        return x + self.scale * x


class OuterBlock(nn.Module):  # its shortcut is not a chain of its children
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv, self.inner, self.bn = nn.Conv2d(c, c, 3, padding=1), InnerResidual(c), nn.BatchNorm2d(c)

    def forward(self, x):
        return x + self.bn(self.inner(self.conv(x)))


class Stage(nn.Module):  # iterates a ModuleList (never called itself) after a downsampling
    def __init__(self, cin: int, c: int, n: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(cin, c, 2, stride=2)
        self.blocks = nn.ModuleList(OuterBlock(c) for _ in range(n))

    def forward(self, x):
        x = self.down(x)
        for block in self.blocks:
            x = block(x)
        return x


def test_blocks_in_module_lists_and_nested_residuals():
    torch.manual_seed(0)
    model = nn.Sequential(Stage(1, 8, 2), Stage(8, 16, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    net = adapt(model, torch.randn(2, 1, 8, 8))
    # the first downsampling is the stem, the next opens stage 1; the outer blocks are the
    # blocks, not their inner residuals
    assert net.architecture.skippable == ((True, True), (False, True, True, True))
    assert isinstance(net.block(1, 2).module, OuterBlock)


def test_model_without_residual_blocks_is_refused():
    plain = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.Flatten(), nn.LazyLinear(10)
    )
    plain(torch.randn(1, 1, 8, 8))
    with pytest.raises(AdapterError, match="no skippable residual block"):
        adapt(plain, torch.randn(2, 1, 8, 8))
    with pytest.raises(AdapterError, match="no skippable residual block"):
        create_model("torchvision:vgg11", num_classes=10, in_chans=1, image_size=32)


def test_unknown_names_fail_clearly():
    with pytest.raises(ValueError, match="unknown timm model"):
        create_model("timm:not_a_model_xyz")
    with pytest.raises(ValueError, match="unknown torchvision model"):
        create_model("torchvision:not_a_model_xyz")


def test_model_args_parse():
    assert parse_model_args("drop_path_rate=0.1, dynamic_img_size=True,act=gelu") == {
        "drop_path_rate": 0.1,
        "dynamic_img_size": True,
        "act": "gelu",
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_model_args("oops")


# --- real families -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, stages, skippable",
    [
        ("timm:resnet18", (2, 2, 2, 2), (2, 1, 1, 1)),
        ("torchvision:resnet18", (2, 2, 2, 2), (2, 1, 1, 1)),
        ("timm:vit_tiny_patch16_224", (12,), (12,)),
    ],
)
def test_families_reproduce_the_original_and_run_subnets(name, stages, skippable):
    torch.manual_seed(0)
    net = create_model(name, num_classes=10, in_chans=1, image_size=32)
    arch = net.architecture
    assert arch.stage_sizes == stages
    assert tuple(sum(s) for s in arch.skippable) == skippable
    space = SamplingSpace.default(arch)
    spec = sample_subnet(space, arch, "ordered", torch.Generator().manual_seed(1))
    x = torch.randn(2, 1, 32, 32)
    net.eval()
    with torch.no_grad():
        assert net(x, spec).shape == (2, 10)


def test_vit_head_holds_final_norm_and_pooling():
    net = create_model("timm:vit_tiny_patch16_224", num_classes=10, in_chans=1, image_size=32)
    head_modules = {type(m).__name__ for m in net.head.modules()}
    assert "LayerNorm" in head_modules and "Linear" in head_modules
    h = net.stem(torch.randn(2, 1, 32, 32))
    assert h.shape == (2, 5, 192)  # (B, 1 class token + 4 patches, C): tokens go into the blocks


def test_shared_walk_equals_naive_on_an_adapted_model():
    torch.manual_seed(0)
    net = create_model("timm:resnet18", num_classes=10, in_chans=1, image_size=16)
    arch = net.architecture
    specs = list(enumerate_subnets(SamplingSpace.default(arch), arch))[:6] + [parse_spec("0.1r/0/0/0")]
    calib = [torch.randn(8, 1, 16, 16)]
    x = torch.randn(4, 1, 16, 16)
    got = {}
    for _, idx, logits in subnet_logits(net, specs, [x], calib, "subnet"):
        for i in idx:
            got[i] = logits
    for i, spec in enumerate(specs):
        want = naive_subnet_logits(net, spec, [x], calib, "subnet")[0]
        assert torch.allclose(got[i], want, atol=1e-4), spec


def test_raw_path_is_the_block_minus_its_input():
    net = create_model("timm:resnet18", num_classes=10, in_chans=1, image_size=16).eval()
    block = net.block(0, 1)
    x = torch.rand(2, 64, 4, 4)
    with torch.no_grad():
        assert torch.allclose(block.run(x, "branch") + x, block(x), atol=1e-6)


def test_training_step_on_an_adapted_model_updates_weights():
    torch.manual_seed(0)
    net = create_model("timm:resnet18", num_classes=10, in_chans=1, image_size=16)
    arch = net.architecture
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(8, 1, 16, 16), torch.randint(10, (8,))
    spec = sample_subnet(SamplingSpace.default(arch), arch, "ordered", torch.Generator().manual_seed(0))
    before = net.head[-1].weight.clone() if isinstance(net.head, nn.Sequential) else next(net.head.parameters()).clone()
    out = training_step(net.train(), x, y, [spec], 1.0)
    out.loss.backward()
    opt.step()
    after = net.head[-1].weight if isinstance(net.head, nn.Sequential) else next(net.head.parameters())
    assert torch.isfinite(out.loss) and not torch.equal(before, after)


def test_pretrained_file_loads_with_new_classes_and_input_channels(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    src = timm.create_model("resnet18", pretrained=False, num_classes=1000, in_chans=3)
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    notes = []
    net = create_model(
        "timm:resnet18", num_classes=10, in_chans=1, image_size=16, pretrained_file=str(path), log=notes.append
    )
    assert any("classes" in n for n in notes) and any("input convolution" in n for n in notes)
    stem_conv = next(m for m in net.stem.modules() if isinstance(m, nn.Conv2d))
    assert torch.allclose(stem_conv.weight, src.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(net.block(3, 1).module.conv2.weight, src.layer4[1].conv2.weight)
    with pytest.raises(ValueError, match="does not fit"):
        create_model("timm:resnet34", num_classes=10, in_chans=1, image_size=16, pretrained_file=str(path))


# --- every family, end to end (slow: `pytest -m slow tests/test_adapter.py -k round_trip`) ---

FAMILIES = [
    "timm:resnet18",
    "timm:resnet50d",
    "timm:seresnext26d_32x4d",
    "timm:resnetv2_50",
    "timm:nfnet_f0",
    "timm:mobilenetv3_small_100",
    "timm:mobilenetv3_large_100",
    "timm:efficientnet_b0",
    "timm:efficientnetv2_rw_t",
    "timm:mnasnet_100",
    "timm:tinynet_e",
    "timm:ghostnet_100",
    "timm:regnetx_002",
    "timm:regnety_002",
    "timm:convnext_atto",
    "timm:convnextv2_atto",
    "timm:edgenext_xx_small",
    "timm:poolformer_s12",
    "timm:fastvit_t8",
    "timm:focalnet_tiny_srf",
    "timm:swin_tiny_patch4_window7_224",
    "timm:vit_tiny_patch16_224",
    "timm:deit_tiny_distilled_patch16_224",
    "timm:cait_xxs24_224",
    "timm:mixer_s16_224",
    "timm:resmlp_12_224",
    "timm:levit_128s",
    "timm:coatnet_0_rw_224",
    "timm:maxvit_tiny_tf_224",
    "timm:mobilevit_xxs",
    "torchvision:resnet18",
    "torchvision:resnet50",
    "torchvision:resnext50_32x4d",
    "torchvision:wide_resnet50_2",
    "torchvision:mobilenet_v2",
    "torchvision:mobilenet_v3_small",
    "torchvision:mobilenet_v3_large",
    "torchvision:efficientnet_b0",
    "torchvision:efficientnet_v2_s",
    "torchvision:mnasnet0_5",
    "torchvision:regnet_x_400mf",
    "torchvision:regnet_y_400mf",
    "torchvision:convnext_tiny",
    "torchvision:vit_b_16",
    "torchvision:swin_t",
    "torchvision:swin_v2_t",
]
REFUSED = [
    "timm:vgg11",
    "timm:rexnet_100",
    "timm:repvgg_a0",
    "timm:densenet121",
    "timm:eva02_tiny_patch14_224",
    "timm:dla34",
    "timm:hrnet_w18_small",
    "timm:cspresnet50",
    "torchvision:shufflenet_v2_x0_5",
    "torchvision:googlenet",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_family_round_trip(name, tmp_path):
    """Adapt (1 channel, 32x32 digits), two ST steps, export a sampled sub-network standalone,
    and compare it with the sub-network inside the full model."""
    from safetensors.torch import save_file

    from stimulative.data import load_data
    from stimulative.tools.export import export_program, load_standalone, prepare_subnet, standalone_source

    data = load_data("digits", resize=32)
    x_all, y_all = data.train.tensors
    torch.manual_seed(0)
    net = create_model(name, num_classes=10, in_chans=1, image_size=32, log=lambda _: None)
    arch = net.architecture
    space = SamplingSpace.default(arch)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    net.train()
    for step in range(2):
        spec = sample_subnet(space, arch, "ordered", torch.Generator().manual_seed(step))
        out = training_step(net, x_all[8 * step : 8 * step + 8], y_all[8 * step : 8 * step + 8], [spec], 1.0)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert torch.isfinite(out.loss)
    net.eval()
    spec = sample_subnet(space, arch, "ordered", torch.Generator().manual_seed(7))
    calib, x = [x_all[:32]], data.test.tensors[0][:16]
    sub = prepare_subnet(net, spec, "subnet", calib)
    program, _ = export_program(sub, x[:2])
    source, tensors = standalone_source(program, name, "model.safetensors")
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "model.py").write_text(source)
    with torch.no_grad():
        got = load_standalone(str(tmp_path / "model.py"))(x)
    want = naive_subnet_logits(net, spec, [x], calib, "subnet")[0]
    assert torch.allclose(got, want, atol=1e-3 * max(1.0, float(want.abs().max()))), spec


@pytest.mark.slow
@pytest.mark.parametrize("name", REFUSED)
def test_family_without_usable_residual_blocks_is_refused(name):
    with pytest.raises(AdapterError):
        create_model(name, num_classes=10, in_chans=1, image_size=32, log=lambda _: None)
