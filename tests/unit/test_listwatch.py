"""How runtime/listwatch.py reads a watch's stream: lines across chunks, bookmarks, and the API server's
ERROR events (410 Gone: list again). The stream's bytes are the API server's own, captured from one."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from kubetune.runtime.listwatch import Expired, ListWatch, lines

GONE = (
    b'{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
    b'"message":"too old resource version: 1 (100232)","reason":"Expired","code":410}}\n'
)


class Stream:
    """A watch's response as urllib3 hands it over: its body in the chunks it came in."""

    def __init__(self, *chunks: bytes):
        self.chunks, self.released, self.closed = chunks, False, False

    def stream(self, amt: Any = None, decode_content: bool = True) -> Any:
        yield from self.chunks

    def release_conn(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True


class Answers:
    """A client whose one watch answers `stream`."""

    def __init__(self, stream: Stream):
        self.response = stream

    def watch(self, path: str, query: list[tuple[str, str]], timeout: Any) -> Stream:
        return self.response


def event(kind: str, name: str, version: str) -> bytes:
    obj = {"metadata": {"name": name, "resourceVersion": version}}
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def watch_on(stream: Stream, seen: list[tuple[str, str]]) -> ListWatch:
    return ListWatch(
        Answers(stream),  # type: ignore[arg-type]
        "Pod",
        "ns",
        None,
        on_listed=lambda *_: None,
        on_event=lambda kind, obj: seen.append((kind, obj["metadata"]["name"])),
    )


def test_events_split_across_chunks_or_sharing_one_come_whole_and_in_order() -> None:
    whole = event("ADDED", "a", "5") + event("MODIFIED", "a", "6") + event("DELETED", "b", "7")
    assert [json.loads(x)["type"] for x in lines(Stream(whole[:10], whole[10:90], whole[90:]))] == [
        "ADDED", "MODIFIED", "DELETED"
    ]  # fmt: skip
    assert list(lines(Stream(b"\n", event("ADDED", "a", "5")[:-1]))) == [event("ADDED", "a", "5")[:-1]]


def test_a_watch_hands_on_each_change_and_resumes_from_the_last_version_bookmarks_included() -> None:
    seen: list[tuple[str, str]] = []
    stream = Stream(event("ADDED", "a", "5"), event("BOOKMARK", "", "9"))
    assert watch_on(stream, seen).watch("4", threading.Event()) == "9"
    assert seen == [("ADDED", "a")]
    assert stream.released and not stream.closed  # ended by the API server: the connection is reusable


def test_a_410_error_event_is_gone_and_any_other_is_a_failure() -> None:
    stream = Stream(event("ADDED", "a", "5"), GONE)
    with pytest.raises(Expired):
        watch_on(stream, []).watch("4", threading.Event())
    assert stream.closed  # left half-read: never back to the pool

    refused = GONE.replace(b'"code":410', b'"code":500').replace(b"Expired", b"InternalError")
    with pytest.raises(ApiException) as error:
        watch_on(Stream(refused), []).watch("4", threading.Event())
    assert error.value.status == 500


def test_an_event_the_controller_fails_on_is_logged_and_the_watch_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[tuple[str, str]] = []

    def on_event(kind: str, obj: dict[str, Any]) -> None:
        if obj["metadata"]["name"] == "poison":
            raise KeyError("spec")
        seen.append((kind, obj["metadata"]["name"]))

    watch = watch_on(Stream(event("ADDED", "poison", "5"), event("ADDED", "b", "6")), seen)
    watch.on_event = on_event
    assert watch.watch("4", threading.Event()) == "6"
    assert seen == [("ADDED", "b")]
    assert "ADDED event of Pod /poison not handled" in caplog.text
