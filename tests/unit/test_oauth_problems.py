"""Problem rendering: status per code, WWW-Authenticate quoting, form-encoded body."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from oauthlib.oauth1.rfc5849.utils import parse_authorization_header

from oauthledger.services.oauth.problems import STATUS, OAuthProblem
from oauthledger.services.oauth.request import parse_authorization

CODES_400 = {"version_rejected", "parameter_absent", "parameter_rejected",
             "timestamp_refused", "signature_method_rejected"}
CODES_503 = {"user_refused", "consumer_key_refused"}
ALL_CODES = {
    "version_rejected", "parameter_absent", "parameter_rejected", "timestamp_refused",
    "nonce_used", "signature_method_rejected", "signature_invalid", "consumer_key_unknown",
    "consumer_key_rejected", "consumer_key_refused", "token_used", "token_expired",
    "token_revoked", "token_rejected", "additional_authorization_required",
    "permission_unknown", "permission_denied", "user_refused",
}


def test_every_code_has_a_status() -> None:
    assert set(STATUS) == ALL_CODES


@pytest.mark.parametrize("code", sorted(ALL_CODES))
def test_status_mapping(code: str) -> None:
    expected = 400 if code in CODES_400 else 503 if code in CODES_503 else 401
    p = OAuthProblem(code)
    assert p.status == expected
    assert p.problem == code
    assert p.www_authenticate("x") == f'OAuth realm="x", oauth_problem="{code}"'
    assert p.body() == f"oauth_problem={code}"


def test_unknown_code_or_parameter_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        OAuthProblem("signature_wrong")
    with pytest.raises(ValueError):
        OAuthProblem("parameter_absent", oauth_parameters_missing="x")


def test_header_is_quoted_and_percent_encoded() -> None:
    p = OAuthProblem(
        "parameter_absent",
        'send "oauth_nonce" & oauth_timestamp, please',
        oauth_parameters_absent="oauth_nonce&oauth_timestamp",
    )
    header = p.www_authenticate('Jira "prod"')
    assert header == (
        'OAuth realm="Jira \\"prod\\"", oauth_problem="parameter_absent", '
        'oauth_parameters_absent="oauth_nonce%26oauth_timestamp", '
        'oauth_problem_advice="send%20%22oauth_nonce%22%20%26%20oauth_timestamp%2C%20please"'
    )
    # Both our parser and oauthlib's read it back.
    ours = dict(parse_authorization(header))
    assert ours["oauth_parameters_absent"] == "oauth_nonce&oauth_timestamp"
    assert ours["oauth_problem_advice"] == 'send "oauth_nonce" & oauth_timestamp, please'
    theirs = dict(parse_authorization_header(header))
    assert theirs["oauth_problem"] == "parameter_absent"


def test_body_is_form_encoded() -> None:
    p = OAuthProblem(
        "timestamp_refused", "clock is 400 s behind (±300 s) — fix NTP",
        oauth_acceptable_timestamps="1700000000-1700000600",
    )
    body = p.body()
    assert body.startswith("oauth_problem=timestamp_refused&")
    assert dict(parse_qsl(body, strict_parsing=True)) == {
        "oauth_problem": "timestamp_refused",
        "oauth_acceptable_timestamps": "1700000000-1700000600",
        "oauth_problem_advice": "clock is 400 s behind (±300 s) — fix NTP",
    }
    assert " " not in body


def test_extra_parameters_order_and_all_kinds() -> None:
    p = OAuthProblem("version_rejected", "a", oauth_acceptable_versions="1.0-1.0")
    assert p.pairs() == [("oauth_problem", "version_rejected"),
                         ("oauth_acceptable_versions", "1.0-1.0"),
                         ("oauth_problem_advice", "a")]
    p = OAuthProblem("parameter_rejected", oauth_parameters_rejected="xoauth_requestor_id")
    assert p.body() == ("oauth_problem=parameter_rejected&"
                        "oauth_parameters_rejected=xoauth_requestor_id")
    assert str(p) == "parameter_rejected"


def test_docs_table_lists_every_code_with_its_status() -> None:
    """docs/oauth.md's problem table is the operator's reference: it must match STATUS."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "oauth.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", text, flags=re.MULTILINE))
    assert {k: int(v) for k, v in rows.items()} == STATUS
