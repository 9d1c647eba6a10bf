"""The STOMP 1.2 codec, driven with bytes alone (docs/UPSTREAM.md)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relayer.stomp import (
    DEFAULT_MAX_FRAME_BYTES,
    Frame,
    FrameParser,
    StompError,
    StompProtocolError,
    StompServerError,
    encode_frame,
    negotiate_heartbeats,
)

TICK_BODY = (
    '{"code":"A005930","dt":"2025-07-24T06:56:04Z","name":"삼성전자","close":71200}'.encode()
)
MESSAGE = (
    b"MESSAGE\nsubscription:sub-0\nmessage-id:m-1\ncontent-type:application/json\n"
    b"content-length:" + str(len(TICK_BODY)).encode() + b"\n\n" + TICK_BODY + b"\x00\n"
)
MESSAGE_FRAME = Frame(
    "MESSAGE",
    {
        "subscription": "sub-0",
        "message-id": "m-1",
        "content-type": "application/json",
        "content-length": str(len(TICK_BODY)),
    },
    TICK_BODY,
)
CRLF_CONNECTED = b"CONNECTED\r\nversion:1.2\r\nheart-beat:4000,4000\r\nserver:x\r\n\r\n\x00\r\n"
CRLF_CONNECTED_FRAME = Frame(
    "CONNECTED", {"version": "1.2", "heart-beat": "4000,4000", "server": "x"}, b""
)
RECEIPT = b"RECEIPT\nreceipt-id:r-1\n\n\x00"
RECEIPT_FRAME = Frame("RECEIPT", {"receipt-id": "r-1"})


def parse_all(*chunks: bytes | str, parser: FrameParser | None = None) -> list[Frame]:
    parser = parser or FrameParser()
    frames: list[Frame] = []
    for chunk in chunks:
        frames.extend(parser.feed(chunk))
    return frames


# --------------------------------------------------------------------------------------------
# Splitting the byte stream


def test_korean_body_has_more_bytes_than_characters() -> None:
    assert len(TICK_BODY) > len(TICK_BODY.decode())  # the premise of the content-length tests


@pytest.mark.parametrize(
    ("raw", "expected", "heartbeats"),
    [
        (MESSAGE, MESSAGE_FRAME, 1),
        (CRLF_CONNECTED, CRLF_CONNECTED_FRAME, 1),
        (RECEIPT, RECEIPT_FRAME, 0),
        (
            b"MESSAGE\nsubscription:s\n\nno length\x00\r\n\n",
            Frame("MESSAGE", {"subscription": "s"}, b"no length"),
            2,
        ),
    ],
    ids=["content-length", "crlf", "no-body", "no-content-length"],
)
def test_frame_split_at_every_offset(raw: bytes, expected: Frame, heartbeats: int) -> None:
    for cut in range(len(raw) + 1):
        parser = FrameParser()
        first = parser.feed(raw[:cut])
        second = parser.feed(raw[cut:])
        assert first + second == [expected], cut
        assert parser.heartbeats == heartbeats, cut
        assert parser.feed(b"") == []


def test_frame_fed_one_byte_at_a_time() -> None:
    parser = FrameParser()
    frames = parse_all(*(MESSAGE[i : i + 1] for i in range(len(MESSAGE))), parser=parser)
    assert frames == [MESSAGE_FRAME]
    assert parser.heartbeats == 1


def test_several_frames_in_one_feed() -> None:
    parser = FrameParser()
    error = b"ERROR\nmessage:bad destination\nreceipt-id:r-9\n\nbody\x00"
    frames = parser.feed(RECEIPT + b"\n" + MESSAGE + CRLF_CONNECTED + error)
    assert frames == [
        RECEIPT_FRAME,
        MESSAGE_FRAME,
        CRLF_CONNECTED_FRAME,
        Frame("ERROR", {"message": "bad destination", "receipt-id": "r-9"}, b"body"),
    ]
    assert parser.heartbeats == 3  # after RECEIPT, after MESSAGE, after CONNECTED


def test_complete_frames_are_returned_and_the_rest_is_kept() -> None:
    parser = FrameParser()
    assert parser.feed(RECEIPT + MESSAGE[:20]) == [RECEIPT_FRAME]
    assert parser.feed(MESSAGE[20:]) == [MESSAGE_FRAME]


@pytest.mark.parametrize(
    ("chunks", "count"),
    [
        ([b"\n"], 1),
        (["\n"], 1),
        ([b"\r\n"], 1),
        ([b"\n\n\n"], 3),
        ([b"\r\n\n\r\n"], 3),
        ([b"\r", b"\n"], 1),  # CRLF split across WebSocket messages
        ([b"\n", b"\r", b"\n", b"\n"], 3),
    ],
)
def test_heartbeats_alone(chunks: list[bytes | str], count: int) -> None:
    parser = FrameParser()
    assert parse_all(*chunks, parser=parser) == []
    assert parser.heartbeats == count


def test_heartbeats_between_frames_and_after_nul() -> None:
    parser = FrameParser()
    frames = parse_all(
        b"\n", RECEIPT + b"\r\n\n", b"\n" + RECEIPT + b"\n", b"\r\n", RECEIPT, parser=parser
    )
    assert frames == [RECEIPT_FRAME] * 3
    assert parser.heartbeats == 6


def test_bare_cr_between_frames_is_an_error() -> None:
    with pytest.raises(StompProtocolError):
        FrameParser().feed(b"\rRECEIPT\nreceipt-id:1\n\n\x00")


def test_crlf_header_lines() -> None:
    frames = FrameParser().feed(
        b"MESSAGE\r\nsubscription:7\r\nmessage-id:9\r\ncontent-length:2\r\n\r\nok\x00"
    )
    assert frames == [
        Frame("MESSAGE", {"subscription": "7", "message-id": "9", "content-length": "2"}, b"ok")
    ]


def test_crlf_headers_with_lf_pairs_in_the_body() -> None:
    # The body holds "\n\n", which must not be taken for the end of CRLF headers.
    frames = FrameParser().feed(b"MESSAGE\r\nsubscription:7\r\n\r\na\n\nb\x00")
    assert frames == [Frame("MESSAGE", {"subscription": "7"}, b"a\n\nb")]


# --------------------------------------------------------------------------------------------
# Bodies and content-length


def test_content_length_counts_bytes_of_korean_text() -> None:
    body = "삼성전자 체결".encode()
    raw = b"MESSAGE\ncontent-length:" + str(len(body)).encode() + b"\n\n" + body + b"\x00"
    assert len(body) == 19 and len(body.decode()) == 7
    assert FrameParser().feed(raw) == [
        Frame("MESSAGE", {"content-length": "19"}, "삼성전자 체결".encode())
    ]


def test_content_length_body_may_contain_nul() -> None:
    raw = b"MESSAGE\ncontent-length:7\n\n\x00ab\x00\x00c\x00\x00\n"
    parser = FrameParser()
    assert parser.feed(raw) == [Frame("MESSAGE", {"content-length": "7"}, b"\x00ab\x00\x00c\x00")]
    assert parser.heartbeats == 1


def test_content_length_zero() -> None:
    assert FrameParser().feed(b"RECEIPT\ncontent-length:0\nreceipt-id:5\n\n\x00") == [
        Frame("RECEIPT", {"content-length": "0", "receipt-id": "5"}, b"")
    ]


def test_missing_content_length_reads_to_the_first_nul() -> None:
    parser = FrameParser()
    frames = parser.feed(b"MESSAGE\nsubscription:1\n\nhello \xea\xb0\x80\x00RECEIPT\n\n\x00")
    assert frames == [
        Frame("MESSAGE", {"subscription": "1"}, "hello 가".encode()),
        Frame("RECEIPT", {}, b""),
    ]


def test_wrong_byte_at_content_length_is_an_error() -> None:
    with pytest.raises(StompProtocolError):
        FrameParser().feed(b"MESSAGE\ncontent-length:3\n\nabcd\x00")


def test_wrong_byte_at_content_length_is_caught_across_feeds() -> None:
    parser = FrameParser()
    assert parser.feed(b"MESSAGE\ncontent-length:3\n\nabc") == []
    with pytest.raises(StompProtocolError):
        parser.feed(b"d\x00")


@pytest.mark.parametrize("value", [b"", b"-1", b"abc", b" 3", b"3 ", b"1e3", "²".encode()])
def test_invalid_content_length_is_an_error(value: bytes) -> None:
    with pytest.raises(StompProtocolError):
        FrameParser().feed(b"MESSAGE\ncontent-length:" + value + b"\n\nabc\x00")


def test_str_input_is_treated_as_utf8() -> None:
    # content-length 6 counts the UTF-8 bytes of two Hangul syllables, not the 2 characters.
    parser = FrameParser()
    assert parser.feed("MESSAGE\nsubscription:가\ncontent-length:6\n\n삼성\x00\n") == [
        Frame("MESSAGE", {"subscription": "가", "content-length": "6"}, "삼성".encode())
    ]
    assert parser.heartbeats == 1


def test_str_and_bytes_chunks_mix() -> None:
    raw = "MESSAGE\ncontent-length:6\n\n삼성\x00"
    encoded = raw.encode()
    assert parse_all(encoded[:10], raw[10:]) == [
        Frame("MESSAGE", {"content-length": "6"}, "삼성".encode())
    ]


# --------------------------------------------------------------------------------------------
# Headers


def test_header_escaping_round_trip() -> None:
    frame = Frame(
        "SEND",
        {"weird:name\\": "a\\b\rc\nd:e", "destination": "/topic/x"},
        b"payload",
    )
    raw = encode_frame(frame)
    assert raw == (
        b"SEND\nweird\\cname\\\\:a\\\\b\\rc\\nd\\ce\ndestination:/topic/x\n"
        b"content-length:7\n\npayload\x00"
    )
    parsed = FrameParser().feed(raw)
    assert parsed == [
        Frame(
            "SEND",
            {"weird:name\\": "a\\b\rc\nd:e", "destination": "/topic/x", "content-length": "7"},
            b"payload",
        )
    ]


def test_escaped_header_values_are_decoded() -> None:
    frames = FrameParser().feed(b"MESSAGE\nk\\cey:a\\cb\\nc\\\\d\\re\n\n\x00")
    assert frames == [Frame("MESSAGE", {"k:ey": "a:b\nc\\d\re"}, b"")]


@pytest.mark.parametrize(
    "header", [b"key:a\\tb", b"key:trailing\\", b"ke\\ty:v", b"key:\\x41", b"key:\\C"]
)
def test_invalid_escape_is_an_error(header: bytes) -> None:
    with pytest.raises(StompProtocolError):
        FrameParser().feed(b"MESSAGE\n" + header + b"\n\n\x00")


def test_connected_headers_are_not_unescaped() -> None:
    frames = FrameParser().feed(b"CONNECTED\nversion:1.2\nserver:a\\tb\\c\\\ncolon:x:y\n\n\x00")
    assert frames == [
        Frame("CONNECTED", {"version": "1.2", "server": "a\\tb\\c\\", "colon": "x:y"}, b"")
    ]


def test_connect_headers_are_not_unescaped() -> None:
    frames = FrameParser().feed(b"CONNECT\nauthorization:k\\e\\ny\n\n\x00")
    assert frames == [Frame("CONNECT", {"authorization": "k\\e\\ny"}, b"")]


def test_connect_headers_are_not_escaped() -> None:
    frame = Frame(
        "CONNECT",
        {
            "accept-version": "1.2",
            "heart-beat": "5000,5000",
            "authorization": "k\\e:y",
            "host": "/",
        },
    )
    raw = encode_frame(frame)
    assert raw == (
        b"CONNECT\naccept-version:1.2\nheart-beat:5000,5000\nauthorization:k\\e:y\nhost:/\n\n\x00"
    )
    assert FrameParser().feed(raw) == [frame]


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "key\nforged:header"},
        {"authorization": "key\r"},
        {"authorization": "key\r\n"},
        {"bad\nname": "v"},
        {"bad\rname": "v"},
        {"bad:name": "v"},  # cannot be escaped in CONNECT: it would parse as `bad` = `name:v`
    ],
)
def test_encode_refuses_unrepresentable_connect_headers(headers: dict[str, str]) -> None:
    with pytest.raises(StompProtocolError):
        encode_frame(Frame("CONNECT", headers))


def test_encode_rewrites_content_length_in_bytes() -> None:
    body = "삼성".encode()
    raw = encode_frame(Frame("SEND", {"content-length": "2", "destination": "/q"}, body))
    assert raw == b"SEND\ndestination:/q\ncontent-length:6\n\n" + body + b"\x00"
    assert encode_frame(Frame("DISCONNECT", {"receipt": "bye"})) == (
        b"DISCONNECT\nreceipt:bye\n\n\x00"
    )


def test_first_of_repeated_headers_wins() -> None:
    frames = FrameParser().feed(b"MESSAGE\nfoo:1\nfoo:2\nbar:x\nfoo:3\n\n\x00")
    assert frames == [Frame("MESSAGE", {"foo": "1", "bar": "x"}, b"")]


def test_first_of_repeated_content_lengths_wins() -> None:
    frames = FrameParser().feed(b"MESSAGE\ncontent-length:3\ncontent-length:9\n\nab\x00\x00")
    assert frames == [Frame("MESSAGE", {"content-length": "3"}, b"ab\x00")]


def test_header_names_and_values_are_not_trimmed() -> None:
    frames = FrameParser().feed(b"MESSAGE\n foo : bar \nempty:\n:novalue\n\n\x00")
    assert frames == [Frame("MESSAGE", {" foo ": " bar ", "empty": "", "": "novalue"}, b"")]


def test_header_value_may_contain_colons() -> None:
    frames = FrameParser().feed(b"MESSAGE\nmessage-id:a:b:c\n\n\x00")
    assert frames == [Frame("MESSAGE", {"message-id": "a:b:c"}, b"")]


@pytest.mark.parametrize(
    "raw",
    [
        b"MESSAGE\nno-colon\n\n\x00",
        b"MESS AGE\n\n\x00",
        b"123\n\n\x00",
        b"MESSAGE\nkey:\xff\n\n\x00",  # headers must be UTF-8
    ],
)
def test_malformed_frames_are_errors(raw: bytes) -> None:
    with pytest.raises(StompProtocolError):
        FrameParser().feed(raw)


# --------------------------------------------------------------------------------------------
# Limits


def test_incomplete_frame_larger_than_the_limit_is_an_error() -> None:
    parser = FrameParser(max_frame_bytes=64)
    head = b"MESSAGE\ncontent-length:1000\n\n"
    assert parser.feed(head + b"x" * (64 - len(head))) == []  # exactly at the limit is fine
    with pytest.raises(StompProtocolError):
        parser.feed(b"x")


def test_endless_header_section_is_an_error() -> None:
    parser = FrameParser(max_frame_bytes=1024)
    with pytest.raises(StompProtocolError):
        parser.feed(b"MESSAGE\n" + b"h:" + b"v" * 2000)


def test_limit_does_not_count_completed_frames() -> None:
    parser = FrameParser(max_frame_bytes=len(MESSAGE))
    assert parser.feed(MESSAGE * 3) == [MESSAGE_FRAME] * 3
    assert DEFAULT_MAX_FRAME_BYTES == 1 << 20


# --------------------------------------------------------------------------------------------
# Heart-beat negotiation

CLIENT = (5000, 5000)


@pytest.mark.parametrize(
    ("server", "client", "expected"),
    [
        (None, CLIENT, (0, 0)),
        ("", CLIENT, (0, 0)),
        ("0,0", CLIENT, (0, 0)),
        ("5000,5000", (0, 0), (0, 0)),
        ("10000,3000", CLIENT, (5000, 10000)),  # send max(cx, sy); expect max(sx, cy)
        ("1000,8000", CLIENT, (8000, 5000)),
        ("5000,0", (4000, 4000), (0, 5000)),  # server wants none from us
        ("0,5000", (4000, 4000), (5000, 0)),  # server sends none
        ("7000,7000", (0, 4000), (0, 7000)),  # we send none
        ("7000,7000", (4000, 0), (7000, 0)),  # we want none
        ("00,0010", (4000, 4000), (4000, 0)),  # leading zeros: "00" is still zero
    ],
)
def test_negotiate_heartbeats(
    server: str | None, client: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert negotiate_heartbeats(server, client) == expected


@pytest.mark.parametrize(
    "server", ["5000", "5000,5000,5000", "a,b", "-1,5000", "5000;5000", ",", "5000,", "²,0"]
)
def test_malformed_heartbeat_header_is_an_error(server: str) -> None:
    with pytest.raises(StompProtocolError):
        negotiate_heartbeats(server, CLIENT)


# --------------------------------------------------------------------------------------------
# ERROR frames


def test_server_error_exposes_message_and_receipt_id() -> None:
    frame = Frame("ERROR", {"message": "malformed destination", "receipt-id": "sub-3"}, b"x")
    error = StompServerError(frame)
    assert isinstance(error, StompError)
    assert str(error) == "malformed destination"
    assert error.receipt_id == "sub-3"
    assert error.frame is frame


def test_server_error_falls_back_to_the_body() -> None:
    error = StompServerError(Frame("ERROR", {}, "  구독 한도 초과\n".encode()))
    assert str(error) == "구독 한도 초과"
    assert error.receipt_id is None
    assert str(StompServerError(Frame("ERROR"))) == "ERROR frame without a message"


def test_protocol_error_is_a_stomp_error() -> None:
    assert issubclass(StompProtocolError, StompError)
    assert issubclass(StompServerError, StompError)


# --------------------------------------------------------------------------------------------
# Property: encode, cut anywhere, parse back

ESCAPED_COMMANDS = [
    "STOMP", "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "ACK", "NACK", "BEGIN", "COMMIT", "ABORT",
    "DISCONNECT", "MESSAGE", "RECEIPT", "ERROR",
]  # fmt: skip
_TEXT = st.characters(exclude_categories=("Cs",))  # anything UTF-8 can carry
_TRICKY = st.sampled_from(["\\", "\r", "\n", ":", "\\c", "\\n", "\x00", "가", " "])


def _header_text(*, unescaped: bool, name: bool) -> st.SearchStrategy[str]:
    alphabet = st.one_of(_TEXT, _TRICKY)
    text = st.lists(alphabet, max_size=12).map("".join)
    if unescaped:
        forbidden = "\r\n:" if name else "\r\n"
        text = text.filter(lambda s: not any(c in s for c in forbidden))
    return text.filter(lambda s: s != "content-length") if name else text


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    unescaped = draw(st.booleans())
    command = draw(st.sampled_from(["CONNECT", "CONNECTED"] if unescaped else ESCAPED_COMMANDS))
    headers = draw(
        st.dictionaries(
            _header_text(unescaped=unescaped, name=True),
            _header_text(unescaped=unescaped, name=False),
            max_size=5,
        )
    )
    body = draw(st.binary(max_size=64) | st.sampled_from([b"", b"\x00", b"\n\n\x00\n", TICK_BODY]))
    return Frame(command, headers, body)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(frames(), st.lists(st.sampled_from([b"\n", b"\r\n"]), max_size=3)),
             min_size=1, max_size=4),
    st.data(),
)
def test_encoded_frames_cut_into_random_chunks_parse_back(
    items: list[tuple[Frame, list[bytes]]], data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(frame) + b"".join(eols) for frame, eols in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]

    parser = FrameParser()
    parsed = parse_all(*chunks, parser=parser)

    expected = []
    for frame, _ in items:
        headers = dict(frame.headers)
        if frame.body:
            headers["content-length"] = str(len(frame.body))
        expected.append(Frame(frame.command, headers, frame.body))
    assert parsed == expected
    assert parser.heartbeats == sum(len(eols) for _, eols in items)
