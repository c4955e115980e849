"""What a person reads when the PostgreSQL server goes away: one sentence, however libpq put it."""

import pytest

from backups_app.db.postgres_client import SERVER_GONE_WORDS, plain_reason


@pytest.mark.parametrize(
    "text",
    [
        "server closed the connection unexpectedly",
        'connection to server at "127.0.0.1", port 42267 failed: FATAL:  the database system is '
        "shutting down",
        "FATAL:  terminating connection due to administrator command",
        'connection to server at "127.0.0.1", port 5432 failed: Connection refused',
    ],
)
def test_it_words_the_server_going_away_as_one_sentence(text):
    assert plain_reason(text) == SERVER_GONE_WORDS


def test_it_keeps_any_other_reason_as_it_is():
    assert plain_reason('relation "item" does not exist') == 'relation "item" does not exist'
