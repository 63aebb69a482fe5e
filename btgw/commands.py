"""The commands defined by btgw.cli itself: check, render, apply, doctor
and config-reference (imported only when one of them runs: btgw.cli names
them through :data:`HANDLERS`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from btgw import doctor
from btgw.asterisk.ami import connector
from btgw.asterisk.apply import Applier, ApplyResult
from btgw.cliutil import load_all
from btgw.config import GatewayConfig, config_path, load_config
from btgw.configdoc import render_reference
from btgw.errors import ConfigError, ExitCode
from btgw.fsutil import atomic_write
from btgw.render.files import render_all
from btgw.render.firewall import firewall, render_nftables
from btgw.state import save_state

if TYPE_CHECKING:
    from btgw.clicommand import Registry


def cmd_check(args: argparse.Namespace) -> int:
    config, _, _, _ = load_all(args)
    if args.json:
        print(
            json.dumps(
                {"ok": True, "phones": len(config.phones), "extensions": len(config.extensions)}
            )
        )
    else:
        print(
            f"{config_path(args.config)}: valid ({len(config.phones)} phone(s), "
            f"{len(config.extensions)} extension(s), {len(config.trunks)} trunk(s))"
        )
    return ExitCode.OK


NFT_FILE = "btgw.nft"


def nftables_text(config: GatewayConfig, config_arg: Path | None) -> str:
    """btgw.nft for ``config``, with the RTP range of the rtp.conf beside it."""
    try:
        rtp_conf: str | None = (config.asterisk.config_dir / "rtp.conf").read_text("utf-8")
    except OSError:
        rtp_conf = None  # Asterisk's default range
    fw = firewall(config, rtp_conf)
    return render_nftables(fw, str(config_path(config_arg)))


def cmd_render(args: argparse.Namespace) -> int:
    config, state, sources, _ = load_all(args)
    out = Path(args.out)
    written = []
    for gen, text in render_all(config, state, sources).items():
        path = out / gen.name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text, mode=gen.mode)
        written.append(str(path))
    if args.nftables:
        path = out / NFT_FILE
        atomic_write(path, nftables_text(config, args.config), mode=0o644)
        written.append(str(path))
    if args.json:
        print(json.dumps({"written": written}))
    else:
        for path_text in written:
            print(path_text)
    return ExitCode.OK


def _print_result(result: ApplyResult, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {
                    "changed": result.changed,
                    "written": result.written,
                    "reloaded": [m.value for m in result.reloaded],
                    "deferred": [m.value for m in result.deferred],
                    "warnings": result.warnings,
                }
            )
        )
        return
    if not result.changed:
        print("nothing to do: Asterisk already runs this configuration")
    for path in result.written:
        print(f"wrote {path}")
    for module in result.reloaded:
        print(f"reloaded {module.value}")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def cmd_apply(args: argparse.Namespace) -> int:
    config, state, sources, state_path = load_all(args)
    applier = Applier.for_gateway(config, state, sources)
    if args.dry_run:
        diff = applier.diff()
        print(diff, end="")
        if not diff and not args.json:
            print("no changes", file=sys.stderr)
        return ExitCode.OK
    result = asyncio.run(applier.apply())
    save_state(state_path, state)
    _print_result(result, args.json)
    return ExitCode.DEFERRED if result.deferred else ExitCode.OK


def cmd_doctor(args: argparse.Namespace) -> int:
    config, state, sources, _ = load_all(args)

    async def gather() -> list[doctor.Finding]:
        findings = [doctor.check_python(), *doctor.check_asterisk_install()]
        findings += doctor.check_adapters(config)
        findings += doctor.check_kernel()
        findings += doctor.check_secrets(config)
        findings.append(doctor.check_http(config))
        findings.append(doctor.check_files(config, state, sources))
        findings += await doctor.check_asterisk(config, state, connector(config.asterisk.ami))
        return findings

    findings = asyncio.run(gather())
    if args.json:
        print(json.dumps([f.__dict__ for f in findings], default=str))
    else:
        for f in findings:
            print(f"[{f.level.value:>4}] {f.check}: {f.detail}")
            if f.fix:
                print(f"       fix: {f.fix}")
    level = doctor.worst(findings)
    return ExitCode.OK if level is not doctor.Level.FAIL else ExitCode.FAILURE


def cmd_config_reference(args: argparse.Namespace) -> int:
    print(render_reference(), end="")
    return ExitCode.OK


def _spool_path(args: argparse.Namespace) -> Path:
    from btgw.cliutil import state_path  # noqa: PLC0415 - only the outbox needs it

    config = load_config(config_path(args.config))
    return config.messages.spool or state_path(args).with_name("messages.sqlite")


def cmd_outbox(args: argparse.Namespace) -> int:
    """``btgw outbox [--json]`` lists messages; ``btgw outbox retry ID`` re-queues one."""
    import sqlite3  # noqa: PLC0415 - see the module docstring

    from btgw.messages.spool import Spool  # noqa: PLC0415 - likewise

    path = _spool_path(args)
    if not path.exists():
        raise ConfigError(f"no outbox at {path}", "the daemon creates it when it starts (btgw run)")
    try:
        spool = Spool(path, readonly=args.action != "retry")
        if args.action == "retry":
            if not args.id or spool.retry(args.id) == 0:
                print(f"btgw: no failed or pending delivery of {args.id!r}", file=sys.stderr)
                return int(ExitCode.FAILURE)
            print(f"{args.id}: queued again; the daemon tries it within seconds")
            return int(ExitCode.OK)
        entries = spool.entries()
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot read the outbox {path}: {exc}", "check its permissions") from exc
    if args.json:
        print(json.dumps([outbox_json(e) for e in entries], indent=1, ensure_ascii=False))
        return int(ExitCode.OK)
    for e in entries:
        sinks = " ".join(f"{d.sink}:{d.state.value}" for d in e.deliveries) or "-"
        print(f"{e.message.id}  {e.state.value:9}  {e.message.phone}  {e.message.sender}  {sinks}")
    return int(ExitCode.OK)


def outbox_json(entry: Any) -> dict[str, Any]:
    return {
        **entry.message.as_json(),
        "state": entry.state.value,
        "spooled_at": entry.spooled_at,
        "deliveries": [
            {
                "sink": d.sink,
                "state": d.state.value,
                "attempts": d.attempts,
                "next_at": d.next_at,
                "last_error": d.last_error,
                "done_at": d.done_at,
            }
            for d in entry.deliveries
        ],
    }


SMS_SEND_TIMEOUT_S = 10.0
"""How long ``btgw sms send`` waits for the dialplan to queue each part."""

SMS_IDLE_TIMEOUT_S = 30.0
"""How long ``btgw sms send`` waits for the phone to finish an SMS in
progress (the previous part, or one being read) before sending the next."""

SMS_IDLE_POLL_S = 0.1

SMS_PART_GAP_S = 3.0
"""Time given to the phone between two parts.  MobileSendSMS writes
``AT+CMGS`` at once and returns: chan_mobile has no flow control for
outgoing SMS, and shows the device as ``SMS`` only once the phone has
prompted for the text (chan_mobile.c, ``mbl_sendsms_exec``).  A second
``AT+CMGS`` sent before the phone's prompt for the first becomes part of
the first's text (seen on the bench: the second part 3 ms after the first,
and the phone received neither).  3 s assumes the phone prompts for the text
within that time: not measured on real phones."""


def cmd_sms(args: argparse.Namespace) -> int:
    """``btgw sms send PHONE NUMBER TEXT``: queue an SMS on a phone."""
    from btgw.messages.send import SmsTextError, check_number, split_text  # noqa: PLC0415

    config = load_config(config_path(args.config))
    try:
        phone = config.phone(args.phone)
    except KeyError:
        raise ConfigError(
            f"no phone {args.phone!r} in btgw.toml", "use a [[phones]] name"
        ) from None
    if not phone.sms:
        raise ConfigError(f"SMS is off for {phone.name}", "set sms = true in its [[phones]] table")
    try:
        number = check_number(args.number)
        parts = split_text(args.text)
    except SmsTextError as exc:
        raise ConfigError(str(exc), "change the text or number") from exc
    asyncio.run(_send_sms(config, phone.name, number, parts))
    where = f"{phone.name} to {number}"
    if args.json:
        print(json.dumps({"phone": phone.name, "to": number, "parts": len(parts), "queued": True}))
    else:
        print(f"queued {len(parts)} SMS on {where} (the phone's answer is in Asterisk's log)")
    return int(ExitCode.OK)


async def _send_sms(config: Any, phone: str, number: str, parts: list[str]) -> None:
    """Originate one Local channel per part and wait for the dialplan's
    ``BtgwSmsQueued``.

    Raises:
        AmiError: Asterisk unreachable or refused.
        AsteriskError: the phone is not connected or has no SMS.
    """
    import base64  # noqa: PLC0415
    import secrets  # noqa: PLC0415

    from btgw.asterisk.mobile import MobileState, parse_show_devices  # noqa: PLC0415
    from btgw.contracts.asterisk import UserEvent  # noqa: PLC0415
    from btgw.contracts.chan_mobile import matches_id  # noqa: PLC0415
    from btgw.errors import AsteriskError  # noqa: PLC0415
    from btgw.render.dialplan import SMS_SEND_CONTEXT  # noqa: PLC0415

    ami = await connector(config.asterisk.ami, events=["user"])()

    async def device() -> Any:
        reply = await ami.action("Command", {"Command": "mobile show devices"}, check=False)
        row = next((r for r in parse_show_devices(reply.output) if matches_id(r.id, phone)), None)
        if row is None or not row.connected:
            raise AsteriskError(f"{phone} is not connected to chan_mobile", "btgw status shows why")
        return row

    async def until_idle() -> None:
        # chan_mobile writes AT+CMGS as soon as MobileSendSMS runs, even
        # while the phone is busy with another SMS; its state column says SMS
        # while it reads one or sends one's text (docs/domain/chan_mobile.md).
        deadline = asyncio.get_running_loop().time() + SMS_IDLE_TIMEOUT_S
        while (await device()).state is MobileState.SMS:
            if asyncio.get_running_loop().time() > deadline:
                raise AsteriskError(
                    f"{phone} stayed busy with an SMS for {SMS_IDLE_TIMEOUT_S:.0f} s",
                    "look at Asterisk's log for the phone's answer to AT+CMGS",
                )
            await asyncio.sleep(SMS_IDLE_POLL_S)

    try:
        if not (await device()).sms:
            raise AsteriskError(
                f"chan_mobile has SMS off for {phone} (the phone refused the SMS AT commands)",
                "iPhones offer no SMS over hands-free; use another phone",
            )
        for i, part in enumerate(parts):
            if i:
                await asyncio.sleep(SMS_PART_GAP_S)
            await until_idle()
            send_id = secrets.token_hex(8)
            queued = asyncio.get_running_loop().create_future()

            def seen(m: Any, send_id: str = send_id, queued: Any = queued) -> None:
                ours = m.get("UserEvent") == UserEvent.SMS_QUEUED and m.get("Id") == send_id
                if ours and not queued.done():
                    queued.set_result(None)

            stop = ami.on_event(seen)
            try:
                await ami.action(
                    "Originate",
                    {
                        "Channel": f"Local/s@{SMS_SEND_CONTEXT}/n",
                        "Application": "Wait",
                        "Data": "1",
                        "Async": "true",
                        "Variable": [
                            f"BTGW_SEND_PHONE={phone}",
                            f"BTGW_SEND_TO={number}",
                            f"BTGW_SEND_B64={base64.b64encode(part.encode()).decode()}",
                            f"BTGW_SEND_ID={send_id}",
                        ],
                    },
                )
                await asyncio.wait_for(queued, SMS_SEND_TIMEOUT_S)
            except TimeoutError:
                raise AsteriskError(
                    f"Asterisk did not queue the SMS on {phone} in {SMS_SEND_TIMEOUT_S:.0f} s",
                    "run btgw apply (the btgw-sms-send context may be missing)",
                ) from None
            finally:
                stop()
    finally:
        await ami.close()


USSD_POLL_S = 0.1


def cmd_ussd(args: argparse.Namespace) -> int:
    """``btgw ussd PHONE CODE``: send a USSD code, print the network's answer."""
    from btgw.messages.ussd import UssdCodeError, check_code  # noqa: PLC0415

    config = load_config(config_path(args.config))
    try:
        phone = config.phone(args.phone)
        code = check_code(args.code)
    except KeyError:
        raise ConfigError(
            f"no phone {args.phone!r} in btgw.toml", "use a [[phones]] name"
        ) from None
    except UssdCodeError as exc:
        raise ConfigError(str(exc), "give the code as the network documents it") from exc
    log_file: Path = config.asterisk.log_file
    start = log_file.stat().st_size if log_file.exists() else 0  # the answer comes after
    answer = asyncio.run(_ussd(config, phone.name, code, args.timeout, start))
    if args.json:
        print(json.dumps({"phone": phone.name, "code": code, "answer": answer}, ensure_ascii=False))
    else:
        print(answer)
    return int(ExitCode.OK)


