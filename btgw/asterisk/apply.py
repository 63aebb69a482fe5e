"""Apply: put rendered files in place on a running PBX without breaking it.

Asterisk hides most configuration errors from AMI (a broken dialplan include
or an unknown wizard option still answers "Success"; the damaged context or
endpoint is silently dropped and only the log says why).  So apply:

1. writes only files whose text changed, each atomically, keeping the previous
   version beside it, after recording in a journal what must be reloaded (so a
   crash between write and reload is finished by the next apply);
2. notes the Asterisk log's size, reloads only the modules whose files changed
   (chan_mobile, which has no reload, by ModuleLoad unload + load, and only
   when no Mobile call is up: otherwise it is deferred, never forced);
3. verifies: new WARNING/ERROR lines from the config loaders, ``dialplan show``
   of each context, every endpoint in one ``PJSIPShowEndpoints`` list, chan_mobile's
   device list;
4. on any failure restores the previous files, reloads again, and reports what
   Asterisk said.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from btgw.asterisk.ami import AmiActionError, AmiConnection, AmiFactory, connector
from btgw.asterisk.mobile import MobileParseError, parse_show_devices
from btgw.config import GatewayConfig
from btgw.contracts.chan_mobile import matches_id
from btgw.errors import AsteriskError
from btgw.fsutil import atomic_write, fsync_dir, previous_path, remove_stale_temporaries
from btgw.render import Sources
from btgw.render.dialplan import contexts
from btgw.render.files import GeneratedFile, Module, render_all
from btgw.render.pjsip import endpoints
from btgw.state import State, resolve_phones

log = logging.getLogger(__name__)

JOURNAL_NAME = "apply-journal.json"

# Reload order: the dialplan and PJSIP first (they never drop calls), then
# chan_mobile, and btgw's own AMI user last so our session is not disturbed
# before the work is done.
RELOAD_ORDER = (Module.DIALPLAN, Module.PJSIP, Module.CHAN_MOBILE, Module.MANAGER)

# Which log sources speak for each module's configuration.  Only their
# WARNING/ERROR lines during a reload mean our files were not accepted; runtime
# noise in the same second (a trunk's registration failing, a SIP scanner, a
# call in progress) must not roll a good configuration back.  Sources seen on
# Asterisk 22.10.1: pbx_config.c for the dialplan; config_options.c and
# res_sorcery_config.c for PJSIP objects; res_pjsip_config_wizard.c for the
# wizard; chan_mobile.c for its own config.
CONFIG_SOURCES: dict[Module, frozenset[str]] = {
    Module.DIALPLAN: frozenset({"config.c", "pbx_config.c", "pbx.c"}),
    Module.PJSIP: frozenset(
        {
            "config.c",
            "config_options.c",
            "sorcery.c",
            "res_sorcery_config.c",
            "res_pjsip.c",
            "res_pjsip_config_wizard.c",
        }
    ),
    Module.CHAN_MOBILE: frozenset({"config.c", "chan_mobile.c"}),
    Module.MANAGER: frozenset({"config.c", "manager.c"}),
}

# chan_mobile logs its configuration errors and its run-time I/O through the
# same source file, and a rebind always produces some of the latter (the old
# adapter threads' "ast_io_wait() failed for audio", and "Failed to connect sdp"
# without bluetoothd --compat).  Only these lines are about chan_mobile.conf
# itself; an adapter it skips for hardware reasons shows up in verification.
SOURCE_MESSAGES: dict[str, re.Pattern[str]] = {
    "chan_mobile.c": re.compile(r"Skipping device|error parsing 'interval'"),
}
LOG_LINE = re.compile(r"\]\s+(WARNING|ERROR)\[[^\]]*\]\s*(?:\[[^\]]*\]\s*)?([A-Za-z0-9_./-]+):")


class ApplyError(AsteriskError):
    """Asterisk did not accept the new files; the previous ones are live again."""

    def __init__(self, message: str, hint: str, details: list[str]) -> None:
        full = "\n".join([message, *(f"  {line}" for line in details)])
        super().__init__(full, hint)
        self.details = details


@dataclass
class ApplyResult:
    """What apply did."""

    written: list[str] = field(default_factory=list)
    reloaded: list[Module] = field(default_factory=list)
    deferred: list[Module] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.written or self.reloaded)


# -- pure helpers -------------------------------------------------------------


def has_include(text: str, name: str) -> bool:
    """Whether ``text`` already includes ``name`` (uncommented, any quoting)."""
    pattern = re.compile(r"^\s*#(try)?include\s+[\"<]?" + re.escape(name) + r"[\">]?\s*$", re.M)
    return bool(pattern.search(text))


def ensure_include(text: str, name: str) -> str:
    """``text`` with one ``#include`` of ``name`` appended if it has none."""
    if has_include(text, name):
        return text
    sep = "" if not text or text.endswith("\n") else "\n"
    return f'{text}{sep}\n; Added by btgw: its generated file, see btgw.toml\n#include "{name}"\n'


