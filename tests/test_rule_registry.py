"""The rule registry: every element-wise rule of the core (include/genesis/rules/list.h) has
its Python class and its float64 reference, and one options schema per rule drives the
bindings (by name), the defaults and the state names."""

import inspect
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import genesis  # noqa: E402
from genesis import _C  # noqa: E402
from genesis.optim._rules import OPTIONS, core_options  # noqa: E402

import reference as R  # noqa: E402


def test_every_core_rule_has_a_python_class_and_a_reference():
    rules = {getattr(genesis.optim, n)._rule for n in R.NAMES}
    assert rules == set(OPTIONS)
    assert [rule for rule, _ in _C.RULES] == list(OPTIONS)
    for name in R.NAMES:
        assert name in R.RULES and name in R.CONFIGS and name in R.RICH, name


@pytest.mark.parametrize("name", R.NAMES)
def test_python_defaults_match_torch(name):
    """The signature of each class takes every key of its schema with torch's default."""
    torch = pytest.importorskip("torch")
    if not hasattr(torch.optim, name):
        pytest.skip(f"torch has no {name}")
    theirs = inspect.signature(getattr(torch.optim, name).__init__).parameters
    ours = inspect.signature(getattr(genesis.optim, name).__init__).parameters
    for key, _ in R.schema(name):
        if key not in theirs:
            continue  # AdamW's decoupled_weight_decay: fixed by the class, in torch too
        default = theirs[key].default
        if default is not inspect.Parameter.empty and type(default).__name__ != "_RequiredParameter":
            if ours[key].default is not genesis.optim.optimizer.required:  # a required hyperparameter
                assert ours[key].default == default, key


@pytest.mark.parametrize("rule", list(OPTIONS))
def test_core_defaults_are_those_of_the_rules_own_class(rule):
    """The C++ options struct defaults to what the Python class of the same rule defaults to
    (the first class of the rule: Adam, not AdamW), except SGD's required lr."""
    name = next(n for n in R.NAMES if getattr(genesis.optim, n)._rule == rule)
    core = OPTIONS[rule].defaults()
    assert list(core) == [key for key, _ in OPTIONS[rule].fields()]
    for key, value in R.DEFAULTS[name].items():
        if value is None:
            continue
        expected = tuple(None if v is None else float(v) for v in value) if isinstance(value, tuple) else value
        assert core[key] == expected, (name, key)


@pytest.mark.parametrize("rule", list(OPTIONS))
def test_options_cross_by_name_only(rule):
    cls = OPTIONS[rule]
    fields = cls.fields()
    with pytest.raises(TypeError):
        cls(0.5)  # no positional construction: a new field cannot shift the others
    with pytest.raises(TypeError, match="no_such_option"):
        cls(no_such_option=1.0)
    # Each key sets exactly its own field.
    for key, kind in fields:
        values = {"float": [0.125], "bool": [True], "pair": [(0.25, 0.5)], "optional_pair": [(0.25, 0.5), (None, 0.5)]}[
            kind
        ]
        for value in values:
            got = cls(**{key: value}).as_dict()
            want = dict(cls.defaults(), **{key: value})
            assert got == want, key


def test_pairs_are_checked():
    with pytest.raises(ValueError, match="Invalid betas"):
        _C.AdamOptions(betas=(0.9,))
    with pytest.raises(ValueError, match="Invalid betas"):
        core_options("adam", dict(_C.AdamOptions.defaults(), betas=0.9))


@pytest.mark.parametrize("name", R.NAMES)
def test_state_names_follow_the_schema(name):
    """The state an optimizer creates is exactly what its rule's schema names, in the shapes
    it declares (Adafactor: row and column factors for a matrix, a full variance for a vector)."""
    hp = R.RICH[name]
    params = [genesis.nn.Parameter(np.ones(shape, dtype=np.float32)) for shape in [(3,), (2, 3), (4, 2, 3)]]
    opt = getattr(genesis.optim, name)(params, **hp)
    for p in params:
        p.grad = np.ones(p.data.shape, dtype=np.float32)
    opt.step()
    for p in params:
        shapes = R.state_shapes(name, hp, p.data.shape)
        expected = set(shapes) | set(R.scalar_names(name, hp))
        expected |= {"step"} if R.counts_steps(name) else set()
        assert set(opt.state[p]) == expected
        for key, shape in shapes.items():
            assert opt.state[p][key].shape == shape, key
