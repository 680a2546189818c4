"""``burrow policy check`` and ``burrow serve``'s refusal: the same lines for the same file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from burrow.cli.main import _configure_logging, app
from burrow.control.config import Settings
from burrow.control.policy.service import load_policy
from tests.conftest import ROOT, TEST_SECRET

EXAMPLES = ROOT / "examples" / "policies"

BROKEN = """
[provider]
name = "Broken VPN"
contact_email = "ops@example.com"

[privacy]
mode = "strict"
connection_record_retention_days = 30

[plans.pro]
name = "Pro"
price_minor = 500
currency = "USD"
period_months = 1
device_limit = 1
simultaneous_connections = 2

[refunds]
window_days = 7
max_data_bytes = 1000000000
excluded_payment_methods = ["bitcoin"]

[terms]
version = "1"
effective_date = 2026-01-01
"""


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("name", ["strict-no-logs.toml", "metered.toml"])
def test_check_passes_the_examples(name: str) -> None:
    result = CliRunner().invoke(app, ["policy", "check", str(EXAMPLES / name)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("policy OK: Example ")


def test_check_prints_every_problem_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(BROKEN)
    result = CliRunner().invoke(app, ["policy", "check", str(path)])
    assert result.exit_code == 1
    assert _lines(result.stdout) == [
        f"{path}: refunds.excluded_payment_methods.0: 'bitcoin' is not a payment method class; "
        "the classes are: card, paypal, crypto, paymentwall, app_store, google_play, manual",
        f"{path}: privacy.connection_record_retention_days is set, but privacy.mode = "
        '"strict" keeps no connection records',
        f"{path}: plans.pro.device_limit (1) is below plans.pro.simultaneous_connections (2)",
    ]
    assert "policy invalid: 3 problems" in result.stderr


def test_check_counts_each_dns_lists_names_and_malformed_lines(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    text = (EXAMPLES / "metered.toml").read_text()
    policy.write_text(text + '\n[dns.filters.ads]\ntitle = "Ads"\nfile = "ads.txt"\n')
    (tmp_path / "ads.txt").write_text("ads.example\n# fine\nnot a name\n\nbad..example\n")
    result = CliRunner().invoke(app, ["policy", "check", str(policy)])
    assert result.exit_code == 0, result.output
    assert "dns filter ads: 1 names; 2 malformed lines skipped" in result.output


def test_check_of_a_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["policy", "check", str(tmp_path / "nope.toml")])
    assert result.exit_code == 1
    assert "cannot read" in result.stdout
    assert "Traceback" not in result.output


def test_serve_refuses_an_invalid_policy_with_the_same_lines(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(BROKEN)
    checked = CliRunner().invoke(app, ["policy", "check", str(path)])
    env = {
        "BURROW_POLICY_PATH": str(path),
        "BURROW_SECRET_KEY": TEST_SECRET,
        "BURROW_ENVIRONMENT": "test",
        "BURROW_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'burrow.db'}",
    }
    served = CliRunner().invoke(app, ["serve"], env=env)
    assert served.exit_code == 3
    problem_lines = [line for line in _lines(served.stderr) if line.startswith(str(path))]
    assert problem_lines == _lines(checked.stdout)
    assert "burrow will not start on it" in served.stderr


def test_terms_preview(tmp_path: Path) -> None:
    markdown = CliRunner().invoke(app, ["policy", "terms", str(EXAMPLES / "metered.toml")])
    assert markdown.exit_code == 0, markdown.output
    assert markdown.stdout.startswith("# Terms of service: Example Metered VPN")
    page = CliRunner().invoke(app, ["policy", "terms", "--html", str(EXAMPLES / "metered.toml")])
    assert page.stdout.startswith("<!doctype html>")
    path = tmp_path / "broken.toml"
    path.write_text(BROKEN)
    refused = CliRunner().invoke(app, ["policy", "terms", str(path)])
    assert refused.exit_code == 1


def test_serve_logging_removes_addresses_from_the_log_file(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "burrow.log"
    settings = Settings(environment="test", log_file=log_file)
    root = logging.getLogger()
    level = root.level
    undo = _configure_logging(settings, load_policy(EXAMPLES / "strict-no-logs.toml"))
    try:
        root.setLevel(logging.INFO)
        logging.getLogger("burrow.test").info("sign-in from %s", "192.0.2.44")
    finally:
        undo()
        root.setLevel(level)
    written = log_file.read_text()
    assert "sign-in from [ip removed]" in written
    assert "192.0.2.44" not in written


def _with_plan_line(text: str, line: str) -> str:
    plan = "[plans.personal-monthly]"
    return text.replace(plan, f"{plan}\n{line}", 1)


@pytest.mark.parametrize(
    ("protocol", "why"),
    [
        ("pptp", "PPTP is insecure and burrow does not serve it"),
        ("l2tp", "L2TP is insecure and burrow does not serve it"),
        ("sstp", "no burrow node serves SSTP"),
    ],
)
def test_check_refuses_a_promise_of_a_protocol_no_node_serves(
    tmp_path: Path, protocol: str, why: str
) -> None:
    text = (EXAMPLES / "metered.toml").read_text()
    path = tmp_path / "promises.toml"
    promise = f"connections_per_server = {{ wireguard = 1, {protocol} = 1 }}"
    path.write_text(_with_plan_line(text, promise))
    result = CliRunner().invoke(app, ["policy", "check", str(path)])
    assert result.exit_code == 1
    assert _lines(result.stdout) == [
        f"{path}: plans.personal-monthly.connections_per_server.{protocol}: {why}; a policy "
        "may promise only the protocols burrow's nodes serve: wireguard, openvpn, ikev2"
    ]


def test_check_accepts_every_served_protocol(tmp_path: Path) -> None:
    text = (EXAMPLES / "metered.toml").read_text()
    path = tmp_path / "served.toml"
    promise = "connections_per_server = { wireguard = 1, openvpn = 3, ikev2 = 1 }"
    path.write_text(_with_plan_line(text, promise))
    result = CliRunner().invoke(app, ["policy", "check", str(path)])
    assert result.exit_code == 0, result.output


def test_check_refuses_deterministic_nat_under_a_strict_policy(tmp_path: Path) -> None:
    text = (EXAMPLES / "strict-no-logs.toml").read_text()
    path = tmp_path / "traceable.toml"
    path.write_text(text.replace('nat = "random"', 'nat = "deterministic"'))
    result = CliRunner().invoke(app, ["policy", "check", str(path)])
    assert result.exit_code == 1
    assert 'network.nat = "deterministic" ties every port to one device' in result.output
    assert 'privacy.mode = "strict" promises that nothing can' in result.output
