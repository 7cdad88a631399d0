"""The AdminService questions many requests ask at once, asked together.

Under load, the requests handled side by side ask the AdminService the same kind of
question about different devices. While one query is on its way, the questions that
arrive meanwhile wait and go out as the next query (:mod:`shared.platform.group_commit`):
one ``ResourceID eq a or ResourceID eq b ...`` filter per collection for membership, one
``NetbiosName eq 'a' or ...`` filter for device records. A lone message pays no delay.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final

from shared.domain.devices import DeviceRecord
from shared.domain.membership import Membership
from shared.platform.group_commit import GroupCommit

#: Devices (or names) in one query. ASP.NET OData refuses a $filter of more than 100
#: nodes unless the service raises MaxNodeCount (whether the AdminService does is
#: unverified): ``CollectionID eq 'X' and (ResourceID eq a or ...)`` and
#: ``NetbiosName eq 'a' or ...`` stay within that for 16.
MAX_PER_QUERY: Final = 16

MembershipLookup = Callable[[str, Sequence[int]], Mapping[int, Membership]]
#: Device records by machine name (casefolded), for the names asked about.
DeviceLookup = Callable[[Sequence[str]], Mapping[str, list[DeviceRecord]]]


class MembershipBatches(GroupCommit[int, Membership]):
    """A :class:`~shared.domain.ports.MembershipSource` asking about many devices of a
    collection at once."""

    def __init__(self, lookup: MembershipLookup) -> None:
        super().__init__(lookup, max_per_query=MAX_PER_QUERY)

    def membership(self, collection_id: str, resource_id: int) -> Membership:
        """How the device is in the collection (None: not at all)."""
        return self.ask(collection_id.upper(), int(resource_id))


class DeviceBatches(GroupCommit[str, list[DeviceRecord]]):
    """A :class:`~shared.domain.ports.DeviceSource` looking up many machine names at
    once (names compare without regard to case, as ConfigMgr's do)."""

    def __init__(self, lookup: DeviceLookup) -> None:
        super().__init__(lambda _, names: lookup(names), max_per_query=MAX_PER_QUERY)

    def find_devices(self, netbios_name: str) -> list[DeviceRecord]:
        """The discovery records named ``netbios_name``."""
        return list(self.ask("", netbios_name.casefold()) or [])
