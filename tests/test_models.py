"""The model registry (cifarlab.models): every model by name, its output and size, the options it
takes, and the state_dict names that checkpoints written before hold."""

import json
from pathlib import Path

import pytest
import torch

from cifarlab.errors import CifarlabError
from cifarlab.models import MODELS, build_from_config, build_model

from .model_helpers import expected_params, n_params


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("width", [2, 8, 32])
@pytest.mark.parametrize("classes", [2, 10])
def test_output_shape_and_parameter_count(name: str, width: int, classes: int) -> None:
    model = build_model(name, classes, width)
    logits = model(torch.randn(5, 3, 32, 32))
    assert logits.shape == (5, classes)
    assert n_params(model) == expected_params(name, width, classes)


def test_each_model_lives_in_the_file_of_its_config_name() -> None:
    """conf/model/<name>.yaml, MODELS[name] and cifarlab/models/<name>.py mirror each other."""
    conf = Path(__file__).resolve().parents[1] / "conf" / "model"
    assert sorted(p.stem for p in conf.glob("*.yaml")) == sorted(MODELS)
    assert {name: cls.__module__ for name, cls in MODELS.items()} == {
        name: f"cifarlab.models.{name}" for name in MODELS
    }


def test_state_dict_names_are_those_of_earlier_checkpoints() -> None:
    """Checkpoints store weights by these names (``net.`` + name); a model whose names or shapes
    change no longer loads them. tests/data/state_dict_keys.json was written by the models of
    commit 678bf2d, at width 4 for 10 classes."""
    earlier = json.loads((Path(__file__).parent / "data" / "state_dict_keys.json").read_text())
    assert set(earlier) == set(MODELS)
    for name, names in earlier.items():
        state = build_model(name, 10, 4).state_dict()
        assert {k: list(v.shape) for k, v in state.items()} == names, name
        build_model(name, 10, 4).load_state_dict(
            {k: torch.zeros(shape) for k, shape in names.items()}
        )


def test_a_model_config_node_builds_its_net_with_its_options() -> None:
    node = {"name": "bn_cnn", "width": 8, "compile": True, "batchnorm": False, "dropout": 0.5}
    net = build_from_config(node, 3)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert net.classifier[2].p == 0.5
    with pytest.raises(CifarlabError, match="model=lenet does not take"):
        build_from_config({"name": "lenet", "width": 6, "depth": 18}, 10)
