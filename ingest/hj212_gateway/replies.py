"""Which reply a logger's frame asks for (9014 data reply, 9013 notification reply), and its text."""

from __future__ import annotations

from aqpipe.decoders.hj212 import Frame, build_frame, reply_9014

# Commands a logger sends to the platform that answer a platform request: replying
# to them would start a loop. (HJ 212-2017: 9011 request reply, 9012 execution
# result, 9013 notification reply, 9014 data reply.)
_REPLY_COMMANDS = frozenset({"9011", "9012", "9013", "9014"})
# Notifications from the logger, answered with 9013 (通知应答). 1013: the logger asks
# for a time calibration (现场机时间校准请求); the time itself would come from a later
# 1012 the gateway does not send (it issues no commands).
_NOTIFICATIONS = frozenset({"1013"})


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


def reply_for(frame: Frame) -> str | None:
    """The reply frame (CRLF-terminated) for `frame`, or None."""
    cn = reply_command(frame)
    if cn is None:
        return None
    return reply_9014(frame) if cn == "9014" else reply_with(frame, cn)


def reply_with(frame: Frame, cn: str) -> str:
    """HJ 212-2017 reply form: same QN, PW and MN, ST=91, Flag=4, empty CP."""
    head = [f"QN={frame.qn}"] if frame.qn is not None else []
    head += ["ST=91", f"CN={cn}"]
    if frame.pw is not None:
        head.append(f"PW={frame.pw}")
    head += [f"MN={frame.mn}", "Flag=4", "CP=&&&&"]
    return build_frame(";".join(head))