def unified_diff(path: str, old: str | None, new: str | None) -> str:
    """A unified diff of one file (``None`` means absent)."""
    return "".join(
        difflib.unified_diff(
            (old or "").splitlines(keepends=True),
            (new or "").splitlines(keepends=True),
            fromfile=f"a/{path}" if old is not None else "/dev/null",
            tofile=f"b/{path}" if new is not None else "/dev/null",
        )
    )


def config_problems(lines: Iterable[str], modules: Iterable[Module]) -> list[str]:
    """The WARNING/ERROR lines the configuration loaders of ``modules`` wrote.

    >>> config_problems([
    ...     "[2026-11-26 06:50:01] WARNING[81] pbx_config.c: Invalid priority",
    ...     "[2026-11-26 06:50:01] NOTICE[81] pbx_config.c: fine",
    ...     "[2026-11-26 06:50:01] ERROR[81] res_pjsip_config_wizard.c: bad option",
    ...     "[2026-11-26 06:50:02] WARNING[90] res_pjsip_outbound_registration.c: no reply",
    ... ], [Module.DIALPLAN])
    ['[2026-11-26 06:50:01] WARNING[81] pbx_config.c: Invalid priority']
    """
    sources = frozenset().union(*(CONFIG_SOURCES[m] for m in modules))
    out = []
    for line in lines:
        match = LOG_LINE.search(line)
        if not match:
            continue
        source = match.group(2).rsplit("/", 1)[-1]
        wanted = SOURCE_MESSAGES.get(source)
        if source in sources and (wanted is None or wanted.search(line[match.end() :])):
            out.append(line.rstrip("\n"))
    return out


# -- file side ---------------------------------------------------------------


@dataclass(frozen=True)
class FileChange:
    """One file whose text differs from what is on disk."""

    path: Path
    old: str | None
    new: str
    module: Module | None  # None: an owner's file that only gained an #include
    mode: int | None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def plan_changes(rendered: dict[GeneratedFile, str], config_dir: Path) -> list[FileChange]:
    """Which files must change: generated ones, and owners' files lacking an include."""
    changes: list[FileChange] = []
    for gen, text in rendered.items():
        path = config_dir / gen.name
        old = _read(path)
        if old != text:
            changes.append(FileChange(path, old, text, gen.module, gen.mode))
        if gen.include_from is not None:
            owner = config_dir / gen.include_from
            current = _read(owner)
            wanted = ensure_include(current or "", gen.name)
            if current != wanted:
                changes.append(FileChange(owner, current, wanted, gen.module, None))
    return changes


class LogWatch:
    """Reads the lines Asterisk appends to its log after a point in time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = self._size()

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def new_lines(self) -> list[str]:
        size = self._size()
        if size < self._offset:  # rotated
            self._offset = 0
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        return data.decode("utf-8", "replace").splitlines()


class Journal:
    """Modules that still need a reload, kept across crashes and deferrals."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def pending(self) -> set[Module]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return {Module(m) for m in data.get("reload", [])}
        except FileNotFoundError:
            return set()
        except (ValueError, OSError):
            log.warning("apply journal %s is unreadable; reloading everything", self.path)
            return set(Module)

    def record(self, modules: set[Module]) -> None:
        if not modules:
            self.clear()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps({"reload": sorted(m.value for m in modules)}) + "\n")

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
            fsync_dir(self.path.parent)


