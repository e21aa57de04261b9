"""aircrew.pubsubreader against a real redis-server: both readers deliver the same
messages, in order, whole, and a closed connection ends the read with an error."""
from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis
from redis._parsers import _AsyncRESP3Parser

from aircrew.pubsubreader import HiredisReader, reader_for


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def subscribed(redis_proc, **options):
    pool = aioredis.ConnectionPool(port=redis_proc.port, decode_responses=True, **options)
    client = aioredis.Redis.from_pool(pool)       # closes the pool with the client
    pubsub = client.pubsub()
    await pubsub.subscribe("updates", "reply")
    return client, pubsub


@pytest.mark.parametrize("parser", ["hiredis", "python"])
def test_every_message_arrives_whole_and_in_order(redis_proc, redis_client, parser):
    """Many small messages in one read, and one larger than a read (200 KB, as a big
    zone's update); the subscription's confirmations come first, as any other message."""
    big = "x" * 200_000

    async def scenario():
        options = {"parser_class": _AsyncRESP3Parser} if parser == "python" else {}
        client, pubsub = await subscribed(redis_proc, **options)
        reader = reader_for(pubsub)
        assert isinstance(reader, HiredisReader) == (parser == "hiredis")
        for i in range(300):
            redis_client.publish("updates", f"u{i}")
        redis_client.publish("reply", big)
        redis_client.publish("updates", "last")
        got = [await reader.next() for _ in range(2 + 300 + 2)]
        await pubsub.aclose()
        await client.aclose()
        return got

    got = run(scenario())
    assert [(kind, channel) for kind, channel, _ in got[:2]] == [("subscribe", "updates"),
                                                                ("subscribe", "reply")]
    messages = got[2:]
    assert all(kind == "message" for kind, _, _ in messages)
    assert [data for _, _, data in messages[:300]] == [f"u{i}" for i in range(300)]
    assert messages[300] == ("message", "reply", big)
    assert messages[301] == ("message", "updates", "last")


def test_a_reply_that_is_no_message_is_skipped(redis_proc, redis_client):
    async def scenario():
        client, pubsub = await subscribed(redis_proc)
        reader = reader_for(pubsub)
        assert isinstance(reader, HiredisReader)
        await reader.next(), await reader.next()          # the two confirmations
        await pubsub.ping()                                # answered with a pong
        redis_client.publish("updates", "after the pong")
        got = await reader.next()
        await pubsub.aclose()
        await client.aclose()
        return got

    assert run(scenario()) == ("message", "updates", "after the pong")


def test_a_connection_closed_by_the_server_ends_the_read(redis_proc, redis_client):
    async def scenario():
        client, pubsub = await subscribed(redis_proc)
        reader = reader_for(pubsub)
        await reader.next(), await reader.next()
        killed = redis_client.client_kill_filter(skipme=True, _type="pubsub")
        assert killed >= 1
        with pytest.raises((redis.exceptions.ConnectionError, ConnectionError)):
            await reader.next()
        await pubsub.aclose()
        await client.aclose()

    run(scenario())
