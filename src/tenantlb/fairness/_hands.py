"""Shuffle-sharded hands: which of a fair queue's queues a flow may use.

Kubernetes API Priority and Fairness deals each flow a *hand* of ``hand_size`` queues out of
``queues`` and puts each request in the shortest queue of the hand. Two flows' hands coincide with
probability ``1 / C(queues, hand_size)``, so a few heavy flows fill only their own hands and a light
flow almost always finds room.
"""

from __future__ import annotations

import functools
import hashlib

__all__ = ["deal_hand"]

_PERSON = b"tenantlb-hand1"  # domain separation from the endpoint shuffle shards


@functools.lru_cache(maxsize=65536)
def deal_hand(flow: str, queues: int, hand_size: int) -> tuple[int, ...]:
    """The *hand_size* distinct queue indices of *flow* among *queues*, stable across processes.

    A keyed BLAKE2b digest of the flow (never the salted builtin ``hash()``) drives a partial
    Fisher-Yates shuffle, as APF's dealer does with its 64-bit hash; a 512-bit digest leaves
    enough entropy for any realistic deck. Cached (LRU), so calling it per request is cheap.
    """
    digest = hashlib.blake2b(flow.encode(), digest_size=64, person=_PERSON).digest()
    value = int.from_bytes(digest, "big")
    swapped: dict[int, int] = {}
    hand = []
    for i in range(hand_size):
        value, offset = divmod(value, queues - i)
        pick = i + offset
        hand.append(swapped.get(pick, pick))
        swapped[pick] = swapped.get(i, i)
    return tuple(hand)
