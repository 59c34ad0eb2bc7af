"""Which reply a logger's frame asks for (9014 data reply, 9013 notification reply), and its text."""

from __future__ import annotations

from aqpipe.decoders.hj212 import Frame, reply_frame

# Commands a logger sends to the platform that answer a platform request: replying
# to them would start a loop. (HJ 212-2017: 9011 request reply, 9012 execution
# result, 9013 notification reply, 9014 data reply.)
_REPLY_COMMANDS = frozenset({"9011", "9012", "9013", "9014"})
# Notifications from the logger, answered with 9013 (通知应答). 1013: the logger asks
# for a time calibration (现场机时间校准请求); the time itself would come from a later
# 1012 the gateway does not send (it issues no commands).
# 9015: the HJ 212-2025 heartbeat (心跳), answered by the gateway itself with the
# notification reply 9013 when its Flag asks for a reply (it is not published).
_NOTIFICATIONS = frozenset({"1013", "9015"})
HEARTBEAT = "9015"

# 9011 request reply (请求应答) result codes, HJ 212-2017 table (QnRtn): 3 PW error,
# 4 MN error. Sent to a refused logger only with hj212_gateway.auth_reply = "9011".
REFUSAL_QNRTN = {"auth": "3", "unknown_mn": "4"}


def reply_command(frame: Frame) -> str | None:
    """The CN of the reply the platform owes the logger, or None when it asked for nothing.

    Flag bit 0 asks for a reply. Uploads (2xxx data, 3xxx parameters and states)
    get the 9014 data reply; the 1013 notification gets 9013. 9011/9012 are what a
    logger sends to answer *platform* requests, which the gateway never makes, so
    it never has one to send; other 1xxx codes are platform-to-logger commands.
    """
    if frame.flag is None or not frame.flag & 1 or frame.cn in _REPLY_COMMANDS:
        return None
    if frame.cn in _NOTIFICATIONS:
        return "9013"
    if frame.cn[0] in "23":
        return "9014"
    return None


def reply_for(frame: Frame, version: str | None = None) -> str | None:
    """The reply frame (CRLF-terminated) for `frame`, or None; `version` is the registry's pin."""
    cn = reply_command(frame)
    if cn is None:
        return None
    return reply_frame(frame, cn, version)


def refusal_reply(frame: Frame, refusal: str, version: str | None = None) -> str:
    """9011 with QnRtn=3 (PW error) or 4 (MN error); it echoes the logger's own PW, never the registered one."""
    return reply_frame(frame, "9011", version, cp=f"QnRtn={REFUSAL_QNRTN[refusal]}")
