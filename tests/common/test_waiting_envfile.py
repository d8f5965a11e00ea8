"""dicomlab.waiting (the one poll-until-deadline helper) and dicomlab.envfile (the one .env reader)."""

from __future__ import annotations

import itertools

import pytest

from dicomlab.envfile import parse_env_text, read_env_file
from dicomlab.waiting import deadline_loop, poll_until, wait_until


def test_wait_until_returns_the_first_truthy_value():
    calls = itertools.count(1)
    assert wait_until(lambda: (n := next(calls)) >= 3 and n, 30, interval=0.001) == 3


def test_the_predicate_is_asked_even_with_no_time_left():
    assert wait_until(lambda: "ready", 0) == "ready"
    assert poll_until(lambda: [1], 0) == [1]


def test_wait_until_raises_the_error_asked_for_naming_what_it_waited_for():
    with pytest.raises(TimeoutError, match="timed out after 0.05 s waiting for the moon"):
        wait_until(lambda: False, 0.05, interval=0.01, what="the moon")
    with pytest.raises(AssertionError, match="the moon"):
        wait_until(lambda: None, 0.05, interval=0.01, what="the moon", error=AssertionError)


def test_alive_gives_up_at_once_with_its_reason():
    """With 60 s to wait, only ``alive`` can end this with a RuntimeError (a timeout is a TimeoutError)."""
    with pytest.raises(RuntimeError, match="the server: it exited"):
        wait_until(lambda: False, 60, what="the server", alive=lambda: "it exited")


def test_poll_until_says_none_when_the_time_is_up():
    assert poll_until(lambda: 0, 0.05, interval=0.01) is None


def test_deadline_loop_ends():
    assert sum(1 for _ in deadline_loop(0.05, 0.01)) >= 1
    assert list(deadline_loop(0)) == []


def test_env_text_as_compose_reads_it():
    text = "# comment\n\nA=1\n B = two words \nQ1='quoted'\nQ2=\"dq\"\nODD='x\nNOEQ\nA=again\nEMPTY=\n"
    assert parse_env_text(text) == {"A": "again", "B": "two words", "Q1": "quoted", "Q2": "dq", "ODD": "'x",
                                    "EMPTY": ""}


def test_a_missing_env_file_is_empty_and_a_folder_is_an_error(tmp_path):
    assert read_env_file(tmp_path / "nope.env") == {}
    (tmp_path / "x.env").write_text("K=v\n")
    assert read_env_file(tmp_path / "x.env") == {"K": "v"}
    with pytest.raises(OSError):
        read_env_file(tmp_path)  # exists, cannot be read as a file: said, not taken for "no secrets"
