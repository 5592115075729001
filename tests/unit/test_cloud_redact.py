"""cloud.redact.Redactor.data: the quick copy (leaves handled in the loop) masks exactly what the plain
recursive definition masks, for any JSON-like answer, and never lets a secret through."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cloud.redact import MASK, Redactor

SECRETS = ["sk-live-0123", "bench-key", 'pass\\word"1']


def _reference(redactor: Redactor, value: Any) -> Any:
    """The definition: strings masked, every dict's `env` reduced to its keys, lists/tuples -> lists."""
    if isinstance(value, str):
        return redactor.text(value)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key == "env":
                out[str(key)] = (
                    sorted(str(k) for k in item)
                    if isinstance(item, dict)
                    else [
                        x.split("=", 1)[0] if isinstance(x, str) else str(x["key"])
                        for x in item
                        if isinstance(x, str) or (isinstance(x, dict) and "key" in x)
                    ]
                    if isinstance(item, list)
                    else []
                )
            else:
                out[str(key)] = _reference(redactor, item)
        return out
    if isinstance(value, list | tuple):
        return [_reference(redactor, item) for item in value]
    return value


_text = st.one_of(
    st.text(max_size=8),
    st.sampled_from(SECRETS),
    st.builds(lambda a, s, b: a + s + b, st.text(max_size=4), st.sampled_from(SECRETS), st.text(max_size=4)),
)
_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), _text)
_env = st.one_of(
    st.lists(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["A", "TOKEN"]), st.sampled_from(SECRETS))),
    st.lists(st.fixed_dictionaries({"key": st.sampled_from(["A", "TOKEN"]), "value": st.sampled_from(SECRETS)})),
    st.dictionaries(st.sampled_from(["A", "TOKEN"]), st.sampled_from(SECRETS)),
)
_answer = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(
            st.one_of(st.sampled_from(["id", "name", "runtime", "ports"]), st.integers(0, 3)), inner, max_size=4
        ),
        st.builds(
            lambda d, e: {**d, "env": e}, st.dictionaries(st.sampled_from(["id", "name"]), inner, max_size=2), _env
        ),
    ),
    max_leaves=20,
)


@given(_answer)
def test_data_masks_as_the_plain_definition_and_leaks_nothing(answer: Any) -> None:
    redactor = Redactor(SECRETS)
    out = redactor.data(answer)
    assert out == _reference(redactor, answer)
    text = json.dumps(out, ensure_ascii=False)
    for secret in SECRETS:
        assert json.dumps(secret)[1:-1] not in text, f"{secret!r} leaked"


def test_a_pod_answer_keeps_its_shape_and_loses_env_values() -> None:
    answer = {
        "id": "p1",
        "env": ["API_KEY=sk-live-0123", "MODE=fast"],
        "runtime": {"ports": [{"ip": "203.0.113.7", "privatePort": 22, "isIpPublic": True}]},
        "lastError": "auth with sk-live-0123 failed",
        "costPerHr": 0.69,
    }
    out = Redactor(SECRETS).data(answer)
    assert out == {
        "id": "p1",
        "env": ["API_KEY", "MODE"],
        "runtime": {"ports": [{"ip": "203.0.113.7", "privatePort": 22, "isIpPublic": True}]},
        "lastError": f"auth with {MASK} failed",
        "costPerHr": 0.69,
    }
    assert out["runtime"] is not answer["runtime"], "a copy, not the answer itself"
