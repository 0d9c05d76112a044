"""Watch the realm: its workers, its queue, and the events of queries running in parallel.

RENTAHAL_URL=... RENTAHAL_API_KEY=... python docs/examples/sdk_watch.py
"""

import asyncio

from rentahal.client import AsyncClient, Event


async def main() -> None:
    async with AsyncClient.from_env() as client:
        # The greeting already told us who serves what.
        workers = client.latest("worker_update")
        for worker in workers["workers"] if workers else []:
            print(f"worker {worker['name']}: {worker['type']}, health {worker['health_score']}")

        depths: list[int] = []

        def on_queue(event: Event) -> None:
            depths.append(event["depth"])

        client.subscribe("queue_update", on_queue)

        async with client.events("query_status", "query_result") as events:
            questions = ["What is a star?", "What is a planet?", "What is a comet?"]
            # Three queries in flight at once; each answer finds its own question.
            answers = await asyncio.gather(*(client.chat(q) for q in questions))
            for question, answer in zip(questions, answers, strict=True):
                print(f"{question} -> {answer}")

            finished = 0
            async for event in events:
                state = event.get("state", "")
                print(f"event {event['type']} {event['query_id'][:8]} {state}".rstrip())
                finished += event["type"] == "query_result"
                if finished == len(questions):
                    break
        print(f"queue depths seen: {depths}")


if __name__ == "__main__":
    asyncio.run(main())
