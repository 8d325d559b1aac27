"""Secrets a user has in their environment, config or argv never reach recorded text."""

import time

import pytest

from recorder.redact import (
    REDACTED,
    SECRET_NAME_WORDS,
    Redactor,
    looks_secret,
    mask_url_passwords,
)

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GITHUB_TOKEN = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
DB_PASSWORD = "correct-horse-battery"
USER_ENV = {
    "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
    "GITHUB_TOKEN": GITHUB_TOKEN,
    "DB_PASSWORD": DB_PASSWORD,
    "HTTPS_PROXY": "http://user:pr0xypw@proxy:3128",
    "HOME": "/home/ann",
    "TOKENIZERS_PARALLELISM": "false",
}


@pytest.mark.parametrize(
    "name",
    [
        "GITHUB_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "DB_PASSWORD",
        "db.password",
        "HF_AUTH",
        "--api-key",
        "api_key",
        "apiKey",
        "auth_header",
        "authorization",
        "Authorization",
        "X-Auth-Token",
        "refresh_token",
        "token",
        "TF_TOKEN_app_terraform_io",
        "SSH_PRIVATE_KEY",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "MYSQL_PASSWD",
    ],
)
def test_secret_names(name):
    assert looks_secret(name)


@pytest.mark.parametrize(
    "name",
    [
        "author",
        "authors",
        "AUTHOR_EMAIL",
        "authority",
        "max_tokens",
        "tokenizer",
        "TOKENIZERS_PARALLELISM",
        "pad_token",
        "eos_token_id",
        "token_dropout",
        "lr",
        "HOME",
        "PWD",
    ],
)
def test_harmless_names(name):
    assert not looks_secret(name)


def test_secret_name_words_exported():
    assert {"token", "secret", "password", "auth", "apikey"} <= set(SECRET_NAME_WORDS)


def test_url_passwords_masked_anywhere():
    text = "proxy http://user:pw@proxy:3128 and mongodb://u:p@ss@h1:27017,h2/db?x=1 ssh://git@host"
    assert mask_url_passwords(text) == (
        "proxy http://user:***@proxy:3128 and mongodb://u:***@h1:27017,h2/db?x=1 ssh://git@host"
    )


def test_env_secrets_removed_from_text():
    redactor = Redactor(USER_ENV)
    log = (
        f"export AWS_SECRET_ACCESS_KEY={AWS_SECRET}\n"
        f"cloning https://{GITHUB_TOKEN}@github.com/me/repo\n"
        f"psql password={DB_PASSWORD}\n"
        "pip --proxy http://user:pr0xypw@proxy:3128 install x; password was pr0xypw\n"
    )
    out = redactor.text(log)
    for secret in (AWS_SECRET, GITHUB_TOKEN, DB_PASSWORD, "pr0xypw"):
        assert secret not in out
    assert out.count(REDACTED) == 4
    assert "http://user:***@proxy:3128" in out


def test_harmless_env_values_kept():
    redactor = Redactor(USER_ENV)
    assert redactor.text("HOME is /home/ann; tokenizers parallel: false") == (
        "HOME is /home/ann; tokenizers parallel: false"
    )


def test_short_and_trivial_values_not_remembered():
    redactor = Redactor({"API_KEY": "abc", "USE_AUTH": "true"})
    redactor.add_secret("xy")
    assert redactor.text("abc xy true") == "abc xy true"


def test_longest_secret_replaced_whole():
    redactor = Redactor({})
    redactor.add_secret("abcd")
    redactor.add_secret("abcdefgh")
    assert redactor.text("x abcdefgh y abcd") == f"x {REDACTED} y {REDACTED}"


def test_text_is_fast_on_large_output():
    redactor = Redactor({})
    secrets = [f"s3cr3t-{i:02d}-{'q' * i}" for i in range(20)]
    for secret in secrets:
        redactor.add_secret(secret)
    text = ("loss=0.123 step=42 lorem ipsum dolor sit amet " * 2200)[:100_000] + secrets[7]
    start = time.perf_counter()
    out = redactor.text(text)
    assert time.perf_counter() - start < 0.5  # ~3 ms; generous so a busy CI cannot flake
    assert out.endswith(REDACTED)


def test_config_nested_secrets():
    redactor = Redactor({})
    config = {
        "db": {"password": "x1234", "host": "db.local"},
        "servers": [{"name": "a", "token": "tok-aaaa"}, {"name": "b", "api_key": 123456}],
        "author": "Ann Smith",
        "max_tokens": 512,
        "use_auth_token": True,
        "hf_token": None,
        "cache_url": "redis://default:r3dispw@cache:6379",
    }
    out = redactor.config(config)
    assert out == {
        "db": {"password": REDACTED, "host": "db.local"},
        "servers": [{"name": "a", "token": REDACTED}, {"name": "b", "api_key": REDACTED}],
        "author": "Ann Smith",
        "max_tokens": 512,
        "use_auth_token": True,
        "hf_token": None,
        "cache_url": "redis://default:***@cache:6379",
    }
    assert config["db"]["password"] == "x1234"  # a copy: the run still gets the real value
    assert (
        redactor.text("connect x1234 tok-aaaa r3dispw")
        == f"connect {REDACTED} {REDACTED} {REDACTED}"
    )


def test_config_secret_seen_later_in_another_value():
    redactor = Redactor({})
    out = redactor.config({"cmd": "login --pw hunter22", "password": "hunter22"})
    assert out == {"cmd": f"login --pw {REDACTED}", "password": REDACTED}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--api-key", "K3y-value"], ["--api-key", REDACTED]),
        (["--api-key=K3y-value"], [f"--api-key={REDACTED}"]),
        (["api_key=K3y-value", "lr=0.1"], [f"api_key={REDACTED}", "lr=0.1"]),
        (["token=K3y-value"], [f"token={REDACTED}"]),
        (["--token", "--verbose"], ["--token", "--verbose"]),
        (["--author", "Ann Smith"], ["--author", "Ann Smith"]),
        (["--proxy", "http://u:pxpw1@p:1"], ["--proxy", "http://u:***@p:1"]),
    ],
)
def test_argv_forms(argv, expected):
    redactor = Redactor({})
    assert redactor.argv(["train.py", *argv]) == ["train.py", *expected]


def test_argv_secret_remembered():
    redactor = Redactor({})
    redactor.argv(["train.py", "--api-key", "K3y-value"])
    assert redactor.text("using K3y-value") == f"using {REDACTED}"


def test_environ_redacts_secret_names_and_url_passwords():
    redactor = Redactor({})
    out = redactor.environ(
        {"NCCL_SOCKET_IFNAME": "eth0", "TF_TOKEN_app_example_com": "tf-tok-123", "TORCH_X": ""}
    )
    assert out == {
        "NCCL_SOCKET_IFNAME": "eth0",
        "TF_TOKEN_app_example_com": REDACTED,
        "TORCH_X": "",
    }


def test_text_while_secrets_are_added_from_another_thread():
    """The flusher thread redacts captured output while the main thread adds secrets."""
    import threading

    redactor = Redactor({})
    errors = []

    def redact_repeatedly():
        try:
            for _ in range(300):
                redactor.text("secret-0010 and secret-0200 in the log")
        except Exception as exc:  # noqa: BLE001 - the test reports any failure
            errors.append(exc)

    worker = threading.Thread(target=redact_repeatedly)
    worker.start()
    for i in range(300):
        redactor.add_secret(f"secret-{i:04d}")
    worker.join()
    assert errors == []
    assert redactor.text("secret-0010 and secret-0200") == f"{REDACTED} and {REDACTED}"
