"""Settings: AUTHORITY_* variables and flags through one checked object."""

from __future__ import annotations

import pytest

from authority.config import MAX_DURATION_SECONDS, Algorithm, Policy, Settings, describe, load_settings, parse_duration
from authority.errors import ConfigError


def test_defaults_are_the_embedded_store_on_loopback() -> None:
    settings = load_settings({})

    assert settings.listen == "127.0.0.1:50051"
    assert settings.database_url == "sqlite+aiosqlite:///authority.db"
    assert settings.access_token_ttl == 15 * 60
    assert settings.refresh_token_ttl == 30 * 24 * 3600
    assert settings.total_session_cap == 1
    assert settings.default_policy is Policy.REPLACE
    assert settings.signing_algorithm is Algorithm.EDDSA


def test_environment_variables_are_parsed_by_type() -> None:
    settings = load_settings(
        {
            "AUTHORITY_ACCESS_TOKEN_TTL": "5m",
            "AUTHORITY_REFRESH_TOKEN_TTL": "7d",
            "AUTHORITY_IDLE_TIMEOUT": "2h",
            "AUTHORITY_MAX_SESSIONS_PER_SUBJECT": "3",
            "AUTHORITY_DEFAULT_POLICY": "REJECT",
            "AUTHORITY_SIGNING_ALGORITHM": "es256",
            "AUTHORITY_AUDIENCES": "api, admin",
            "AUTHORITY_LEEWAY": "10",
        }
    )

    assert settings.access_token_ttl == 300
    assert settings.refresh_token_ttl == 7 * 86400
    assert settings.idle_timeout == 7200
    assert settings.max_sessions_per_subject == 3
    assert settings.default_policy is Policy.REJECT
    assert settings.signing_algorithm is Algorithm.ES256
    assert settings.audiences == ("api", "admin")
    assert settings.default_audience == "api"
    assert settings.leeway == 10


def test_a_flag_wins_over_its_variable() -> None:
    settings = load_settings({"AUTHORITY_LISTEN": "127.0.0.1:1"}, listen="127.0.0.1:2")

    assert settings.listen == "127.0.0.1:2"


