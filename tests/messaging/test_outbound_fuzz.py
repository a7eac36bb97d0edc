"""The submission API fuzzed: whatever body arrives, the answer is 201 or a 400 naming problems
(never a 500), and a refused request stores nothing while an accepted one stores every message."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.tenancy import tenant_context
from messaging.models import IdempotencyKey, Message
from tests.messaging.test_outbound import submission
from tests.messaging.test_outbound_api import api, client, enqueued, url  # noqa: F401 (fixtures)

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    # JSON has no NaN or infinity (the API's parser refuses them before Busbar sees them).
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)
FIELDS = [
    "event_code",
    "custom_block",
    "primary_recipients",
    "correlation_id",
    "mpan",
    "distributor_dip_id",
    "gsp_group_id",
    "business_key",
    "sub_text",
    "supersede",
]


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A valid submission with some fields replaced by anything, dropped, or added."""
    body = submission()
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        if draw(st.booleans()):
            body[name] = draw(JSON)
        else:
            body.pop(name, None)
    if draw(st.booleans()):
        body[draw(st.text(min_size=1, max_size=8))] = draw(JSON)
    return body


def counts(fixture: dict[str, Any]) -> tuple[int, int]:
    with tenant_context(fixture["world"].globex.id):
        return Message.objects.count(), IdempotencyKey.objects.count()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=JSON | mutated() | st.builds(lambda m: {"messages": m}, st.lists(mutated(), max_size=3)),
    batch=st.booleans(),
    key=st.none() | st.text(min_size=1, max_size=20),
)
def test_no_body_gets_a_500_or_a_half_stored_submission(api, body, batch, key):  # noqa: F811
    before = counts(api)
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    response = client(api["submit"]).post(url(api, batch=batch), body, format="json", **headers)
    after = counts(api)
    assert response.status_code in (201, 400, 422), response.content
    if response.status_code == 201:
        stored = len(response.json()["messages"])
        replayed = response.get("Idempotent-Replayed") == "true"
        assert after[0] - before[0] == (0 if replayed else stored)
    else:
        assert after[0] == before[0]
        if response.status_code == 400:
            errors = response.json().get("errors")
            assert errors, response.content
            # Each problem names where it is: a JSON path into the body, or the header.
            assert all(
                (e["path"].startswith("$") or e["path"] == "Idempotency-Key") and e["message"]
                for e in errors
            )
