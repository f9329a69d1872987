"""The paper's network: shape, linear head, save/load round trip, pretrained backbones, and no
pickle anywhere."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from spinefx.runtime import PreprocessConfig
from spinefx.train._torchvision_compat import import_torchvision
from spinefx.train.data import Augment, sample_generator
from spinefx.train.model import CLASSES, PretrainedError, SpineFxNet, load_model, load_pretrained

TRAIN_SRC = Path(__file__).resolve().parents[2] / "train"
S = 64


def _model(seed: int = 0) -> SpineFxNet:
    torch.manual_seed(seed)
    return SpineFxNet(preprocess=PreprocessConfig(image_size=S).to_dict(),
                      training={"note": "test"}).eval()


def _resnet50_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = import_torchvision().models.resnet50(weights=None)
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def model() -> SpineFxNet:
    return _model()


def test_architecture_one_logit_linear_head(model) -> None:
    x = torch.rand(3, 6, S, S)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
    assert logits.shape == (3,)
    assert feats.shape == (3, 2048, S // 32, S // 32)
    assert isinstance(model.head, torch.nn.Linear) and model.head.weight.shape == (1, 2048)
    # GAP + linear: the logit is the head applied to the mean feature (Grad-CAM relies on it)
    manual = feats.mean((2, 3)) @ model.head.weight[0] + model.head.bias[0]
    torch.testing.assert_close(logits, manual, rtol=1e-4, atol=1e-4)
    assert model.stem.kernel_size == (1, 1) and model.stem.in_channels == 6
    assert model.stem.out_channels == 3 and model.stem.bias is not None
    assert tuple(model.classes) == CLASSES == ("benign", "malignant")
    assert torch.all((model.predict_proba(x) >= 0) & (model.predict_proba(x) <= 1))


def test_stem_starts_by_averaging_t1_and_t2_per_slice(model) -> None:
    w = model.stem.weight[:, :, 0, 0]
    expected = torch.zeros(3, 6)
    for j in range(3):
        expected[j, j] = expected[j, j + 3] = 0.5
    torch.testing.assert_close(w, expected)
    assert torch.all(model.stem.bias == 0)


def test_save_pretrained_round_trip(model, tmp_path) -> None:
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors"} <= files
    assert not any(p.suffix in (".bin", ".pt", ".pth", ".pkl") for p in tmp_path.iterdir())
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == "resnet50"
    assert config["classes"] == ["benign", "malignant"]
    assert config["preprocess"] == PreprocessConfig(image_size=S).to_dict()
    assert config["training"] == {"note": "test"}
    loaded = load_model(tmp_path)
    assert loaded.preprocess_config == PreprocessConfig(image_size=S)
    x = torch.rand(2, 6, S, S)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_pretrained_backbone_from_safetensors(tmp_path) -> None:
    from safetensors.torch import save_file

    state = _resnet50_state(seed=123)
    path = tmp_path / "resnet50_imagenet.safetensors"
    save_file({f"module.{k}": v for k, v in state.items()}, str(path))  # DDP-style prefix
    model = _model(seed=0)
    before_fc = model.head.weight.clone()
    assert not torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
    report = load_pretrained(model, path)
    assert report["kind"] == "resnet50-backbone"
    assert report["missing"] == [] and report["unexpected"] == []
    assert report["skipped"] == ["fc.bias", "fc.weight"]
    own = model.backbone.state_dict()
    for key in ("conv1.weight", "layer1.0.conv1.weight", "layer4.2.bn3.running_var",
                "layer3.5.conv2.weight"):
        assert torch.equal(own[key], state[key]), key
    assert torch.equal(model.head.weight, before_fc)  # our 1-logit head is not replaced
    # ImageNet normalisation folded into the 1x1 stem: a mid-grey input maps near 0
    torch.testing.assert_close(model.stem.bias, -torch.tensor([0.485, 0.456, 0.406])
                               / torch.tensor([0.229, 0.224, 0.225]))


def test_pretrained_from_weights_only_pth_and_wrapped_state(tmp_path) -> None:
    state = _resnet50_state(seed=5)
    path = tmp_path / "radimagenet_resnet50.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in state.items()
                               if not k.startswith("fc.")}}, path)
    model = _model()
    report = load_pretrained(model, path)
    assert report["loaded"] == len([k for k in state if not k.startswith("fc.")])
    assert torch.equal(model.backbone.layer2[0].conv1.weight, state["layer2.0.conv1.weight"])


class _Evil:  # a pickled object: weights_only loading must refuse it
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_pickled_objects_are_refused(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _Evil()}, path)
    with pytest.raises(PretrainedError, match="weights_only"):
        load_pretrained(_model(), path)


def test_pretrained_errors_are_clear_and_offline(tmp_path) -> None:
    with pytest.raises(PretrainedError, match="hf://"):
        load_pretrained(_model(), "someone/resnet50-radimagenet")  # not a local path
    with pytest.raises(PretrainedError, match="downloads are off"):
        load_pretrained(_model(), "hf://someone/resnet50", allow_download=False)
    from safetensors.torch import save_file
    save_file({"foo.weight": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(PretrainedError, match="ResNet50"):
        load_pretrained(_model(), tmp_path / "other.safetensors")
    bad = _resnet50_state(0)
    bad["conv1.weight"] = torch.zeros(64, 1, 7, 7)
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(PretrainedError, match="wrong shape"):
        load_pretrained(_model(), tmp_path / "bad.safetensors")


def test_pretrained_from_spinefx_folder(model, tmp_path) -> None:
    model.save_pretrained(tmp_path / "prev")
    fresh = _model(seed=99)
    report = load_pretrained(fresh, tmp_path / "prev")
    assert report["kind"] == "spinefx"
    x = torch.rand(1, 6, S, S)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), model(x))


def test_no_pickle_in_training_code() -> None:
    """Every torch.load in train/ passes weights_only=True; nothing imports pickle."""
    for path in sorted(TRAIN_SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.split(".")[0] in ("pickle", "dill", "joblib")
                               for n in names), path
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "load" \
                    and getattr(node.func.value, "id", "") == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                assert "weights_only" in kw and getattr(kw["weights_only"], "value", None) \
                    is True, f"{path}:{node.lineno} torch.load without weights_only=True"
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "load" \
                    and getattr(node.func.value, "id", "") == "np":
                kw = {k.arg: k.value for k in node.keywords}
                assert getattr(kw.get("allow_pickle"), "value", None) is False, \
                    f"{path}:{node.lineno} np.load without allow_pickle=False"


def test_augmentation_is_seeded_and_keeps_anatomy() -> None:
    torch.manual_seed(0)
    x = torch.rand(6, S, S)
    aug = Augment()
    a = aug(x, sample_generator(1, 2, 3, 4))
    b = aug(x, sample_generator(1, 2, 3, 4))
    c = aug(x, sample_generator(1, 2, 3, 5))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not aug.flip_ap and not aug.swap_sides  # no anterior-posterior mirror by default
    # a pure geometric identity (all jitter off) leaves the image alone
    still = Augment(rotate_deg=0, scale=0, translate=0, contrast=0, brightness=0, noise_std=0)
    torch.testing.assert_close(still(x, sample_generator(0)), x, atol=1e-5, rtol=0)
    # flip_ap mirrors the columns (anterior <-> posterior) when it fires
    flip = Augment(rotate_deg=0, scale=0, translate=0, contrast=0, brightness=0, noise_std=0,
                   flip_ap=True)
    outs = [flip(x, sample_generator(0, i)) for i in range(8)]
    assert any(torch.allclose(o, x.flip(-1), atol=1e-5) for o in outs)


def test_cache_key_changes_when_a_series_is_rewritten_in_place(tmp_path) -> None:
    import os

    from spinefx.runtime import Case, PreprocessConfig
    from spinefx.train.data import cache_key

    for name in ("t1", "t2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.dcm").write_bytes(b"x" * 10)
    case = Case("c1", "benign", tmp_path / "t1", tmp_path / "t2", 3, box=(1, 2, 30, 40))
    key = cache_key([case], PreprocessConfig())
    assert cache_key([case], PreprocessConfig()) == key
    f = tmp_path / "t2" / "a.dcm"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same path, newer file
    assert cache_key([case], PreprocessConfig()) != key
    small = cache_key([case], PreprocessConfig(image_size=64))
    assert small != cache_key([case], PreprocessConfig())