@pytest.mark.parametrize(
    ("environ", "option"),
    [
        ({"AUTHORITY_ACCESS_TOKEN_TTL": "15 minutes"}, "access_token_ttl"),
        ({"AUTHORITY_ACCESS_TOKEN_TTL": "2h"}, "access_token_ttl"),  # over the maximum
        ({"AUTHORITY_MAX_SESSIONS_PER_SUBJECT": "-1"}, "max_sessions_per_subject"),
        ({"AUTHORITY_SIGNING_ALGORITHM": "HS256"}, "signing_algorithm"),
        ({"AUTHORITY_IDLE_TIMEOUT": "1m"}, "idle_timeout"),  # shorter than an access token lives
        ({"AUTHORITY_LEEWAY": "1h"}, "leeway"),
        ({"AUTHORITY_AUDIENCES": " , "}, "audiences"),
        ({"AUTHORITY_LOG_LEVEL": "chatty"}, "log_level"),
        ({"AUTHORITY_LISTEN": "127.0.0.1:99999"}, "listen"),
        # Durations whose results a reply could not carry (a Timestamp ends in year 9999).
        ({"AUTHORITY_REFRESH_TOKEN_TTL": "100000000000000000000d"}, "refresh_token_ttl"),
        ({"AUTHORITY_REFRESH_TOKEN_TTL": "100000000d"}, "refresh_token_ttl"),
        ({"AUTHORITY_REFRESH_TOKEN_TTL": "3651d"}, "refresh_token_ttl"),
        ({"AUTHORITY_KEY_ROTATION_INTERVAL": "99999999999d"}, "key_rotation_interval"),
        ({"AUTHORITY_PURGE_INTERVAL": "100000000000000h"}, "purge_interval"),
        ({"AUTHORITY_MAX_STALENESS": "9" * 400}, "max_staleness"),  # a float that is infinite
        ({"AUTHORITY_REFRESH_TOKEN_REUSE_GRACE": "61s"}, "refresh_token_reuse_grace"),
        ({"AUTHORITY_REVOCATION_MIN_READ_INTERVAL": "1500ms"}, "revocation_min_read_interval"),  # over the poll
        ({"AUTHORITY_REVOCATION_MIN_READ_INTERVAL": "-1ms"}, "revocation_min_read_interval"),
        ({"AUTHORITY_REVOCATION_MIN_READ_INTERVAL": "soon"}, "revocation_min_read_interval"),
        ({"AUTHORITY_EXPLANATION_WAIT": "6s"}, "explanation_wait"),
        ({"AUTHORITY_EXPLANATION_WAIT": "a while"}, "explanation_wait"),
        ({"AUTHORITY_SESSION_LIMITS": "mobile"}, "session_limits"),
        ({"AUTHORITY_SESSION_LIMITS": "mobile=0"}, "session_limits"),
        ({"AUTHORITY_SESSION_LIMITS": "mo bile=1"}, "session_limits"),
        ({"AUTHORITY_SESSION_LIMITS": "mobile=1,mobile=2"}, "session_limits"),
        ({"AUTHORITY_SESSION_EVENTS_RETENTION": "0"}, "session_events_retention"),
        ({"AUTHORITY_SESSION_EVENTS_RETENTION": "a month"}, "session_events_retention"),
        ({"AUTHORITY_PROOF_MAX_AGE": "0"}, "proof_max_age"),
        ({"AUTHORITY_PROOF_MAX_AGE": "11m"}, "proof_max_age"),
        ({"AUTHORITY_PROOF_MAX_AGE": "a minute"}, "proof_max_age"),
        ({"AUTHORITY_PROOF_REPLAY_CACHE_SIZE": "0"}, "proof_replay_cache_size"),
        ({"AUTHORITY_PROOF_REPLAY_CACHE_SIZE": "many"}, "proof_replay_cache_size"),
        ({"AUTHORITY_DATABASE_URL": "postgresql+asyncpg://app:hunter2@db:abc/authority"}, "database_url"),
        ({"AUTHORITY_DATABASE_URL": "postgresql+asyncpg://app:hunter2@[::1/authority"}, "database_url"),
        ({"AUTHORITY_DATABASE_URL": "postgresql+asyncpg://app:hunter2@db:99999/authority"}, "database_url"),
        ({"AUTHORITY_DATABASE_URL": "postgresql+asyncpg://app:hunter2@db/authority?sslmode=require"}, "database_url"),
        ({"AUTHORITY_DATABASE_URL": "sqlite+aiosqlite:///:memory:"}, "database_url"),
        ({"AUTHORITY_DATABASE_URL": "sqlite+aiosqlite://"}, "database_url"),
        ({"AUTHORITY_HTTP_READ_TIMEOUT": "0"}, "http_read_timeout"),
        ({"AUTHORITY_HTTP_READ_TIMEOUT": "2h"}, "http_read_timeout"),
        ({"AUTHORITY_HTTP_READ_TIMEOUT": "a minute"}, "http_read_timeout"),
        ({"AUTHORITY_HTTP_MAX_CONNECTIONS": "0"}, "http_max_connections"),
        ({"AUTHORITY_HTTP_MAX_CONNECTIONS": "2000000"}, "http_max_connections"),
        ({"AUTHORITY_HTTP_MAX_CONNECTIONS": "many"}, "http_max_connections"),
        ({"AUTHORITY_REQUIRE_PROOF_OF_POSSESSION": "payments"}, "require_proof_of_possession"),
        ({"AUTHORITY_REQUIRE_PROOF_OF_POSSESSION": "true,token-authority"}, "require_proof_of_possession"),
    ],
)
def test_an_invalid_value_is_refused_naming_the_option(environ: dict[str, str], option: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)

    assert caught.value.option == option
    assert str(caught.value).startswith(f"{option}:")
    assert "hunter2" not in str(caught.value)  # a database URL's password is never quoted


