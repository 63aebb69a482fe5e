"""The SIPp trace parser and media helpers the e2e tests rely on (pure)."""

from __future__ import annotations

from testbed.sipp import (
    SipMessage,
    parse_message,
    split_trace,
    ulaw_encode,
    ulaw_loud,
)

INVITE = (
    "INVITE sip:600111222@127.0.0.2:20416 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:26273;rport;branch=z9hG4bKPj1\r\n"
    'From: "Pepe" <sip:gateway@127.0.0.1>;tag=abc\r\n'
    "To: <sip:600111222@127.0.0.2>\r\n"
    "Call-ID: c1\r\n"
    "CSeq: 101 INVITE\r\n"
    "P-Asserted-Identity: <sip:+34910000000@127.0.0.1>\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 66\r\n"
    "\r\n"
    "v=0\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 20002 RTP/AVP 0 101\r\n"
    "a=x\r\n"
)
OK = "SIP/2.0 200 OK\r\nCall-ID: c1\r\nCSeq: 101 INVITE\r\nContent-Length: 0\r\n\r\n"
SEP = "----------------------------------------------- 2026-11-26 06:51:11.527912\n"


def trace(*parts: tuple[str, str]) -> str:
    out = ""
    for kind, text in parts:
        first = (
            f"UDP message received [{len(text)}] bytes :"
            if kind == "in"
            else f"UDP message sent ({len(text)} bytes):"
        )
        out += f"{SEP}{first}\n\n{text}\n\n"
    return out


def test_trace_of_an_invite_and_its_answer() -> None:
    chunks = split_trace(trace(("in", INVITE), ("out", OK)))
    messages = [parse_message(c) for c in chunks]
    invite, ok = messages
    assert isinstance(invite, SipMessage) and isinstance(ok, SipMessage)
    assert (invite.sent, invite.method, invite.uri_user) == (False, "INVITE", "600111222")
    assert invite.from_user == "gateway" and invite.from_display == "Pepe"
    assert invite.pai_user == "+34910000000"
    assert invite.caller_ids == {"gateway", "+34910000000"}
    assert invite.sdp_media() == ("127.0.0.1", 20002)
    assert (ok.sent, ok.status, ok.method, ok.call_id) == (True, 200, "INVITE", "c1")
    assert ok.sdp_media() is None
    assert "got INVITE sip:600111222@127.0.0.2:20416 SIP/2.0 From: " in invite.summary()
    assert "PAI: <sip:+34910000000@127.0.0.1>" in invite.summary()


def test_a_message_cut_short_is_not_taken_yet() -> None:
    whole = split_trace(trace(("in", INVITE)))[0]
    assert parse_message(whole) is not None
    assert parse_message(whole[: whole.index("m=audio")]) is None
    assert parse_message("UDP message received [3] bytes :\n\nINV") is None
    assert parse_message("Resolving remote host\n") is None


def test_ulaw_tone_is_loud_and_silence_is_not() -> None:
    assert ulaw_encode(0) == 0xFF
    assert not ulaw_loud(ulaw_encode(0))
    assert not ulaw_loud(ulaw_encode(-20))
    assert ulaw_loud(ulaw_encode(8000))
    assert ulaw_loud(ulaw_encode(-8000))
    assert ulaw_encode(32767) == 0x80
