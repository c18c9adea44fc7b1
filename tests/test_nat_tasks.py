"""cancel_and_wait: the child's cancellation is swallowed, the caller's is not."""

from __future__ import annotations

import asyncio

import pytest

from wgpy.nat.tasks import cancel_and_wait


def test_the_child_is_stopped_and_its_cancellation_swallowed() -> None:
    async def scenario() -> bool:
        child = asyncio.ensure_future(asyncio.sleep(60))
        await asyncio.sleep(0)
        await cancel_and_wait(child)
        return child.cancelled()

    assert asyncio.run(scenario())


def test_a_finished_child_is_left_as_it_is() -> None:
    async def scenario() -> int:
        async def two() -> int:
            return 2

        child = asyncio.ensure_future(two())
        await asyncio.sleep(0)
        await cancel_and_wait(child)
        return child.result()

    assert asyncio.run(scenario()) == 2


def test_the_callers_own_cancellation_while_it_waits_is_not_lost() -> None:
    """A loop that stops a child and goes on (as the NAT lifetime prober's does) must still
    end when it is cancelled while the child is winding down."""

    async def scenario() -> tuple[bool, int]:
        rounds = 0

        async def stubborn_child() -> None:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                await asyncio.sleep(0.05)  # winds down for a while
                raise

        async def loop() -> None:
            nonlocal rounds
            while rounds < 100:
                rounds += 1
                child = asyncio.ensure_future(stubborn_child())
                await asyncio.sleep(0)
                await cancel_and_wait(child)

        outer = asyncio.ensure_future(loop())
        await asyncio.sleep(0.01)  # the first child is winding down
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(outer, 5)
        return outer.cancelled(), rounds

    cancelled, rounds = asyncio.run(scenario())
    assert cancelled and rounds == 1