# Regression: each ended in a traceback from asyncpg or SQLAlchemy at the first connection,
# or (timeout, command_timeout) was silently overridden by the authority's own.
@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("?foo=1", "foo is not a connection parameter asyncpg takes"),
        ("?a%20b=hunter2", "has a query parameter that is not a connection parameter asyncpg takes"),
        ("?application_name=a", "application_name is not a connection parameter"),
        ("?timeout=1", "timeout is not taken from the URL: the authority connects with a timeout of its own"),
        ("?command_timeout=1", "command_timeout is not taken from the URL: the authority bounds its statements"),
        ("?statement_cache_size=0", "statement_cache_size cannot be given in the URL"),
        ("?direct_tls=false", "direct_tls cannot be given in the URL"),
        ("?ssl=bogus", "ssl must be one of disable, allow, prefer, require, verify-ca, verify-full"),
        ("?ssl=require&ssl=disable", "gives ssl more than once"),
        ("?host=a,b", "needs a port for every host"),
        ("?host=a:5432&host=b", "needs a port for every host"),
        ("?host=a,b&port=5432", "names 2 hosts in host= and 1 ports in port="),
        ("?host=a&port=x", "a port in its query that is not a number"),
        ("?host=a:99999", "a port in its query that is not a number"),
        ("?host=a:5432&port=5432", "has a port inside a host= list, or beside port="),
        ("?host=a:5432,b:5432", "has a port inside a host= list"),
        ("?host=,b&port=5432,5432", "has an empty host"),
        ("?port=5432,5433", "several ports in port= but no host="),
    ],
)
def test_a_postgres_url_query_the_driver_would_fail_on_is_refused_naming_the_parameter(query: str, says: str) -> None:
    for option in ("database_url", "listen_database_url"):
        url = "postgresql+asyncpg://app:hunter2@/authority" + query
        environ = {f"AUTHORITY_{option.upper()}": url}
        if option == "listen_database_url":
            environ["AUTHORITY_DATABASE_URL"] = "postgresql+asyncpg://app@db/authority"

        with pytest.raises(ConfigError) as caught:
            load_settings(environ)

        assert caught.value.option == option
        assert str(caught.value).startswith(f"{option}: ") and says in str(caught.value)
        assert "hunter2=" not in str(caught.value) and ":hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "query",
    ["", "?host=a:5432&host=b:6432", "?host=a,b&port=5432,6432", "?host=a", "?host=a&port=6432", "?port=6432",
     "?ssl=verify-full&target_session_attrs=primary", "?passfile=/etc/authority/pgpass&krbsrvname=postgres",
     "?prepared_statement_cache_size=0&password=x&user=u&database=d"],
)
def test_a_postgres_url_query_the_driver_reads_is_accepted(query: str) -> None:
    settings = load_settings({"AUTHORITY_DATABASE_URL": "postgresql+asyncpg://app@/authority" + query})

    assert settings.database_url.endswith(query)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sqlite+aiosqlite:///file:authority.db?mode=rwc&uri=true", "uri (SQLite's URI filenames) is not supported"),
        ("sqlite+aiosqlite:///authority.db?uri=1", "uri (SQLite's URI filenames) is not supported"),
        ("sqlite+aiosqlite:///authority.db?uri=x", "uri (SQLite's URI filenames) is not supported"),
        ("sqlite+aiosqlite:///authority.db?timeout=soon", "timeout is not taken in a SQLite URL"),
        ("sqlite+aiosqlite:///authority.db?timeout=30", "timeout is not taken in a SQLite URL: the store sets"),
        ("sqlite+aiosqlite:///authority.db?mode=ro", "mode is not taken in a SQLite URL"),
        ("sqlite+aiosqlite:///authority.db?isolation_level=", "isolation_level is not taken in a SQLite URL"),
        ("sqlite+aiosqlite:///authority.db?uri=false&x%0Ay=1", "a parameter is not taken in a SQLite URL"),
    ],
)
def test_a_sqlite_url_the_store_cannot_honour_is_refused(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"AUTHORITY_DATABASE_URL": url})

    assert str(caught.value).startswith(f"database_url: {says}")


def test_a_sqlite_file_named_file_colon_is_a_plain_path() -> None:
    # Without uri=true SQLite opens "file:authority.db" as a file of that name, which the store honours.
    assert load_settings({"AUTHORITY_DATABASE_URL": "sqlite+aiosqlite:///file:authority.db"}).database_url


def test_durations_up_to_ten_years_are_accepted() -> None:
    settings = load_settings({"AUTHORITY_REFRESH_TOKEN_TTL": "3650d", "AUTHORITY_REFRESH_TOKEN_REUSE_GRACE": "0"})

    assert settings.refresh_token_ttl == 3650 * 86400
    assert settings.refresh_token_reuse_grace == 0


def test_the_spacing_of_log_reads_takes_milliseconds_and_zero() -> None:
    with pytest.raises(ConfigError) as negative:
        Settings(revocation_min_read_interval=-0.001)
    assert negative.value.option == "revocation_min_read_interval"
    assert load_settings({}).revocation_min_read_interval == 0.01
    assert load_settings({"AUTHORITY_REVOCATION_MIN_READ_INTERVAL": "50ms"}).revocation_min_read_interval == 0.05
    assert load_settings({"AUTHORITY_REVOCATION_MIN_READ_INTERVAL": "0"}).revocation_min_read_interval == 0
    # The shortest poll the default allows is its own: the interval may equal the poll.
    assert load_settings({"AUTHORITY_REVOCATION_POLL_INTERVAL": "10ms"}).revocation_min_read_interval == 0.01


def test_the_wait_for_an_explanation_takes_milliseconds_and_zero() -> None:
    assert load_settings({}).explanation_wait == 0.25
    assert load_settings({"AUTHORITY_EXPLANATION_WAIT": "2s"}).explanation_wait == 2
    assert load_settings({"AUTHORITY_EXPLANATION_WAIT": "0"}).explanation_wait == 0
    with pytest.raises(ConfigError) as negative:
        Settings(explanation_wait=-0.001)
    assert negative.value.option == "explanation_wait"