# -- Asterisk side -----------------------------------------------------------


async def mobile_channels_up(ami: AmiConnection) -> list[str]:
    """Names of Mobile channels currently up (a call through a phone)."""
    reply = await ami.action("CoreShowChannels")
    return [
        e.get("Channel")
        for e in reply.events
        if e.event == "CoreShowChannel" and e.get("Channel").startswith("Mobile/")
    ]


async def chan_mobile_running(ami: AmiConnection) -> bool:
    """Whether chan_mobile is loaded and running.

    ``ModuleCheck`` is not enough: after a declined load ("No Bluetooth devices
    found") the module stays registered and ModuleCheck still says Success.
    Its CLI command exists only while it runs.
    """
    reply = await ami.action("Command", {"Command": "mobile show devices"}, check=False)
    return reply.ok


async def reload_module(ami: AmiConnection, module: Module) -> None:
    """Reload one module the way it supports.

    Raises:
        AmiActionError: Asterisk refused (for chan_mobile: it declined to load,
            typically because no adapter in chan_mobile.conf is usable).
    """
    if module is Module.CHAN_MOBILE:
        # Unload even a declined module: a plain load of a registered module is a no-op.
        await ami.action(
            "ModuleLoad", {"Module": "chan_mobile.so", "LoadType": "unload"}, check=False
        )
        await ami.action("ModuleLoad", {"Module": "chan_mobile.so", "LoadType": "load"})
    elif module is Module.MANAGER:
        await ami.action("Reload", {"Module": "manager"})
    else:
        await ami.action("Reload", {"Module": f"{module.value}.so"})


async def verify(
    ami: AmiConnection, config: GatewayConfig, state: State, modules: set[Module]
) -> list[str]:
    """What is not live that should be; empty when everything checked out."""
    problems: list[str] = []
    if Module.DIALPLAN in modules:
        for context in contexts(config):
            out = await ami.command(f"dialplan show {context}")
            if not any(f"Context '{context}'" in line for line in out):
                problems.append(f"dialplan context {context} is not loaded")
    if Module.PJSIP in modules:
        # One list action instead of a PJSIPShowEndpoint per endpoint: with 50
        # extensions that was most of apply's own cost (bench/apply_bench.py).
        reply = await ami.action("PJSIPShowEndpoints", check=False)
        live = {e.get("ObjectName") for e in reply.events if e.event == "EndpointList"}
        problems += [
            f"PJSIP endpoint {endpoint} is not loaded"
            for endpoint in endpoints(config)
            if endpoint not in live
        ]
    if Module.CHAN_MOBILE in modules:
        ready = [p.config.name for p in resolve_phones(config, state) if p.problem is None]
        if ready:
            try:
                rows = parse_show_devices(await ami.command("mobile show devices"))
            except AmiActionError:
                problems.append(
                    "chan_mobile is not loaded: no adapter in chan_mobile.conf is usable"
                )
                return problems
            except MobileParseError as exc:
                problems.append(f"unexpected `mobile show devices` output: {exc}")
                return problems
            ids = [row.id for row in rows]
            problems += [
                f"chan_mobile has no device {name}"
                for name in ready
                if not any(matches_id(i, name) for i in ids)
            ]
    return problems


Renderer = Callable[[GatewayConfig, State, Sources], dict[GeneratedFile, str]]


