"""schemathesis hooks for the Helpdesk API: how to make the values the document can only name.

The page cursors (`format: cursor`) are opaque to clients: base64url (no padding) of
`<microseconds since 1970>.<uuid>` for a time in the years 1 to 9999. A fuzzer cannot guess one,
so this strategy makes valid ones; anything else is (rightly) a 400.
"""

import base64

import schemathesis
from hypothesis import strategies as st

YEAR_1 = -62_135_596_800_000_000
YEAR_9999_END = 253_402_300_799_999_999


def _cursor(micros: int, uuid) -> str:
    return base64.urlsafe_b64encode(f"{micros}.{uuid}".encode()).decode().rstrip("=")


schemathesis.openapi.format(
    "cursor",
    st.builds(_cursor, st.integers(min_value=YEAR_1, max_value=YEAR_9999_END), st.uuids()),
)
