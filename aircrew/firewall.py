"""The thin applier of a node's rules: the zone policy and the zone's members in, one
nft transaction per change out (``rules`` compiles, ``nftext`` renders, ``nftables``
runs).

- No policy: no table of ours (whatever was left is deleted).
- A policy, or this node's own record, changed: the plan is compiled again and, when it
  differs, our whole table is replaced in one transaction (the sets' contents are kept
  when the new plan has the same sets: a change of ports or rules between the same
  groups does not go over the zone's members again).
- Other members changed: one transaction of set-element adds and deletes.

nft applies a transaction whole or not at all. A delta that fails is followed by a full
reload; a full reload that fails leaves the table in force as it was (an older, complete
policy) and the state ``failed``; with no table of ours in force at all the state is
``closed`` and the agent configures no peers (never open). ``retry`` tries again.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from wire.policy import Member, Policy
from wire.secretfile import write_secret

from . import nftext
from .nftables import Nft, NftError
from .rules import Contents, Groups, Plan, compile_plan

log = logging.getLogger(__name__)

NONE, APPLIED, FAILED, CLOSED = "none", "applied", "failed", "closed"


@dataclass
class Transaction:
    kind: str            # "table" | "delta" | "removal"
    elements: int        # set elements it named (a table: every element)
    seconds: float


@dataclass
class Firewall:
    interface: str
    nft: Nft
    status_path: Path | None = None
    state: str = NONE
    rev: int | None = None               # the zone revision of the policy applied
    error: str = ""
    policy: Policy | None = None         # what the rules in force come from (wanted)
    plan: Plan | None = None
    contents: Contents | None = None
    me: Member | None = None
    in_force: bool = False               # a table of ours is loaded
    last: Transaction | None = None
    transactions: int = 0
    sync_seconds: float = 0.0            # the last whole-table build and load, all of it
    _groups: Groups = field(default_factory=Groups)
    _cleared: bool = False               # a leftover table of ours was looked for

    def __post_init__(self) -> None:
        # A table of ours can be left over only where an earlier run said it loaded one;
        # elsewhere (no policy ever) nft is not even loaded.
        if self.status_path is not None:
            try:
                self._cleared = not json.loads(self.status_path.read_text()).get("table")
            except (OSError, ValueError, AttributeError):
                self._cleared = True

    @property
    def leftover(self) -> bool:
        """An earlier run may have left a table of ours."""
        return not self._cleared

    @property
    def closed(self) -> bool:
        return self.state == CLOSED

    def sync(self, policy: Policy | None, rev: int | None, me: Member | None,
             members: dict[str, Member]) -> None:
        """Everything at once (start, resync): our table as the policy and ``members``
        say."""
        started = time.perf_counter()
        try:
            self._sync(policy, rev, me, members)
        finally:
            self.sync_seconds = time.perf_counter() - started

    def _sync(self, policy: Policy | None, rev: int | None, me: Member | None,
              members: dict[str, Member]) -> None:
        self.policy, self.rev, self.me = policy, rev, me
        if members is not self._groups.members:
            self._groups = Groups(members)
        if policy is None or me is None:
            self.plan, self.contents = None, None
            if policy is None:
                self._remove()
            else:        # not registered yet: nothing of this node to compile for
                self._closed_or_failed("this node has no record in the zone yet")
            return
        self.plan = compile_plan(policy, me)
        self.contents = Contents(self.plan)
        self.contents.update(self._groups.of(self.plan))
        self._load()

    def update(self, policy: Policy | None, rev: int | None,
               changed: Iterable[tuple[str, Member | None]], me: Member | None) -> None:
        """Members changed (None: gone): a delta, or a reload when this node's plan
        changed with them."""
        changed = list(changed)
        for key, member in changed:
            self._groups.set(key, member)
        if policy is None and self.policy is None and self.state == NONE:
            self.me = me
            return                    # no policy before or now: nothing of ours to change
        if policy is None or self.contents is None or self.state in (FAILED, CLOSED):
            self.sync(policy, rev, me, self._groups.members)
            return
        if (policy is not self.policy and policy != self.policy) or me != self.me:
            self._replan(policy, rev, me, changed)
            return
        self.rev = rev
        self._delta(changed)

    def _replan(self, policy: Policy, rev: int | None, me: Member | None,
                changed: list[tuple[str, Member | None]]) -> None:
        """The policy or this node changed: compile again; the same plan is a delta, the
        same sets a table reload over the contents kept, other sets a full sync."""
        started = time.perf_counter()
        plan = compile_plan(policy, me) if me is not None else None
        if plan is None or self.plan is None or self.contents is None \
                or plan.sets != self.plan.sets:
            self.sync(policy, rev, me, self._groups.members)
            return
        self.policy, self.rev, self.me = policy, rev, me
        if plan == self.plan:
            self._delta(changed)
            return
        self.contents.update(changed)
        self.plan = self.contents.plan = plan
        self._load()
        self.sync_seconds = time.perf_counter() - started

    def retry(self) -> None:
        """Try again after a failure (the agent calls it on its heartbeat)."""
        if self.state in (FAILED, CLOSED):
            self.sync(self.policy, self.rev, self.me, self._groups.members)

    def remove(self) -> None:
        """Delete our table (``aircrew down``)."""
        self._remove()

    # -- transactions -------------------------------------------------------------------

    def _delta(self, changed: list[tuple[str, Member | None]]) -> None:
        """The set elements ``changed`` makes differ, in one transaction; a full reload
        when it fails."""
        delta = self.contents.update(changed)
        if not delta:
            return
        try:
            self._run("delta", nftext.delta(self.interface, delta), delta.size())
        except NftError as exc:
            log.warning("a set-element change failed (%s): reloading the whole table", exc)
            self._load()

    def _load(self) -> None:
        if self.plan is None or self.contents is None:
            return
        text = nftext.table(self.interface, self.plan, self.contents)
        try:
            self._run("table", text, sum(self.contents.sizes().values()))
        except NftError as exc:
            self._closed_or_failed(str(exc))
            return
        self.in_force = True
        self._set_state(APPLIED, "")

    def _remove(self) -> None:
        if self.state == NONE and not self.in_force and self._cleared:
            return                    # nothing of ours there (checked once at start)
        self._cleared = True
        try:
            self._run("removal", nftext.removal(self.interface), 0)
        except NftError as exc:
            if self.in_force:         # a table of ours with older rules is still there
                self._set_state(FAILED, str(exc))
                return
            log.debug("no table of ours to remove (%s)", exc)
        self.in_force = False
        self._set_state(NONE, "")

    def _run(self, kind: str, text: str, elements: int) -> None:
        started = time.perf_counter()
        self.nft.run(text)
        self.last = Transaction(kind, elements, time.perf_counter() - started)
        self.transactions += 1

    def _closed_or_failed(self, error: str) -> None:
        if self.in_force:
            log.error("policy rules could not be applied (%s): the previous rules stay in "
                      "force", error)
            self._set_state(FAILED, error)
        else:
            log.error("policy rules could not be applied (%s) and none are in force: no "
                      "peers are configured until they are", error)
            self._set_state(CLOSED, error)

    def _set_state(self, state: str, error: str) -> None:
        changed = (state, error) != (self.state, self.error)
        self.state, self.error = state, error
        if changed and state == APPLIED:
            log.info("policy of revision %s in force: rules %s", self.rev,
                     ", ".join(map(str, self.plan.rules)) if self.plan and self.plan.rules
                     else "none apply here (everything into this node is refused)")
        self.write_status()

    # -- status -------------------------------------------------------------------------

    def status(self) -> dict:
        rules = []
        if self.plan is not None and self.policy is not None:
            by_index = {r.index: r for r in self.policy.rules}
            rules = [str(by_index[i]) for i in self.plan.rules]
        return {"state": self.state, "revision": self.rev, "error": self.error,
                "table": nftext.table_name(self.interface) if self.in_force else None,
                "rules": rules,
                "sets": self.contents.sizes() if self.contents is not None else {}}

    def write_status(self) -> None:
        if self.status_path is None:
            return
        try:
            write_secret(self.status_path, json.dumps(self.status(), indent=1) + "\n")
        except OSError as exc:
            log.warning("cannot write %s: %s", self.status_path, exc)
