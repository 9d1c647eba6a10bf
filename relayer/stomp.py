"""STOMP 1.2 frames: a pure codec with no I/O.

`FrameParser` takes bytes as they come off a WebSocket (a frame may be split across messages,
several frames may share one, heart-beat EOLs arrive alone or between frames) and returns whole
`Frame`s. `encode_frame` turns a `Frame` into bytes. Nothing here knows about sockets or time, so
the tests drive it with byte strings alone.

Why not stomp.py's `parse_frame`: it expects exactly one frame with its NUL already stripped,
ignores `content-length` (so a body holding NUL or multi-byte text is cut wrongly) and accepts
unknown escapes silently. We keep its `calculate_heartbeats` (see `negotiate_heartbeats`) and
write the byte-exact splitting it lacks. The parser sits on the relayer's hot path (one call per
WebSocket message at tens of thousands of messages per second), hence the plain `bytes.find`
loops.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stomp.utils import calculate_heartbeats

# Frames whose headers are never escaped (STOMP 1.2, "Value Encoding").
_UNESCAPED_COMMANDS = frozenset({"CONNECT", "CONNECTED"})
_ESCAPES = {ord("\\"): "\\\\", ord("\r"): "\\r", ord("\n"): "\\n", ord(":"): "\\c"}
_UNESCAPES = {"\\": "\\", "r": "\r", "n": "\n", "c": ":"}

HEARTBEAT = b"\n"
DEFAULT_MAX_FRAME_BYTES = 1 << 20


class StompError(Exception):
    """Root of the STOMP errors.

    StompError
     +-- StompProtocolError   the peer sent bytes that are not STOMP 1.2 (fatal for the session)
     +-- StompServerError     the server sent an ERROR frame (it closes the connection after it)
    """


class StompProtocolError(StompError):
    pass


class StompServerError(StompError):
    def __init__(self, frame: Frame) -> None:
        self.frame = frame
        message = frame.headers.get("message") or frame.body.decode("utf-8", "replace").strip()
        super().__init__(message or "ERROR frame without a message")

    @property
    def receipt_id(self) -> str | None:
        return self.frame.headers.get("receipt-id")


@dataclass(slots=True)
class Frame:
    command: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def escape_header(value: str) -> str:
    return value.translate(_ESCAPES)


def unescape_header(value: str) -> str:
    """Undo STOMP 1.2 header escaping; any escape but \\\\ \\r \\n \\c is a protocol error."""
    if "\\" not in value:
        return value
    out: list[str] = []
    chars = iter(value)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        escaped = next(chars, None)
        if escaped is None or escaped not in _UNESCAPES:
            raise StompProtocolError(f"invalid header escape \\{escaped or ''} in {value!r}")
        out.append(_UNESCAPES[escaped])
    return "".join(out)


def encode_frame(frame: Frame) -> bytes:
    """Serialise a frame; adds `content-length` (in bytes) whenever there is a body."""
    escape = frame.command not in _UNESCAPED_COMMANDS
    lines = [frame.command]
    for name, value in frame.headers.items():
        if name == "content-length":
            continue
        if escape:
            name, value = escape_header(name), escape_header(value)
        elif any(c in name for c in "\r\n:") or "\n" in value or "\r" in value:
            # CONNECT headers cannot be escaped, so a newline would forge another header and a
            # colon in a name would move the name/value split.
            raise StompProtocolError(
                f"{frame.command} header {name!r} contains a line break or a colon in its name"
            )
        lines.append(f"{name}:{value}")
    if frame.body:
        lines.append(f"content-length:{len(frame.body)}")
    return ("\n".join(lines) + "\n\n").encode() + frame.body + b"\x00"


class FrameParser:
    """Incremental STOMP 1.2 frame parser.

    `feed(data)` returns the frames completed by `data` (possibly none). Bytes of an incomplete
    frame are kept for the next call. Raises StompProtocolError on malformed input; the parser is
    then unusable, as the session must be.
    """

    __slots__ = ("_buffer", "_max_frame_bytes", "heartbeats")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._buffer = b""
        self._max_frame_bytes = max_frame_bytes
        self.heartbeats = 0  # EOLs seen between frames: the peer's heart-beats

    def feed(self, data: bytes | str) -> list[Frame]:
        if isinstance(data, str):
            data = data.encode()
        buffer = self._buffer + data if self._buffer else data
        frames: list[Frame] = []
        pos = 0
        end = len(buffer)
        while pos < end:
            # Heart-beats, and the EOLs a server may send after a frame's NUL.
            byte = buffer[pos]
            if byte == 0x0A:
                self.heartbeats += 1
                pos += 1
                continue
            if byte == 0x0D:
                if pos + 1 >= end:
                    break  # wait for the LF of a CRLF
                if buffer[pos + 1] != 0x0A:
                    raise StompProtocolError("bare CR between frames")
                self.heartbeats += 1
                pos += 2
                continue
            frame_end = self._parse_one(buffer, pos, frames)
            if frame_end < 0:
                break
            pos = frame_end
        self._buffer = buffer[pos:]
        if len(self._buffer) > self._max_frame_bytes:
            raise StompProtocolError(
                f"incomplete frame exceeds {self._max_frame_bytes} bytes; refusing to buffer more"
            )
        return frames

    def _parse_one(self, buffer: bytes, start: int, frames: list[Frame]) -> int:
        """Parse the frame starting at `start`; return the offset after it, or -1 if incomplete."""
        # The blank line ending the headers is LF or CRLF, after the last header's LF.
        lf_end = buffer.find(b"\n\n", start)
        crlf_end = buffer.find(b"\n\r\n", start, lf_end if lf_end >= 0 else len(buffer))
        if crlf_end >= 0:
            head, body_start = buffer[start:crlf_end], crlf_end + 3
        elif lf_end >= 0:
            head, body_start = buffer[start:lf_end], lf_end + 2
        else:
            return -1
        try:
            text = head.decode()
        except UnicodeDecodeError as exc:
            raise StompProtocolError("frame headers are not UTF-8") from exc
        lines = text.split("\n")
        if "\r" in text:
            lines = [line.removesuffix("\r") for line in lines]
        command = lines[0]
        if not command or not command.isalpha():
            raise StompProtocolError(f"invalid command {command[:40]!r}")
        # Checked once per frame, not per header: this loop runs for every tick.
        escaped = "\\" in text and command not in _UNESCAPED_COMMANDS
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise StompProtocolError(f"header line without a colon: {line[:60]!r}")
            if escaped:
                name, value = unescape_header(name), unescape_header(value)
            if name not in headers:  # the first of repeated headers wins
                headers[name] = value
        length_text = headers.get("content-length")
        if length_text is not None:
            if not (length_text.isascii() and length_text.isdigit()):  # "²".isdigit() is True
                raise StompProtocolError(f"invalid content-length {length_text!r}")
            body_end = body_start + int(length_text)
            if body_end >= len(buffer):
                return -1
            if buffer[body_end] != 0:
                raise StompProtocolError("frame body is not followed by NUL at content-length")
        else:
            body_end = buffer.find(b"\x00", body_start)
            if body_end < 0:
                return -1
        frames.append(Frame(command, headers, buffer[body_start:body_end]))
        return body_end + 1


def negotiate_heartbeats(server_header: str | None, client: tuple[int, int]) -> tuple[int, int]:
    """(send every ms, expect from server every ms) after CONNECTED; 0 means none.

    `client` is what we offered in CONNECT: (cx = we can send every, cy = we want every).
    """
    if not server_header:
        return 0, 0
    parts = server_header.split(",")
    if len(parts) != 2 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
        raise StompProtocolError(f"invalid heart-beat header {server_header!r}")
    server = (str(int(parts[0])), str(int(parts[1])))  # stomp.py compares against "0"
    send_ms, receive_ms = calculate_heartbeats(server, client)
    return int(send_ms), int(receive_ms)
