"""make_policy: specs, parameters, errors that name the bad value."""

from __future__ import annotations

import pytest

from ppd_server.routing.policies import POLICIES, POLICY_NAMES, POLICY_SPECS, Policy, make_policy


@pytest.mark.parametrize(
    "spec,params,want_spec,want_params",
    [
        ("ppd", {}, "ppd", {"w_ttft": 1.0, "w_tpot": 1.0, "margin": 0.0, "headroom": 0.85}),
        ("ppd", {"w_tpot": 2}, "ppd", {"w_ttft": 1.0, "w_tpot": 2.0, "margin": 0.0, "headroom": 0.85}),
        ("pd", {}, "pd", {}),
        ("local", {}, "local", {}),
        ("replica", {}, "replica", {}),
        ("ratio:0.25", {}, "ratio:0.25", {"ratio": 0.25}),
        ("ratio", {"ratio": 0.75}, "ratio:0.75", {"ratio": 0.75}),
        ("threshold:512", {}, "threshold:512", {"tokens": 512}),
        (" threshold:0 ", {}, "threshold:0", {"tokens": 0}),
    ],
)
def test_specs_build_policies(spec, params, want_spec, want_params):
    pol = make_policy(spec, **params)
    assert isinstance(pol, Policy)
    assert pol.spec == want_spec and pol.params == want_params
    assert make_policy(pol.spec, **pol.params).params == pol.params


def test_keyword_parameter_overrides_the_spec_argument():
    assert make_policy("ratio:0.5", ratio=0.2).spec == "ratio:0.2"


def test_params_are_a_copy():
    pol = make_policy("ppd")
    pol.params["w_ttft"] = 99.0
    assert pol.params["w_ttft"] == 1.0


@pytest.mark.parametrize(
    "spec,params,needle",
    [
        ("fastest", {}, "'fastest'"),
        ("", {}, "non-empty"),
        ("ratio:abc", {}, "'abc'"),
        ("ratio:1.5", {}, "1.5"),
        ("threshold:-3", {}, "-3"),
        ("threshold:2.5", {}, "'2.5'"),
        ("pd:3", {}, "takes no argument"),
        ("ppd", {"w_tpot": -1}, "w_tpot"),
        ("ppd", {"w_tpot": "heavy"}, "w_tpot"),
        ("ppd", {"speed": 1}, "speed"),
        ("ppd", {"margin": 3}, "margin"),
        ("ppd", {"headroom": 0}, "headroom"),
    ],
)
def test_bad_specs_name_the_value_and_list_choices(spec, params, needle):
    with pytest.raises(ValueError) as e:
        make_policy(spec, **params)
    assert needle in str(e.value)
    if "choose one of" in str(e.value):
        assert all(name in str(e.value) for name in POLICY_NAMES)


def test_spec_help_covers_every_name_and_comes_from_the_classes():
    assert [s.split(":")[0] for s in POLICY_SPECS] == list(POLICY_NAMES)
    assert POLICY_SPECS == ("ppd", "pd", "local", "replica", "ratio:X", "threshold:N")
    assert all((":" in spec) == (POLICIES[spec.split(":")[0]].spec_param is not None) for spec in POLICY_SPECS)