class Applier:
    """Renders, writes, reloads and verifies; rolls back on failure."""

    def __init__(
        self,
        config: GatewayConfig,
        state: State,
        sources: Sources,
        ami_factory: AmiFactory,
        journal_path: Path,
        renderer: Renderer = render_all,
    ) -> None:
        self.config = config
        self.state = state
        self.sources = sources
        self.ami_factory = ami_factory
        self.journal = Journal(journal_path)
        self.renderer = renderer
        self.config_dir = config.asterisk.config_dir

    @classmethod
    def for_gateway(cls, config: GatewayConfig, state: State, sources: Sources) -> Applier:
        """The applier of btgw's commands and daemon: btgw's own AMI user, and
        the journal of pending reloads beside the state file."""
        journal = sources.state.parent / JOURNAL_NAME
        return cls(config, state, sources, connector(config.asterisk.ami), journal)

    def plan(self) -> list[FileChange]:
        """The changes apply would write (nothing is touched)."""
        return plan_changes(self.renderer(self.config, self.state, self.sources), self.config_dir)

    def diff(self) -> str:
        """A unified diff of every pending change, relative to the config folder."""
        return "".join(
            unified_diff(str(c.path.relative_to(self.config_dir)), c.old, c.new)
            for c in self.plan()
        )

    async def apply(self) -> ApplyResult:
        """Make the rendered configuration live.

        Raises:
            AmiError: Asterisk is unreachable (nothing was written).
            ApplyError: Asterisk rejected the change; the previous files are live.
            OSError: a file could not be written (files written so far are rolled back).
        """
        result = ApplyResult()
        remove_stale_temporaries(self.config_dir)
        changes = self.plan()
        pending = self.journal.pending()
        if not changes and not pending:
            return result
        ami = await self.ami_factory()
        try:
            return await self._apply(ami, changes, pending, result)
        finally:
            await ami.close()

    async def _apply(
        self,
        ami: AmiConnection,
        changes: list[FileChange],
        pending: set[Module],
        result: ApplyResult,
    ) -> ApplyResult:
        modules = pending | {c.module for c in changes if c.module is not None}
        self.journal.record(modules)
        written: list[FileChange] = []
        try:
            for change in changes:
                change.path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(change.path, change.new, mode=change.mode, keep_previous=True)
                written.append(change)
                result.written.append(str(change.path))
        except OSError:
            self._restore(written)
            self.journal.record(pending)
            raise

        mobile_calls = await mobile_channels_up(ami) if Module.CHAN_MOBILE in modules else []
        to_reload = [m for m in RELOAD_ORDER if m in modules]
        if mobile_calls:
            to_reload.remove(Module.CHAN_MOBILE)
            result.deferred.append(Module.CHAN_MOBILE)
            result.warnings.append(
                "chan_mobile.conf was written but takes effect only after the call on "
                f"{', '.join(mobile_calls)} ends (chan_mobile has no reload; rebinding it would "
                "drop the call). Run `btgw apply` again then; `btgw run` does it by itself."
            )
        chan_mobile_was_loaded = await chan_mobile_running(ami)
        logwatch = LogWatch(self.config.asterisk.log_file)
        failures = await self._reload(ami, to_reload)
        checked = set(to_reload)
        failures += await verify(ami, self.config, self.state, checked)
        failures += config_problems(logwatch.new_lines(), to_reload)
        if failures and not chan_mobile_was_loaded:
            # chan_mobile did not run before either (no usable adapter yet): that
            # is the hardware's state, not a fault of the new files.
            mobile = [f for f in failures if "chan_mobile" in f]
            if len(mobile) == len(failures):
                result.warnings.extend(mobile)
                failures = []
        if failures:
            await self._rollback(ami, written, to_reload)
            self.journal.record(pending)
            raise ApplyError(
                "Asterisk did not accept the new configuration; the previous files are live again",
                "fix btgw.toml as the lines above suggest, then run `btgw apply` again",
                failures,
            )
        result.reloaded.extend(to_reload)
        self.journal.record(set(result.deferred))
        return result

    async def _reload(self, ami: AmiConnection, modules: list[Module]) -> list[str]:
        failures = []
        for module in modules:
            try:
                await reload_module(ami, module)
            except AmiActionError as exc:
                failures.append(f"reloading {module.value} failed: {exc}")
        return failures

    def _restore(self, written: list[FileChange]) -> None:
        for change in reversed(written):
            if change.old is None:
                with contextlib.suppress(FileNotFoundError):
                    change.path.unlink()
            else:
                atomic_write(change.path, change.old, mode=change.mode)
            with contextlib.suppress(FileNotFoundError):
                previous_path(change.path).unlink()

    async def _rollback(
        self, ami: AmiConnection, written: list[FileChange], modules: list[Module]
    ) -> None:
        log.warning("rolling back %d file(s)", len(written))
        self._restore(written)
        for module in modules:
            try:
                await reload_module(ami, module)
            except AmiActionError:
                log.exception("reloading %s after rollback failed", module.value)
