"""The pure-Python sum and min tree of :mod:`fastreplay.reference`: the readable twin of the C++ core's
``csrc/fastreplay/sum_min_tree.h`` (same name, same contract, a binary tree instead of 8-ary cache lines)."""
from __future__ import annotations

import math


class SumMinTree:
    """Sum and min over ``capacity`` leaves, as two binary trees stored in Python lists.

    P is the next power of two >= capacity; node 1 is the root, node j has children 2j and 2j+1, and leaf i (slot
    i) is node P + i. ``sums[j]`` is the sum of the leaves under j; ``mins[j]`` is their smallest *positive* value
    (inf if none), since zero leaves are never drawn. Each ancestor is recomputed from its two children, never
    updated by a delta, so the root is always the tree-ordered sum of the current leaves.
    """

    def __init__(self, capacity: int) -> None:
        self.P = 1
        while self.P < capacity:
            self.P *= 2
        self.sums = [0.0] * (2 * self.P)
        self.mins = [math.inf] * (2 * self.P)

    def set(self, i: int, value: float) -> None:
        """Set leaf i and repair its ancestors. O(log capacity)"""
        node = self.P + i
        self.sums[node] = value
        self.mins[node] = value if value > 0.0 else math.inf
        node //= 2
        while node >= 1:
            self.sums[node] = self.sums[2 * node] + self.sums[2 * node + 1]
            self.mins[node] = min(self.mins[2 * node], self.mins[2 * node + 1])
            node //= 2

    def leaf(self, i: int) -> float:
        return self.sums[self.P + i]

    def total(self) -> float:
        return self.sums[1]

    def min(self) -> float:
        return self.mins[1]

    def find_prefix(self, u: float) -> int:
        """The leaf where the running sum of leaves passes u: go right iff u >= the left sum and the right subtree
        has mass (so a zero leaf is never returned while the total is positive). O(log capacity)"""
        node = 1
        while node < self.P:
            left = 2 * node
            if u >= self.sums[left] and self.sums[left + 1] > 0.0:
                u -= self.sums[left]
                node = left + 1
            else:
                node = left
        return node - self.P