def test_settings_are_frozen() -> None:
    settings = Settings()

    with pytest.raises(AttributeError):
        settings.listen = "0.0.0.0:1"  # type: ignore[misc]


PG = "postgresql+asyncpg://authority@db/authority"


@pytest.mark.parametrize(
    ("environ", "option", "says"),
    [
        ({"AUTHORITY_DATABASE_URL": PG, "AUTHORITY_DATABASE_TRANSACTION_POOLING": "true"},
         "listen_database_url", "must be set under database_transaction_pooling"),
        ({"AUTHORITY_DATABASE_TRANSACTION_POOLING": "true"}, "database_transaction_pooling", "PostgreSQL"),
        ({"AUTHORITY_DATABASE_URL": PG + "?host=a:5432&host=b:5432&target_session_attrs=any"}, "database_url",
         "read-write"),
        ({"AUTHORITY_DATABASE_URL": PG, "AUTHORITY_LISTEN_DATABASE_URL": PG + "?target_session_attrs=standby"},
         "listen_database_url", "read-write"),
        ({"AUTHORITY_LISTEN_DATABASE_URL": "sqlite+aiosqlite:///x.db"}, "listen_database_url", "postgresql"),
    ],
)
def test_high_availability_settings_are_checked_at_start(environ: dict[str, str], option: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(environ)
    assert refused.value.option == option and says in str(refused.value)


def test_transaction_pooling_with_a_listener_url_is_accepted_and_the_url_is_masked() -> None:
    settings = load_settings({
        "AUTHORITY_DATABASE_URL": PG, "AUTHORITY_DATABASE_TRANSACTION_POOLING": "yes",
        "AUTHORITY_LISTEN_DATABASE_URL": "postgresql+asyncpg://authority:secret@/authority?host=a:5432&host=b:5432"
        "&target_session_attrs=read-write",
    })
    assert settings.database_transaction_pooling
    assert "secret" not in describe(settings)["listen_database_url"]


def test_session_limits_and_the_total_cap() -> None:
    classes = load_settings({"AUTHORITY_SESSION_LIMITS": "mobile=1, web=2,*=1"})
    capped = load_settings({"AUTHORITY_SESSION_LIMITS": "mobile=1,web=2", "AUTHORITY_MAX_SESSIONS_PER_SUBJECT": "2"})

    assert classes.class_limits == {"mobile": 1, "web": 2, "*": 1}
    assert classes.total_session_cap == 4  # not set: the sum of the class limits
    assert capped.total_session_cap == 2
    assert load_settings({}).class_limits == {} and load_settings({}).total_session_cap == 1
    assert load_settings({"AUTHORITY_SESSION_EVENTS_RETENTION": "7d"}).session_events_retention == 7 * 86400
    assert Settings().session_events_retention == 30 * 86400


def test_proof_settings_from_variables_and_flags() -> None:
    environ = {
        "AUTHORITY_AUDIENCES": "web,payments",
        "AUTHORITY_PROOF_MAX_AGE": "30s",
        "AUTHORITY_PROOF_REPLAY_CACHE_SIZE": "5000",
        "AUTHORITY_REQUIRE_PROOF_OF_POSSESSION": "payments",
    }

    settings = load_settings(environ)
    flagged = load_settings(environ, require_proof_of_possession="true", proof_max_age="250ms")

    assert (settings.proof_max_age, settings.proof_replay_cache_size) == (30.0, 5000)
    assert [settings.proof_required_for(a) for a in ("web", "payments")] == [False, True]
    assert [flagged.proof_required_for(a) for a in ("web", "payments")] == [True, True]
    assert flagged.proof_max_age == 0.25
    assert not Settings().proof_required_for("token-authority")


def test_an_unknown_audience_in_require_proof_of_possession_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"AUTHORITY_REQUIRE_PROOF_OF_POSSESSION": "payments"})

    assert "'payments' is not one of the audiences" in str(caught.value)


@pytest.mark.parametrize("text", ["3651d", "99999999999999999999999d"])
def test_a_duration_over_ten_years_is_refused_where_it_is_read(text: str) -> None:
    # Flags such as keys rotate --publish-ahead and token issue --ttl read durations too:
    # one too long to compute a time from is refused there, not stored.
    with pytest.raises(ConfigError) as caught:
        parse_duration("--publish-ahead", text)

    assert caught.value.option == "--publish-ahead" and "at most 3650d" in str(caught.value)
    assert parse_duration("--publish-ahead", "3650d") == MAX_DURATION_SECONDS
