from typer.testing import CliRunner

from clickagg_platform.cli import app
from clickagg_platform.tokens import verify_token

runner = CliRunner()
ENV = {
    "CLICKAGG_SIGNING_KEYS": "k9:cli-secret,k8:older",
    "CLICKAGG_PUBLIC_BASE_URL": "https://clk.example",
}


def _settings_cache_clear():
    from clickagg_platform.settings import get_settings

    get_settings.cache_clear()


def test_mint_prints_a_url_that_verifies_with_the_first_key():
    _settings_cache_clear()
    res = runner.invoke(
        app,
        [
            "mint",
            "-a",
            "adv1",
            "-c",
            "c1",
            "--ad",
            "ad1",
            "-l",
            "https://shop.example/x",
            "-i",
            "imp-7",
        ],
        env=ENV,
    )
    _settings_cache_clear()
    assert res.exit_code == 0, res.output
    url = res.stdout.strip()
    assert url.startswith("https://clk.example/c/")
    claims = verify_token(url.rsplit("/", 1)[1], {"k9": b"cli-secret"})
    assert (claims.key_id, claims.impression_id, claims.landing_url) == (
        "k9",
        "imp-7",
        "https://shop.example/x",
    )


def test_mint_refuses_bad_input_with_a_clear_message():
    _settings_cache_clear()
    res = runner.invoke(
        app, ["mint", "-a", "adv1", "-c", "c1", "--ad", "ad1", "-l", "javascript:alert(1)"], env=ENV
    )
    _settings_cache_clear()
    assert res.exit_code == 2
    assert "landing URL" in res.output and "Traceback" not in res.output


def test_config_masks_secrets():
    res = runner.invoke(app, ["config"], env=ENV)
    assert res.exit_code == 0
    assert "cli-secret" not in res.output and "k9:***" in res.output


def test_config_reports_invalid_settings():
    res = runner.invoke(app, ["config"], env={"CLICKAGG_SIGNING_KEYS": "nocolon"})
    assert res.exit_code == 2 and "signing_keys" in res.output