def _log_since(path: Path, start: int) -> str:
    """The log file's text from byte ``start`` on ("" while unreadable)."""
    try:
        with path.open("rb") as f:
            f.seek(start)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


async def _ussd(config: Any, phone: str, code: str, timeout: float, start: int) -> str:
    """Send ``mobile cusd`` and read the answer from the Asterisk log.

    Raises:
        AmiError: Asterisk unreachable.
        AsteriskError: no answer within ``timeout``.
    """
    import time  # noqa: PLC0415

    from btgw.errors import AsteriskError  # noqa: PLC0415
    from btgw.messages.ussd import find_answer  # noqa: PLC0415

    log_file: Path = config.asterisk.log_file
    ami = await connector(config.asterisk.ami)()
    try:
        reply = await ami.action("Command", {"Command": f"mobile cusd {phone} {code}"}, check=False)
    finally:
        await ami.close()
    if not reply.ok or any("not" in line.lower() for line in reply.output):
        raise AsteriskError(
            f"chan_mobile refused the USSD request: {' '.join(reply.output) or 'no reason'}",
            "btgw status shows whether the phone is connected",
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = find_answer(await asyncio.to_thread(_log_since, log_file, start), phone)
        if answer is not None:
            return answer
        await asyncio.sleep(USSD_POLL_S)
    raise AsteriskError(
        f"no USSD answer from {phone} in {timeout:.0f} s",
        f"chan_mobile writes it only as a verbose line: {log_file} must log verbose "
        "(logger.conf: messages => notice,warning,error,verbose)",
    )


HANDLERS: Registry = {
    "outbox": cmd_outbox,
    "sms": cmd_sms,
    "ussd": cmd_ussd,
    "check": cmd_check,
    "render": cmd_render,
    "apply": cmd_apply,
    "doctor": cmd_doctor,
    "config-reference": cmd_config_reference,
}
"""The handlers btgw.cli registers (see :class:`btgw.clicommand.LazyHandler`)."""
