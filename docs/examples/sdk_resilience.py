"""When things go wrong: typed errors, retries with backoff, a circuit breaker, timeouts.

RENTAHAL_URL=... RENTAHAL_API_KEY=... python docs/examples/sdk_resilience.py
"""

import asyncio

from rentahal.client import AsyncClient, CircuitBreaker, Refused, RetryPolicy, retry


async def main() -> None:
    # One breaker can guard several clients; the client retries transient trouble itself.
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=30)
    async with AsyncClient.from_env(breaker=breaker, retry=RetryPolicy(retries=2)) as client:
        # A query nobody can serve is refused before it is queued (and costs nothing).
        try:
            await client.chat("Hello?", model_name="no-such-model")
        except Refused as exc:
            print(f"refused ({exc.code}): {exc.message}")

        # retry() takes a factory: each attempt makes a fresh call.
        answer = await retry(lambda: client.chat("Are you there?"), retries=3, initial_delay=0.5)
        print(f"answer: {answer}")
        print(f"circuit: {breaker.state}")

        # Give up waiting after a while: the query is then cancelled on the broker too.
        try:
            async with asyncio.timeout(30):
                story = await client.chat("Write a short story")
            print(f"story: {story}")
        except TimeoutError:
            print("no story in time; it was cancelled")

        # Or cancel a query yourself; a query that finished first stays finished.
        handle = await client.submit("Write a very long story")
        if await handle.cancel():
            print(f"cancelled: {handle.state}")
        else:
            print(f"finished before the cancel: {handle.state}")


if __name__ == "__main__":
    asyncio.run(main())
