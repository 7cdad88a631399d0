"""Requests the blast-radius guard held: list them, release them, or discard them.

A held request is an audit row with outcome ``held-rate-limit`` that keeps the request
itself. Releasing marks the row released, then puts the request back on the queue; the
next delivery adds the device without consulting the guard and replaces the held row
with the real outcome. Marking comes first so that the delivery can never arrive before
the mark: a release interrupted between the two leaves a row that is released but
still held, and releasing again sends it again (the audit row makes that harmless).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from shared.domain.outcomes import Outcome
from shared.domain.ports import OutcomeStore, RequestSender
from shared.domain.requests import RemediationRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HeldRequest:
    """One request waiting for an operator."""

    outcome: Outcome
    request: RemediationRequest

    @property
    def id(self) -> str:
        """The name ``held release``/``held discard`` take: ``<site>-<record>-<rule>``."""
        return f"{self.request.site_code}-{self.request.record_id}-{self.request.rule}"


def _log_decision(held: HeldRequest, verb: str, by: str) -> None:
    request = held.request
    log.info(
        "site=%s record=%s machine=%r collection=%s: held add %s by %s",
        request.site_code,
        request.record_id,
        request.machine_name,
        request.collection_id,
        verb,
        by,
    )


@dataclass(frozen=True, slots=True)
class HeldReport:
    """What a release or discard did."""

    done: list[str]
    #: Dry-run holds are a preview of what would be held: never released for real.
    skipped_dry_run: list[str]
    #: IDs asked for that are not (or no longer) held.
    not_held: list[str]


class HeldRequests:
    """The operator's side of the blast-radius guard."""

    def __init__(self, outcomes: OutcomeStore, sender: RequestSender) -> None:
        self._outcomes = outcomes
        self._sender = sender

    def pending(self, collection_id: str | None = None) -> list[HeldRequest]:
        """Held requests, oldest first, optionally for one collection."""
        wanted = collection_id.upper() if collection_id else None
        return [
            HeldRequest(outcome, request)
            for outcome, request in self._outcomes.held()
            if wanted is None or request.collection_id == wanted
        ]

    def _select(
        self, ids: Iterable[str], collection_id: str | None
    ) -> tuple[list[HeldRequest], list[str]]:
        held = self.pending(collection_id)
        asked = list(ids)
        if not asked:
            return held, []
        by_id = {h.id.casefold(): h for h in held}
        chosen = [by_id[i.casefold()] for i in asked if i.casefold() in by_id]
        return chosen, [i for i in asked if i.casefold() not in by_id]

    def release(
        self, ids: Iterable[str] = (), *, collection_id: str | None = None, by: str
    ) -> HeldReport:
        """Release held requests (all, or those named, or one collection's) to be added."""
        chosen, not_held = self._select(ids, collection_id)
        done: list[str] = []
        skipped: list[str] = []
        for held in chosen:
            if held.outcome.dry_run:
                skipped.append(held.id)
                continue
            if held.outcome.released or self._outcomes.mark_released(held.outcome, by):
                self._sender.send([held.request])
                done.append(held.id)
                _log_decision(held, "released", by)
            else:
                not_held.append(held.id)
        return HeldReport(done, skipped, not_held)

    def discard(
        self, ids: Iterable[str] = (), *, collection_id: str | None = None, by: str
    ) -> HeldReport:
        """Decide held requests for good without adding them (outcome ``discarded``)."""
        chosen, not_held = self._select(ids, collection_id)
        done: list[str] = []
        for held in chosen:
            outcome = self._outcomes.settle(
                held.request,
                "discarded",
                f"held add discarded by {by}",
                dry_run=held.outcome.dry_run,
                decided_by=by,
            )
            if outcome.kind == "discarded" and outcome.new:
                done.append(held.id)
                _log_decision(held, "discarded", by)
            else:
                not_held.append(held.id)
        return HeldReport(done, [], not_held)
